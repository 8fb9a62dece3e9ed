"""Radiomics on DDTI (TI-RADS >= 4a vs 2-3): IBSI features of each nodule's mask, LASSO + logistic
regression in 5-fold CV grouped by patient (the fusion stage's own grouped nested CV).

    python bench/radiomics.py [--cases FILE] [--work DIR] [--icc-cases 40] [--workers 1] [--threads 1]
    python bench/radiomics.py --speed 40      # only the time per ROI: the stage's extraction against a bare
                                              # MIRP call on the same ROIs (same run, interleaved), and the 0.5 s goal

Prints the Rad AUC with its DeLong 95% CI beside the ROI-pixel baseline (PCA(20) + logistic
regression on the prepared 64 px ROI, bench/baselines.py) with the paired DeLong test, the
extraction time per ROI on one core (goal < 0.5 s), how many features the ICC filter dropped, and the
features (and IBSI families) LASSO kept. Results: BENCHMARKS.md.
Note the label: TI-RADS is the radiologist's risk score, not histology.
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--one-se", action="store_true", help="LASSO penalty by the 1-SE rule (sparser) instead of the CV best")
    ap.add_argument("--with-dl", action="store_true", help="also DL_image (resnet18, random init) and DLR in the same run")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--select", default="last")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--speed", type=int, default=0, help="time this many ROIs only (no CV)")
    return ap.parse_args(argv)


def reused(run: Path, cfg) -> dict | None:
    """The record of an earlier extraction in this work folder with the same settings (else None: extract)."""
    import json

    path = run / "radiomics" / "radiomics.json"
    rec = json.loads(path.read_text()) if path.is_file() else None
    same = rec is not None and rec["settings"] == cfg.model_dump(mode="json") and (run / "features" / "radiomics.parquet").is_file()
    if same:
        print("radiomics: reusing the extraction of an earlier run (same settings)", flush=True)
    return rec if same else None


def speed(a) -> None:
    """Seconds per ROI of the stage's extraction (IBSI features + 2-D shape) and of a bare MIRP call with the
    same settings on the same DDTI masks, interleaved so that machine load hits both alike."""
    import numpy as np
    import pandas as pd
    from mirp import extract_features
    from PIL import Image

    from ceusfusion.radiomics.extract import plane_features
    from ceusfusion.radiomics.ibsi import mirp_settings, quiet_mirp
    from ceusfusion.radiomics.roi import Plane
    from ceusfusion.radiomics.settings import RadiomicsConfig

    cfg, cases = RadiomicsConfig(), pd.read_csv(a.cases, dtype=str).head(a.speed)
    ours, bare, cpu = [], [], []
    for img_rel, mask_rel in zip(cases["image"], cases["mask"]):
        img = np.asarray(Image.open(a.cases.parent / img_rel).convert("L"))
        roi = np.asarray(Image.open(a.cases.parent / mask_rel)) > 127
        t, c = time.perf_counter(), time.process_time()
        plane_features(Plane("still", img, roi, True), cfg, 1.0)
        ours.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        t = time.perf_counter()
        with quiet_mirp():
            extract_features(image=img.astype(float)[None], mask=roi[None], **mirp_settings(cfg, 1.0))
        bare.append(time.perf_counter() - t)
    o, b = float(np.median(ours[1:])), float(np.median(bare[1:]))  # the first call loads MIRP and ITK
    c = float(np.median(cpu[1:]))  # CPU seconds of this one-thread process: what one free core would take
    print(f"{len(ours)} DDTI ROIs (300x300 px, mask 7-71 %), median per ROI: stage {o:.3f} s wall ({c:.3f} s CPU), "
          f"bare MIRP {b:.3f} s wall, ratio {o / b:.2f}; goal 0.5 s on one core: {'met' if c < 0.5 else 'NOT met'} "
          f"(CPU {c / 0.5:.2f} of it; load average {os.getloadavg()[0]:.1f})", flush=True)


def main(argv=None) -> None:
    a = parse(argv)
    C.limit_threads(a.threads)
    if a.speed:
        return speed(a)
    from baselines import write_baselines

    import pandas as pd

    from ceusfusion.fusion.extract import features
    from ceusfusion.fusion.pipeline import FusionConfig
    from ceusfusion.ingest.prepare import PrepareParams
    from ceusfusion.radiomics.compare import compare
    from ceusfusion.radiomics.settings import RadiomicsConfig
    from ceusfusion.radiomics.stage import radiomics

    t0 = time.perf_counter()
    df = C.manifest(a.cases, None, {"image": "image", "image_mask": "mask"}, group="patient")
    run = a.work / "run"
    prep = C.prepare_run(df, run, PrepareParams(size=64, margin=0.1, color="gray"))
    print(f"prepared {prep['n_ok']}/{prep['n_cases']} images in {prep['seconds']} s", flush=True)
    cfg = RadiomicsConfig(icc_cases=a.icc_cases, seed=a.seed)
    rec = reused(run, cfg) or radiomics(run, cfg, workers=a.workers, force=True)
    print(f"radiomics: {rec['n_cases']} cases, {rec['seconds_per_roi']:.3f} s per ROI (wall), "
          f"{rec['n_features_kept']}/{rec['n_features_extracted']} kept, {rec['n_dropped_icc']} below ICC "
          f"{rec['icc_threshold']} on {rec['icc_cases']} training cases; {rec['seconds']:.0f} s in all", flush=True)
    files, deep = {}, []
    if a.with_dl:  # DL_image as in bench/real_ddti.py: resnet18, random init, 64 px, 15 epochs, last epoch
        name = f"DL_image_resnet18_s64_e{a.epochs}_random_last"
        C.train_model(run, name, "image", "single", a, weights="none")
        files["DL_image"] = run / "predictions" / f"{name}.csv"
        deep.append(features(run / "models" / name, device="cpu")[0])
    comp = compare(run, deep, FusionConfig(classifiers=("lr",), folds=a.folds, seed=a.seed, one_se=a.one_se), [], "DL_image" if deep else None)
    for name, m in comp["models"].items():
        print(f"{name}: LASSO kept {m['n_selected']} of {m['n_features_in']}: "
              + ", ".join(f"{k} {v}" for k, v in m["families_kept"].items()), flush=True)
        sel = pd.read_csv(run / "radiomics" / "fusion" / name / "selected_features.csv")
        print(sel[sel["selected"]].head(15).to_string(index=False), flush=True)
        files[name] = run / "predictions" / f"{name}.csv"
    base = write_baselines(run, ["middle"], a.folds, a.seed, size=64, names={"middle": "roi"})
    files.update(base)
    title = (f"DDTI, radiomics of the mask (IBSI, MIRP {rec['library']['mirp']}, {rec['discretisation']}), "
             f"LASSO + logistic regression, {a.folds}-fold CV grouped by patient, seed {a.seed}")
    pairs = [(m, b) for m in files if m not in base for b in base] + [(x, y) for x, y in (("DLR", "DL_image"), ("DLR", "Rad"),
                                                                                       ("DL_image", "Rad")) if x in files and y in files]
    C.evaluate_table(files, a.work / ("eval_1se" if a.one_se else "eval"), pairs, title + (", LASSO 1-SE" if a.one_se else ""))
    C.save_json(a.work / "bench.json", {"args": vars(a), "radiomics": rec, "comparison": comp,
                                        "seconds": time.perf_counter() - t0})
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
