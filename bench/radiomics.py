"""Radiomics on DDTI (TI-RADS >= 4a vs 2-3): IBSI features of each nodule's mask, LASSO + logistic
regression in 5-fold CV grouped by patient (the fusion stage's own grouped nested CV).

    python bench/radiomics.py [--cases FILE] [--work DIR] [--icc-cases 40] [--workers 1] [--threads 1]

Prints the Rad AUC with its DeLong 95% CI beside the ROI-pixel baseline (PCA(20) + logistic
regression on the prepared 64 px ROI, bench/baselines.py) with the paired DeLong test, the
extraction time per ROI on one core (goal < 0.5 s), how many features the ICC filter dropped, and the
features (and IBSI families) LASSO kept. Results: BENCHMARKS.md.
Note the label: TI-RADS is the radiologist's risk score, not histology.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=C.DATA / "ddti" / "cases.csv")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_radiomics"))
    ap.add_argument("--icc-cases", type=int, default=40)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    return ap.parse_args(argv)


def kept_families(selected) -> str:
    from ceusfusion.radiomics.stage import column_family

    final = selected[selected["selected"]]
    fams: dict[str, int] = {}
    for f in final["feature"]:
        fams[column_family(f)] = fams.get(column_family(f), 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(fams.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> None:
    a = parse(argv)
    C.limit_threads(a.threads)
    from baselines import write_baselines

    from ceusfusion.fusion.pipeline import FusionConfig, fuse
    from ceusfusion.ingest.prepare import PrepareParams
    from ceusfusion.radiomics.settings import RadiomicsConfig
    from ceusfusion.radiomics.stage import radiomics

    t0 = time.perf_counter()
    df = C.manifest(a.cases, None, {"image": "image", "image_mask": "mask"}, group="patient")
    run = a.work / "run"
    prep = C.prepare_run(df, run, PrepareParams(size=64, margin=0.1, color="gray"))
    print(f"prepared {prep['n_ok']}/{prep['n_cases']} images in {prep['seconds']} s", flush=True)
    rec = radiomics(run, RadiomicsConfig(icc_cases=a.icc_cases, seed=a.seed), workers=a.workers, force=True)
    print(f"radiomics: {rec['n_cases']} cases, {rec['seconds_per_roi']:.3f} s per ROI (one core), "
          f"{rec['n_features_kept']}/{rec['n_features_extracted']} kept, {rec['n_dropped_icc']} below ICC "
          f"{rec['icc_threshold']} on {rec['icc_cases']} training cases; {rec['seconds']:.0f} s in all", flush=True)
    res = fuse([run / "features" / "radiomics.parquet"], run / "fusion" / "Rad", cohort=run / "cohort.csv",
               cfg=FusionConfig(classifiers=("lr",), folds=a.folds, seed=a.seed, name="Rad", bootstrap=0), figures=False)
    print(f"LASSO kept {res.summary['lasso']['n_selected']} of {res.summary['lasso']['n_features_in']}: "
          f"{kept_families(res.selected)}", flush=True)
    print(res.selected[res.selected["selected"]].head(15).to_string(index=False), flush=True)
    base = write_baselines(run, ["middle"], a.folds, a.seed, size=64, names={"middle": "roi"})
    files = {"Rad": run / "fusion" / "Rad" / "predictions" / "Rad.csv", **base}
    title = (f"DDTI, radiomics of the mask (IBSI, MIRP {rec['library']['mirp']}, {rec['discretisation']}), "
             f"LASSO + logistic regression, {a.folds}-fold CV grouped by patient, seed {a.seed}")
    C.evaluate_table(files, a.work / "eval", [("Rad", b) for b in base], title)
    C.save_json(a.work / "bench.json", {"args": vars(a), "radiomics": rec, "fusion": res.summary,
                                        "seconds": time.perf_counter() - t0})
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
