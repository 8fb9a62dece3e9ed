"""Real-data benchmark on POCUS lung-ultrasound videos (abnormal vs regular), grouped K-fold CV.

    python bench/real_pocus.py [--cases FILE] [--test-cases FILE] [--size 64] [--epochs 15] [--folds 5]
        [--arch resnet18] [--modes image:single,video:stack,video:temporal] [--pretrained W.safetensors]
        [--policy study] [--period 1.0] [--threads 1] [--work DIR] [--baselines-only]

Each video is a case (label 1 = abnormal, 0 = regular; the ``group`` column keeps a patient's
videos in one fold). ``prepare`` takes 5 grey keyframes per video over the whole frame (no
mask); the still of DL_image is the middle (3rd) of those keyframes, so image and video models
see the same moment. DL_video uses all 5, channel-stacked (``stack``) and/or per-frame encoder +
attention over time (``temporal``). DL_combined fuses the out-of-fold deep features of DL_image
and of the better video model (by mean CV AUC) with LASSO + classifiers in grouped CV.
The pixel baselines (bench/baselines.py) use the same prepared frames and the same folds.
AUCs with DeLong 95% CIs and paired DeLong tests come from ``ceusfusion.evaluate.evaluate`` on the
out-of-fold rows (set=train); with ``--test-cases`` the external set is scored once (set=test).
Everything lands in WORK/run_<...>/ and is reused on a rerun (finished models are not retrained).
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
    ap.add_argument("--cases", type=Path, default=C.DATA / "pocus" / "cases.csv")
    ap.add_argument("--test-cases", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/real_pocus"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--policy", default="study", help="keyframe policy: study (centre = brightest sampled frame "
                    "when there is no mask, frames --period s apart) or uniform (spread over the whole video)")
    ap.add_argument("--period", type=float, default=1.0)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--archs", dest="arch", help="alias of --arch (one architecture)")
    ap.add_argument("--modes", default="image:single,video:stack,video:temporal")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--select", default="last", help="checkpoint kept per fold: last (unbiased out-of-fold "
                    "AUC, the default here) or best (epoch with the best AUC on the held-out fold: optimistic)")
    ap.add_argument("--pretrained", default="none", help="weights for every model: none, imagenet or a "
                    "safetensors file from `ceusfusion pretrain`")
    ap.add_argument("--fusion-classifiers", default="lr,svm,rf,lgbm")
    ap.add_argument("--fusion", default="features,scores", help="fusion level(s): features (out-of-fold deep "
                    "features, the tool's DL_combined) and/or scores (out-of-fold logits of the two models)")
    ap.add_argument("--baselines", default="middle,frames,meanstd")
    ap.add_argument("--baselines-only", action="store_true")
    ap.add_argument("--finetune", default="full", help="full, last (deepest stage only) or frozen (pretrained "
                    "features, only the head learns)")
    ap.add_argument("--backbone-lr", type=float, default=1.0, help="backbone learning rate as a fraction of --lr")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    a = parse(argv)
    C.limit_threads(a.threads)
    from ceusfusion.ingest.prepare import PrepareParams

    t0 = time.perf_counter()
    df = C.manifest(a.cases, a.test_cases, {"video": "video"}, group="group")
    run = a.work / f"run_{a.policy}_p{a.period:g}_f{a.frames}_s{a.size}"
    prep = C.prepare_run(df, run, PrepareParams(size=a.size, frames=a.frames, period=a.period, policy=a.policy,
                                                color="gray"), still_from_video=True)
    print(f"prepared {prep['n_ok']}/{prep['n_cases']} videos in {prep['seconds']} s -> {run}", flush=True)

    init = "random" if a.pretrained == "none" else ("imagenet" if a.pretrained == "imagenet" else Path(a.pretrained).stem)
    tag = f"{a.arch}_s{a.size}_e{a.epochs}_{init}" + ("_last" if a.select == "last" else "") + C.finetune_tag(a)
    files, summaries = {}, {}
    for mode_pair in ([] if a.baselines_only else a.modes.split(",")):
        modality, mode = mode_pair.split(":")
        label = "DL_image" if modality == "image" else f"DL_video_{mode}"
        name = f"{label}_{tag}"
        summaries[label] = C.train_model(run, name, modality, mode, a, weights=a.pretrained)
        files[label] = run / "predictions" / f"{name}.csv"

    from baselines import write_baselines

    folds_csv = next((run / "models" / s["name"] / "folds.csv" for s in summaries.values()), None)
    base = write_baselines(run, [k for k in a.baselines.split(",") if k], a.folds, a.seed, size=a.size,
                           folds_csv=folds_csv)

    pairs = []
    videos = [k for k in summaries if k.startswith("DL_video")]
    if "DL_image" in summaries and videos:
        best_video = max(videos, key=lambda k: summaries[k]["cv_auc_mean"])
        cohort = run / "cohort.csv"
        pairs += [(v, "DL_image") for v in videos]
        for level in a.fusion.split(","):
            label = "DL_combined" if level == "features" else f"DL_combined_{level}"
            files[label] = C.fuse_models(run, [summaries["DL_image"]["name"], summaries[best_video]["name"]],
                                         cohort, a.fusion_classifiers, a.folds, a.seed, level=level,
                                         name=f"{label}_{tag}_{best_video.removeprefix('DL_video_')}")
            pairs += [(label, "DL_image"), (label, best_video)]
    files.update(base)
    dl = [k for k in files if k.startswith("DL_")]
    pairs += [(m, b) for m in dl for b in base]
    title = (f"POCUS, {a.arch} at {a.size} px (crop {a.size - a.size // 8}), {a.frames} keyframes "
             f"({a.policy}, {a.period:g} s), {a.epochs} epochs ({a.select} epoch kept), init {init}, finetune {a.finetune} (backbone lr x{a.backbone_lr:g}), {a.folds}-fold grouped CV, seed {a.seed}")
    C.evaluate_table(files, a.work / f"eval_{run.name}_{tag}", pairs, title)
    C.save_json(a.work / f"eval_{run.name}_{tag}" / "bench.json",
                {"args": vars(a), "summaries": summaries, "files": files, "seconds": time.perf_counter() - t0})
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
