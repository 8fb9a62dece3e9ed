"""Do Grad-CAM maps point at the signal? Synthetic cohorts where the generator recorded where the
label's evidence lives (nodule + margin band), per seed: train, explain the test cases, and print
the share of CAM energy inside that region against two baselines from the same run: a uniform
map (the region's area share) and the same fold models with randomised weights.

    python bench/cam_localisation.py --modality video --seeds 0,1,2
    python bench/cam_localisation.py --modality image --seeds 0,1,2

Defaults are those of tests/test_explain_localisation.py (label effects 2.5x, size untied from
the label, ROI margin 0.75, 72 px cache / 64 px crops, resnet18, 8 epochs, 3 folds, random init).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import limit_threads  # noqa: E402


def one(seed: int, a, work: Path) -> dict:
    from ceusfusion.explain.cases import explain
    from ceusfusion.ingest.prepare import PrepareParams, prepare
    from ceusfusion.models.train import TrainConfig, train
    from ceusfusion.synthetic.synth import SynthConfig, generate

    t0 = time.perf_counter()
    data = work / f"data_n{a.n}_sig{a.signal}_tied{int(a.size_tied)}_seed{seed}"
    manifest = data / "cohort.csv"
    if not manifest.is_file():
        generate(data, SynthConfig(n=a.n, seed=seed, size=192, duration=12, signal=a.signal, size_tied=a.size_tied),
                 workers=2)
    run = work / f"run_{data.name}_m{a.margin}_{a.modality}_e{a.epochs}"
    prepare(manifest, run, PrepareParams(size=a.size, margin=a.margin), workers=2, progress=False)
    s = train(run, TrainConfig(modality=a.modality, arch=a.arch, weights="none", epochs=a.epochs, folds=3,
                               batch_size=32, lr=1e-3, crop=a.size - 8, seed=0), progress=False, overwrite=True)
    name = s["name"]
    out = explain(run, name, run / "explain" / name, per_class=a.per_class or None, truth=data / "truth.csv",
                  sanity=True, target=a.target)
    d = json.loads(out.read_text())
    c = d["cases"]
    e = np.array([x["cam_energy_in_region"] for x in c])
    u = np.array([x["region_area_share"] for x in c])
    r = np.array([x["randomised_energy_in_region"] for x in c])
    pos = np.array([x["cam_class"] == 1 for x in c])
    return {"seed": seed, "cv_auc": s["cv_auc_mean"], "layer": d["layer"], "cases": len(c), "energy": e.mean(),
            "uniform": u.mean(), "randomised": r.mean(), "vs_uniform": e.mean() / u.mean(),
            "vs_randomised": e.mean() / r.mean(), "cases_above_uniform": float((e > u).mean()),
            # what tests/explain/test_explain_localisation.py asserts: the positive-class maps (the label's evidence)
            "pos_median_vs_uniform": float(np.median((e / u)[pos])), "pos_vs_randomised": e[pos].mean() / r[pos].mean(),
            "rank_corr_randomised": d["randomisation_check"]["mean_rank_correlation"],
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modality", default="video", choices=["image", "video"])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--signal", type=float, default=2.5)
    ap.add_argument("--size-tied", action="store_true", help="keep the reference-like size/label tie")
    ap.add_argument("--margin", type=float, default=0.75)
    ap.add_argument("--size", type=int, default=72)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=10, help="0: every test case")
    ap.add_argument("--target", default="predicted", choices=["predicted", "positive"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cam_localisation"))
    a = ap.parse_args()
    limit_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    rows = [one(int(s), a, a.work) for s in a.seeds.split(",")]
    print(f"{'seed':>4} {'CV AUC':>7} {'layer':>15} {'n':>3} {'energy':>7} {'uniform':>7} {'random':>7} "
          f"{'ratio/unif':>10} {'ratio/rand':>10} {'>unif':>6} {'pos med':>7} {'pos/rand':>8} {'rank r':>7} {'s':>5}")
    for r in rows:
        print(f"{r['seed']:>4} {r['cv_auc']:7.3f} {r['layer']:>15} {r['cases']:>3} {r['energy']:7.3f} {r['uniform']:7.3f} "
              f"{r['randomised']:7.3f} {r['vs_uniform']:10.2f} {r['vs_randomised']:10.2f} {r['cases_above_uniform']:6.2f} "
              f"{r['pos_median_vs_uniform']:7.2f} {r['pos_vs_randomised']:8.2f} {r['rank_corr_randomised']:7.3f} {r['seconds']:5.0f}")
    print(f"median ratio: energy / uniform {np.median([r['vs_uniform'] for r in rows]):.2f}, "
          f"energy / randomised {np.median([r['vs_randomised'] for r in rows]):.2f} (> 1: the maps point at the signal)")


if __name__ == "__main__":
    main()
