"""Real-data benchmark on DDTI thyroid nodules (TI-RADS >= 4a vs 2-3), patient-grouped K-fold CV.

    python bench/real_ddti.py [--cases FILE] [--test-cases FILE] [--size 64] [--epochs 15] [--folds 5]
        [--arch resnet18] [--pretrained none|W.safetensors] [--margin 0.1] [--threads 1] [--work DIR]
        [--baselines-only]

Each image (one nodule) is a case; ``patient`` is the group, so a patient's nodules stay in one
fold. ``prepare`` crops the nodule's mask bounding box plus ``--margin`` (share of its larger
side, each side), made square, resized to ``--size``. DL_image is trained on that ROI; the naive
baseline is the same ROI's pixels → PCA(20) → logistic regression on the same folds. AUCs with
DeLong 95% CIs and the paired DeLong test come from ``ceusfusion.evaluate.evaluate`` on the out-of-fold
rows; with ``--test-cases`` the external set is scored once (set=test).
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
    ap.add_argument("--test-cases", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/real_ddti"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--archs", dest="arch", help="alias of --arch (one architecture)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--select", default="last", help="checkpoint kept per fold: last (unbiased out-of-fold "
                    "AUC, the default here) or best (epoch with the best AUC on the held-out fold: optimistic)")
    ap.add_argument("--pretrained", default="none", help="comma-separated inits, each none, imagenet or a "
                    "safetensors file from `ceusfusion pretrain`; one DL_image model per init")
    ap.add_argument("--baselines-only", action="store_true")
    ap.add_argument("--finetune", default="full", help="full, last (deepest stage only) or frozen (pretrained "
                    "features, only the head learns)")
    ap.add_argument("--backbone-lr", type=float, default=1.0, help="backbone learning rate as a fraction of --lr")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    """Returns the predictions file of each model (bench/segment_auc.py compares them across --cases)."""
    a = parse(argv)
    C.limit_threads(a.threads)
    from ceusfusion.ingest.prepare import PrepareParams

    t0 = time.perf_counter()
    df = C.manifest(a.cases, a.test_cases, {"image": "image", "image_mask": "mask"}, group="patient")
    run = a.work / f"run_m{a.margin:g}_s{a.size}"
    prep = C.prepare_run(df, run, PrepareParams(size=a.size, margin=a.margin, color="gray"))
    print(f"prepared {prep['n_ok']}/{prep['n_cases']} images in {prep['seconds']} s -> {run}", flush=True)

    files, summaries = {}, {}
    for w in ([] if a.baselines_only else a.pretrained.split(",")):
        init = "random" if w == "none" else ("imagenet" if w == "imagenet" else Path(w).stem)
        label = f"DL_image_{init}"
        name = f"DL_image_{a.arch}_s{a.size}_e{a.epochs}_{init}" + ("_last" if a.select == "last" else "") + C.finetune_tag(a)
        summaries[label] = C.train_model(run, name, "image", "single", a, weights=w)
        files[label] = run / "predictions" / f"{name}.csv"

    from baselines import write_baselines

    folds_csv = next((run / "models" / s["name"] / "folds.csv" for s in summaries.values()), None)
    base = write_baselines(run, ["middle"], a.folds, a.seed, size=a.size, folds_csv=folds_csv,
                           names={"middle": "roi"})
    files.update(base)
    dl = [k for k in files if k.startswith("DL_")]
    pairs = [(m, b) for m in dl for b in base] + [(x, y) for i, x in enumerate(dl) for y in dl[i + 1:]]
    tag = f"{a.arch}_s{a.size}_e{a.epochs}_{a.select}" + C.finetune_tag(a)
    title = (f"DDTI, {a.arch} at {a.size} px (crop {a.size - a.size // 8}), ROI = mask box + {a.margin:g} margin, "
             f"{a.epochs} epochs ({a.select} epoch kept), {a.folds}-fold CV grouped by patient, seed {a.seed}")
    out = a.work / f"eval_{run.name}_{tag}"
    C.evaluate_table(files, out, pairs, title)
    C.save_json(out / "bench.json", {"args": vars(a), "summaries": summaries, "files": files,
                                     "seconds": time.perf_counter() - t0})
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    return files


if __name__ == "__main__":
    main()
