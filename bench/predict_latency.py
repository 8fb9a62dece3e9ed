"""Benchmark: one patient from the command line (``ceusfusion predict``), against ``import torch`` as the floor.

Every row is a fresh process, timed from the shell's point of view, repeated ``--repeat`` times (medians
printed): wall seconds and CPU seconds (user + system of the child). In this run:

- ``import torch``: the floor every prediction pays (the ratio column is against it);
- ``libraries``: the third-party packages the predict process below imported, imported alone, in the same
  order: what the predict costs before any ceusfusion code or work (ceusfusion's own imports decide this set);
- ``predict --help``: the command line without the stage;
- ``predict``: ``ceusfusion predict --bundle B --image .. --image-mask .. --video .. --video-mask .. --json``.

Then one ``python -X importtime`` run of the same predict, summed by top-level package (self time, so no
double counting): where the import time goes. Target (issue 24, 2 CPU cores): one patient in under 5 s.

    .venv/bin/python bench/predict_latency.py [--bundle BUNDLE] [--repeat 3] [--threads 1] [--work DIR]

Without ``--bundle`` the tests' tiny bundle (resnet18, fused on deep features) is built first (about a minute);
with ``--work DIR`` it is kept there and reused. The patient is a synthetic one (still + CEUS video, masks).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
from predict_cohort import FIELDS, ROOT, cohort, tiny_bundle

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
# a module the predict tried and did not find (an optional dependency) is tried here too
IMPORT_ALL = """import importlib
for m in {!r}:
    try:
        importlib.import_module(m)
    except ImportError:
        pass"""


def timed(argv: list[str], threads: int) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the child, result) of one fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({done.returncode}): {done.stderr[-800:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done


def medians(argv: list[str], repeat: int, threads: int) -> tuple[float, float, list[float]]:
    """Median wall, median CPU and every wall time of ``repeat`` runs."""
    runs = [timed(argv, threads)[:2] for _ in range(repeat)]
    walls = [w for w, _ in runs]
    return statistics.median(walls), statistics.median(c for _, c in runs), walls


def third_party(importtime: str) -> tuple[list[str], dict[str, float]]:
    """From ``-X importtime`` output: the outermost non-ceusfusion modules that ceusfusion (or the command line)
    imported, in import order, and the self time (s) summed per top-level package."""
    entries = [(len(m[3]), m[4], int(m[1])) for m in map(IMPORT_LINE.match, importtime.splitlines()) if m]
    per_package: dict[str, float] = defaultdict(float)
    outer = []
    for i, (indent, name, own) in enumerate(entries):
        per_package[name.split(".")[0]] += own / 1e6
        parent = next((n for ind, n, _ in entries[i + 1:] if ind < indent), None)
        if not name.startswith("ceusfusion") and (parent is None or parent.startswith("ceusfusion")):
            outer.append(name)
    stdlib = set(sys.stdlib_module_names)
    libs = [n for n in outer if n.split(".")[0] not in stdlib and not n.startswith(("typer", "rich", "click"))]
    return list(dict.fromkeys(libs)), dict(per_package)


def patient(work: Path) -> list[str]:
    """The predict options of one synthetic patient (a still and a 30 s CEUS video, with masks)."""
    manifest = cohort(work, 4, 192, 4.0, 30.0)  # the synthetic cohort needs 4; the first is the patient
    row = pd.read_csv(manifest, dtype=str).iloc[0]
    return [a for f in FIELDS for a in (f"--{f.replace('_', '-')}", str(manifest.parent / row[f]))]


def report(rows: list[tuple[str, float, float, list[float]]], floor_cpu: float) -> None:
    print(f"{'what':<16} {'wall s (median)':>16} {'CPU s (median)':>15} {'CPU / import torch':>19}   walls")
    for what, wall, cpu, walls in rows:
        print(f"{what:<16} {wall:>16.2f} {cpu:>15.2f} {cpu / floor_cpu:>19.2f}   {', '.join(f'{w:.2f}' for w in walls)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None, help="keep the tiny bundle and the patient here")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="predict-latency-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = a.bundle or tiny_bundle(work)
    py, cli = sys.executable, [sys.executable, "-m", "ceusfusion.cli"]
    predict = [*cli, "predict", "--bundle", str(bundle), *patient(work), "--json", "--threads", str(a.threads)]
    _, _, traced = timed([py, "-X", "importtime", *predict[1:]], a.threads)
    libs, per_package = third_party(traced.stderr)
    rows = [("import torch", *medians([py, "-c", "import torch"], a.repeat, a.threads)),
            ("libraries", *medians([py, "-c", IMPORT_ALL.format(libs)], a.repeat, a.threads)),
            ("predict --help", *medians([*cli, "predict", "--help"], a.repeat, a.threads)),
            ("predict", *medians(predict, a.repeat, a.threads))]
    probs = {m: v["prob"] for m, v in json.loads(timed(predict, a.threads)[2].stdout)["models"].items() if v.get("available")}
    print(f"bundle {bundle}; one patient (still + 30 s CEUS video at 4 fps, masks); {a.threads} torch thread(s); "
          f"{a.repeat} runs each")
    report(rows, rows[0][2])
    print(f"libraries the predict imported ({len(libs)}): {', '.join(libs)}")
    top = sorted(per_package.items(), key=lambda kv: -kv[1])[:12]
    print("import self time by package (one -X importtime run, s): " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    print(f"probabilities: {json.dumps(probs)}")
    wall = rows[-1][1]
    print(f"target one patient < 5 s wall: {'met' if wall < 5 else 'NOT met'} ({wall:.2f} s; "
          f"{wall - rows[1][1]:.2f} s over its libraries' import)")


if __name__ == "__main__":
    main()
