"""Evidence for `ceusfusion pretrain`: POCUS lung videos, grouped K-fold CV AUC of image (single
frame) and video (stacked keyframes) models fine-tuned from contrastive-pretrained weights vs
the same models from random initialisation, in one table.

    python bench/pretrain_pocus.py [--size 64] [--pre-epochs 10] [--frames-per-video 32] \
        [--ft-epochs 15] [--folds 5] [--method simclr] [--threads 2] [--work DIR] [--device auto]

Pretraining reads only the video column of a temporary manifest (labels unused); every POCUS
video is in the training split, as the CV happens inside it. Note the protocol: the
self-supervised stage sees the frames of every video, including those a CV fold later validates
on (transductive, labels never seen), as in USCL; there is no separate holdout here.
The image model's still is the middle keyframe of the prepared video.
Also prints the linear / k-NN probe AUCs of the frozen encoder (pretrained vs random init).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pocus")
    ap.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one).")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--crop", type=int, default=None, help="Fine-tuning crop (default: size - size//8).")
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--pre-epochs", type=int, default=10)
    ap.add_argument("--pre-batch", type=int, default=64)
    ap.add_argument("--frames-per-video", type=int, default=32)
    ap.add_argument("--max-gap-s", type=float, default=1.0)
    ap.add_argument("--ft-epochs", type=int, default=15)
    ap.add_argument("--ft-batch", type=int, default=16)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--modes", default="image:single,video:stack", help="modality:input pairs to fine-tune.")
    ap.add_argument("--keyframes", type=int, default=5)
    ap.add_argument("--period", type=float, default=1.0, help="prepare --period (s between keyframes).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not (a.data / "cases.csv").is_file():
        raise SystemExit(f"no POCUS data at {a.data}")
    work = a.work or Path(tempfile.mkdtemp(prefix="pretrain_pocus_"))
    work.mkdir(parents=True, exist_ok=True)
    from ceusfusion.core.runlayout import RunLayout
    from ceusfusion.ingest import cache
    from ceusfusion.ingest.prepare import PrepareParams, prepare
    from ceusfusion.models.pretrain import PretrainConfig, collect_videos, pretrain
    from ceusfusion.models.train import TrainConfig, train

    src = pd.read_csv(a.data / "cases.csv", dtype=str)
    cohort = work / "cohort.csv"
    pd.DataFrame({"case_id": src["case_id"], "video": [str((a.data / v).resolve()) for v in src["video"]],
                  "label": src["label"], "group": src["group"], "split": "train"}).to_csv(cohort, index=False)

    # 1. self-supervised pretraining (labels unused) + probes
    weights = work / f"{a.arch}_{a.method}_{a.size}.safetensors"
    t0 = time.perf_counter()
    cfg = PretrainConfig(arch=a.arch, size=a.size, epochs=a.pre_epochs, batch_size=a.pre_batch, method=a.method,
                         frames_per_video=a.frames_per_video, max_gap_s=a.max_gap_s, seed=a.seed, device=a.device)
    vids, sources = collect_videos(cohort)
    side = pretrain(vids, weights, cfg, resume=True, sources=sources, probe_cohort=cohort,
                    on_epoch=lambda r: print(f"  pretrain epoch {r['epoch']}: loss {r['loss']:.4f} ({r['seconds']:.0f} s)",
                                             flush=True))
    t_pre = side["seconds_this_call"] if time.perf_counter() - t0 < 1 else time.perf_counter() - t0  # reused run
    print(f"pretrained on {side['n_videos']} videos / {side['n_frames']} frames in {t_pre:.0f} s "
          f"(this call), {side['device']}", flush=True)

    # 2. prepared cache (keyframes at the same size), plus the middle keyframe as the still
    run = work / "run"
    if not (run / "prepared" / "index.csv").is_file():
        res = prepare(cohort, run, PrepareParams(size=a.size, frames=a.keyframes, period=a.period, color="gray"),
                      workers=1, progress=False)
        print(f"prepared {res.n_ok}/{res.n_cases} cases ({len(res.failures)} failed)", flush=True)
        idx = cache.read_index(run)
        for cid in idx["case_id"]:
            z = cache.load_case(run, cid)
            z["image"] = z["video"][len(z["video"]) // 2]
            cache.save_case(run, cid, record=cache.case_record(run, cid), **z)
        idx["has_image"] = True
        from ceusfusion.core.fsutil import write_csv

        write_csv(RunLayout(run).prepared_index, idx)

    # 3. fine-tuning: random init vs pretrained, grouped K-fold CV on the (all-train) cohort
    crop = a.crop or a.size - a.size // 8
    rows = []
    for pair in a.modes.split(","):
        modality, mode = pair.split(":")
        for init, w in (("random", "none"), ("pretrain", str(weights))):
            name = f"{modality}_{mode}_{init}_e{a.ft_epochs}"
            t1 = time.perf_counter()
            tc = TrainConfig(modality=modality, arch=a.arch, input_mode=mode, weights=w, epochs=a.ft_epochs,
                             folds=a.folds, batch_size=a.ft_batch, size=a.size, crop=crop, seed=a.seed,
                             device=a.device, name=name, patience=a.ft_epochs)
            s = train(run, tc, resume=True, progress=False)
            rows.append({"model": f"{modality} ({mode})", "init": init, "cv_auc_mean": s["cv_auc_mean"],
                         "cv_auc_std": s["cv_auc_std"], "oof_auc": s["oof_auc"],
                         "seconds": round(time.perf_counter() - t1)})
            print(f"  {name}: CV AUC {s['cv_auc_mean']:.3f} ± {s['cv_auc_std']:.3f}", flush=True)

    pr = side.get("probe", {})
    print()
    print(f"POCUS ({side['n_videos']} videos), {a.arch} at {a.size} px, {a.folds}-fold grouped CV; pretraining: "
          f"{a.method}, {a.pre_epochs} epochs, {side['n_frames']} frames, {t_pre:.0f} s; fine-tuning {a.ft_epochs} epochs")
    print(f"{'model':<16} {'init':<9} {'CV AUC':>14} {'OOF AUC':>8} {'s':>6}")
    for r in rows:
        print(f"{r['model']:<16} {r['init']:<9} {r['cv_auc_mean']:>7.3f} ± {r['cv_auc_std']:.3f} {r['oof_auc']:>8.3f} {r['seconds']:>6}")
    for k in ("pretrained", "random_init"):
        if k in pr:
            print(f"frozen-encoder probe ({k}): linear AUC {pr[k]['linear']['oof_auc']:.3f}, "
                  f"k-NN AUC {pr[k]['knn']['oof_auc']:.3f} ({pr['n_videos']} videos, {pr[k]['folds']}-fold grouped)")
    (work / "bench.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": rows,
                                                 "probe": pr, "pretrain_seconds": t_pre}, indent=2))
    print(f"details: {work / 'bench.json'}")


if __name__ == "__main__":
    main()
