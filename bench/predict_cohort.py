"""Benchmark: a cohort scored by one ``predict --cohort`` process against one ``predict`` process per patient.

Both routes are the command line a user runs, timed from the shell's point of view (imports included), on the
same bundle and the same synthetic patients (a B-mode still and a CEUS video each, with masks; the synth
module's generative model, 192 px video at 4 fps, 20-60 s by default), in this run:

- batch: ``ceusfusion predict --bundle B --cohort CSV --out DIR`` over N patients;
- one by one: ``ceusfusion predict --bundle B --image ... --video ... --json`` for the first K patients, the
  mean extrapolated to N (the ratio is that extrapolation over the batch's wall time).

It also checks that the batch's probabilities equal the one-by-one ones (max |difference|, all models) and
that ``evaluate`` reads the batch's files. Targets (issue 24, 2 CPU cores): N = 200 in under 2 minutes; one
patient from the command line in under 5 s.

    .venv/bin/python bench/predict_cohort.py [--bundle BUNDLE] [--n 200] [--one-by-one 3] [--threads 1] [--work DIR]

Without ``--bundle`` a tiny synthetic study is run and exported first (about a minute; resnet18 at 32 px). With
``--work DIR`` the bundle and the cohort are kept there and reused by the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
FIELDS = ("image", "image_mask", "video", "video_mask")


def tiny_bundle(work: Path) -> Path:
    """The tests' tiny bundle (48 synthetic patients, resnet18 at 32 px, 1 epoch), reused when already there."""
    from rich.console import Console

    from ceusfusion.demo import run_demo
    from ceusfusion.deploy.export import export

    if (work / "bundle" / "bundle.json").is_file():
        return work / "bundle"
    run_demo(work / "run", Console(record=True, width=160), n=48, quick=True, progress=False)
    return export(work / "run", work / "bundle")


def cohort(work: Path, n: int, size: int, fps: float, duration: float | None) -> Path:
    """N synthetic patients with still, video and masks (reused when the same N is already there)."""
    from ceusfusion.synthetic.synth import SynthConfig, generate

    path = work / f"cohort{n}" / "cohort.csv"
    if path.is_file():
        return path
    return generate(path.parent, SynthConfig(n=n, seed=7, size=size, fps=fps, duration=duration), workers=2)


def cli(args: list[str], threads: int) -> tuple[float, subprocess.CompletedProcess]:
    """(wall seconds, result) of ``ceusfusion ARGS`` in a fresh process, as a user's shell runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(threads))
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ceusfusion.cli", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"ceusfusion {' '.join(args[:1])} failed ({done.returncode}): {done.stderr[-800:]}")
    return wall, done


def one_by_one(bundle: Path, manifest: Path, k: int, threads: int) -> tuple[list[float], dict[str, dict[str, float]]]:
    """Wall times of K one-patient ``predict`` processes and their probabilities {case: {model: prob}}."""
    import pandas as pd

    rows = pd.read_csv(manifest, dtype=str).iloc[:k]
    times, probs = [], {}
    for _, r in rows.iterrows():
        files = [a for f in FIELDS for a in (f"--{f.replace('_', '-')}", str(manifest.parent / r[f]))]
        wall, done = cli(["predict", "--bundle", str(bundle), *files, "--json", "--threads", str(threads)], threads)
        times.append(wall)
        res = json.loads(done.stdout)
        probs[r["case_id"]] = {m: v["prob"] for m, v in res["models"].items() if v.get("available")}
    return times, probs


def compare(out: Path, probs: dict[str, dict[str, float]]) -> float:
    """Max |batch - one-by-one| over the K cases and every model."""
    import pandas as pd

    worst = 0.0
    for f in sorted((out / "predictions").glob("*.csv")):
        df = pd.read_csv(f, dtype={"case_id": str}).query("set == 'external'").set_index("case_id")
        for cid, models in probs.items():
            worst = max(worst, abs(float(df.loc[cid, "prob"]) - models[f.stem]))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--n", type=int, default=200, help="patients in the cohort")
    ap.add_argument("--one-by-one", type=int, default=3, help="one-patient predict processes timed (extrapolated to N)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both routes")
    ap.add_argument("--size", type=int, default=192, help="video frame side (px)")
    ap.add_argument("--fps", type=float, default=4.0)
    ap.add_argument("--duration", type=float, default=None, help="video seconds (default 20-60 per patient)")
    ap.add_argument("--work", type=Path, default=None, help="keep the bundle and cohort here for the next run")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="predict-cohort-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bundle = a.bundle or tiny_bundle(work)
        manifest = cohort(work, a.n, a.size, a.fps, a.duration)
        out = work / "scored"
        batch, _ = cli(["predict", "--bundle", str(bundle), "--cohort", str(manifest), "--out", str(out),
                        "--threads", str(a.threads), "--force"], a.threads)
        summary = json.loads((out / "summary.json").read_text())
        singles, probs = one_by_one(bundle, manifest, a.one_by_one, a.threads)
        mean = sum(singles) / len(singles)
        ev, _ = cli(["evaluate", *map(str, sorted((out / "predictions").glob("*.csv"))), "--out", str(work / "ev"),
                     "--no-figures"], a.threads)
        print(f"bundle {bundle}; {a.n} patients (still + {a.size} px video at {a.fps:g} fps, masks), {a.threads} torch thread(s)")
        print(f"batch   : predict --cohort {batch:.1f} s wall ({summary['n_scored']} scored, {summary['n_failed']} failed; "
              f"{summary['seconds']:.1f} s inside, {batch / a.n:.2f} s per patient)")
        print(f"one by one: {', '.join(f'{t:.1f}' for t in singles)} s per process (mean {mean:.1f} s) "
              f"-> {mean * a.n:.0f} s extrapolated for {a.n}")
        print(f"ratio one-by-one / batch: {mean * a.n / batch:.1f}")
        print(f"max |batch - one-by-one| over {len(probs)} cases, every model: {compare(out, probs):.3g}")
        print(f"evaluate reads the batch's files: {ev:.1f} s")
        print(f"targets: {a.n} patients < 120 s: {'met' if batch < 120 else 'NOT met'}; "
              f"one patient < 5 s: {'met' if mean < 5 else 'NOT met'}")
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
