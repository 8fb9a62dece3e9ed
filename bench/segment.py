"""Benchmark: nodule segmentation on DDTI (issue 26 item 5), against two naive baselines in the same run.

5-fold cross-validation grouped by patient (``segment.train.assign_folds``, the stage's own folds) over
``../shared/data/ddti``; each fold model (``segment.train.fit_fold``, the stage's defaults unless told) is
scored on its held-out images:

- box-prompted: the box is the mask's box with every side moved at random by up to 10 % of its size
  (``segment.train.jittered_boxes``), as a hurried user draws it;
- automatic: the whole image, no box.

Baselines, on the same folds and the same jittered boxes: the mean training mask (thresholded at 0.5;
DDTI's images are nodule-centred crops, so it is a strong one) and the ellipse inscribed in the box
(also on the exact box). Goals: box-prompted Dice >= 0.90, automatic >= 0.86. Then the CPU seconds per
256 px image of the predict path (the K fold models, flip TTA), box-prompted and automatic, over
``--time-images`` images (``time.process_time``, one thread unless told).

    .venv/bin/python bench/segment.py [--quick] [--epochs 12] [--size 128] [--threads 2] [--device auto] [--out DIR]

``--quick``: 2 folds on 80 images, 3 epochs (a smoke run, not a result). ``--time-only``: the CPU seconds
alone, with randomly initialised fold models (the compute does not depend on the weights) or a full run's
(``--models OUT/models``). The timing runs predict's fast path (``Segmenter``'s default: BatchNorm folded,
channels-last) and the reference path (the models as trained) in the same run and prints their ratio and
their largest probability difference. ``--out DIR`` also writes each held-out image's out-of-fold mask
(``DIR/box``, ``DIR/auto``: ``masks/*.png`` and a DDTI-format ``cases.csv`` for ``bench/real_ddti.py
--cases``) and the fold models (``DIR/models``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import DATA, limit_threads


def ellipse(box, shape) -> np.ndarray:
    """The ellipse inscribed in ``box`` (y0, x0, y1, x1), on pixel centres."""
    y0, x0, y1, x1 = box
    yy, xx = np.mgrid[: shape[0], : shape[1]] + 0.5
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, max((y1 - y0) / 2, 0.5), max((x1 - x0) / 2, 0.5)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def load(n: int | None):
    """DDTI's images as the stage's samples (grey frame, mask, patient)."""
    from ceusfusion.io.image import read_image
    from ceusfusion.io.mask import read_mask
    from ceusfusion.segment.data import Sample, grey

    src = pd.read_csv(DATA / "ddti" / "cases.csv", dtype=str)
    if n:
        src = src.head(n)
    out = []
    for r in src.itertuples():
        img = grey(read_image(DATA / "ddti" / r.image))
        out.append(Sample(r.case_id, "image", r.patient, img, DATA / "ddti" / r.image,
                          mask=read_mask(DATA / "ddti" / r.mask, img.shape)))
    return out


def baselines(train, held, boxes, fold: int) -> list[dict]:
    """Mean training mask, ellipse in the jittered box, ellipse in the exact box: Dice per held-out image."""
    from ceusfusion.segment.metrics import scores
    from ceusfusion.segment.data import mask_box

    shape = train[0].mask.shape
    mean = np.mean([s.mask for s in train if s.mask.shape == shape], axis=0) > 0.5
    rows = []
    for s, box in zip(held, boxes):
        for name, pred in (("mean_mask", mean if s.mask.shape == shape else np.zeros_like(s.mask)),
                           ("ellipse_jittered_box", ellipse(box, s.mask.shape)),
                           ("ellipse_exact_box", ellipse(mask_box(s), s.mask.shape))):
            rows.append({"case_id": s.case_id, "fold": fold, "mode": name, **scores(pred, s.mask)})
    return rows


def cross_validate(samples, st, device):
    """Fold models and per-image scores of the model and the baselines."""
    from ceusfusion.models.resolver import resolve_weights
    from ceusfusion.segment.infer import Segmenter
    from ceusfusion.segment.net import grey_stats
    from ceusfusion.segment.train import assign_folds, fit_fold, jittered_boxes, score_held_out

    fold = assign_folds(samples, st.folds, st.seed)
    weights = resolve_weights(st.encoder, st.weights)
    mean, std = grey_stats(st.encoder)
    rows, nets, kept = [], [], {"masks": {}, "boxes": {}, "fold": dict(zip((s.case_id for s in samples), fold))}
    for k in range(st.folds):
        train = [s for s, f in zip(samples, fold) if f != k]
        held = [s for s, f in zip(samples, fold) if f == k]
        t0 = time.time()
        net, _ = fit_fold(train, st, weights, device, st.seed * 1000 + k, log=lambda m: print("  " + m, flush=True))
        print(f"fold {k + 1}/{st.folds}: trained on {len(train)} images in {time.time() - t0:.0f} s", flush=True)
        nets.append(net.cpu())
        boxes = jittered_boxes(held, st, k)
        kept["boxes"].update((s.case_id, b) for s, b in zip(held, boxes))
        rows += score_held_out(Segmenter([net], st.size, st.context, mean, std, device), held, boxes, k,
                               keep=kept["masks"])
        rows += baselines(train, held, boxes, k)
        d = pd.DataFrame(rows).query("fold == @k").groupby("mode")["dice"].mean()
        print("   held-out Dice: " + ", ".join(f"{m} {v:.3f}" for m, v in d.items()), flush=True)
    return pd.DataFrame(rows), nets, kept


def write_masks(out: Path, samples, kept: dict) -> dict:
    """Each held-out image's out-of-fold mask (the fold model that never trained on it), per mode, as
    ``OUT/<mode>/masks/<case>.png`` and ``OUT/<mode>/cases.csv`` in DDTI's format (bench/real_ddti.py
    ``--cases``). An empty prediction falls back as ``segment predict``'s ROI would: the box in box mode,
    the whole frame in automatic mode (``mask_fallback`` says which rows). Returns the fallback counts."""
    from PIL import Image

    from ceusfusion.core.fsutil import atomic_path, write_csv
    from ceusfusion.segment.boxes import box_text

    src = pd.read_csv(DATA / "ddti" / "cases.csv", dtype=str).set_index("case_id")
    counts = {}
    for mode in ("box", "auto"):
        folder = out / mode
        rows, n_fallback = [], 0
        for s in samples:
            mask, fallback = kept["masks"][(s.case_id, s.modality, mode)], ""
            if not mask.any():
                mask, fallback = fallback_mask(s.frame.shape, kept["boxes"][s.case_id] if mode == "box" else None)
                n_fallback += 1
            with atomic_path(folder / "masks" / f"{s.case_id}.png") as tmp:
                Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
            row = src.loc[s.case_id].to_dict()
            row.update(case_id=s.case_id, image=str(s.source.resolve()), mask=f"masks/{s.case_id}.png",
                       mask_area_frac=f"{mask.mean():.4f}", segmenter_fold=int(kept["fold"][s.case_id]),
                       prompt_box=box_text(kept["boxes"][s.case_id]) if mode == "box" else "",
                       mask_fallback=fallback)
            rows.append(row)
        cols = ["case_id", *[c for c in rows[0] if c != "case_id"]]
        write_csv(folder / "cases.csv", pd.DataFrame(rows)[cols])
        counts[mode] = n_fallback
        print(f"{mode}: {len(rows)} out-of-fold masks -> {folder / 'cases.csv'} ({n_fallback} empty, fallen back)")
    return counts


def fallback_mask(shape, box) -> tuple[np.ndarray, str]:
    """The ROI ``segment predict`` leaves when it finds nothing: the box (box mode), else the whole frame."""
    m = np.zeros(shape, bool)
    if box is None:
        m[:] = True
        return m, "whole_frame"
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] = True
    return m, "box"


def timed_pictures(samples, n: int) -> list:
    """The first ``n`` images resized to 256 x 256 px, each with its mask's box."""
    from PIL import Image

    from ceusfusion.ingest.roi import bbox

    pics = []
    for s in samples[:n]:
        f = np.asarray(Image.fromarray(s.frame).resize((256, 256), Image.Resampling.BILINEAR))
        m = np.asarray(Image.fromarray(s.mask.astype(np.uint8)).resize((256, 256), Image.Resampling.NEAREST)) > 0
        pics.append((f, bbox(m)))
    return pics


def time_path(seg, pics) -> tuple[dict, list]:
    """CPU seconds per picture, box-prompted and automatic, as the cascade runs it when it finds a nodule (the
    whole-frame look, then the box-prompted one); and the box-prompted results (to compare the paths)."""
    from ceusfusion.segment.boxes import whole_region
    from ceusfusion.segment.infer import look, segment_box
    from ceusfusion.segment.sampling import View

    segment_box(seg, pics[0][0], pics[0][1])  # warm-up
    t0 = time.process_time()
    results = [segment_box(seg, f, box) for f, box in pics]
    box_s = (time.process_time() - t0) / len(pics)
    t0 = time.process_time()
    for f, _ in pics:
        look(seg, f, View(*whole_region(f.shape)), None)
    return {"box": box_s, "auto": box_s + (time.process_time() - t0) / len(pics)}, results


def cpu_seconds(nets, samples, st, n: int, threads: int) -> dict:
    """CPU seconds per 256 px image of predict's path (every fold model, flip TTA), the fast path (predict's:
    BatchNorm folded, channels-last) and the reference (the models as trained) in the same run, their ratio,
    and how far the fast path's box-prompted probabilities and masks are from the reference's."""
    import torch

    from ceusfusion.segment.infer import Segmenter
    from ceusfusion.segment.metrics import dice
    from ceusfusion.segment.net import grey_stats

    torch.set_num_threads(threads)
    pics = timed_pictures(samples, n)
    args = (st.size, st.context, *grey_stats(st.encoder), torch.device("cpu"))
    nets = [m.cpu().eval() for m in nets]
    with torch.inference_mode():
        t0 = time.process_time()
        fast_seg = Segmenter(nets, *args)
        load_s = time.process_time() - t0
        ref, ref_res = time_path(Segmenter(nets, *args, fast=False), pics)
        fast, fast_res = time_path(fast_seg, pics)
        bf, bf_res = time_path(Segmenter(nets, *args, precision="bfloat16"), pics)  # the opt-in option
        ref2, _ = time_path(Segmenter(nets, *args, fast=False), pics)  # reference again: load drift shows
    bf_dice = [dice(a.mask, b.mask) for a, b in zip(ref_res, bf_res)]
    ref = {m: (ref[m] + ref2[m]) / 2 for m in ref}  # timed before and after the others: load drift averages out
    out = {"box": fast["box"], "auto": fast["auto"], "reference_box": ref["box"], "reference_auto": ref["auto"],
           "reference_box_after": ref2["box"], "reference_auto_after": ref2["auto"], "fast_path_setup_s": load_s,
           "max_prob_diff": max(float(np.abs(a.prob - b.prob).max()) for a, b in zip(ref_res, fast_res)),
           "mask_pixels_differing": int(sum((a.mask != b.mask).sum() for a, b in zip(ref_res, fast_res))),
           "bfloat16_box": bf["box"], "bfloat16_auto": bf["auto"], "bfloat16_dice_vs_reference_mean": float(np.mean(bf_dice)),
           "bfloat16_dice_vs_reference_min": float(np.min(bf_dice))}
    print(f"CPU s per 256 px image, reference path (models as trained; mean of a run before and one after the "
          f"others): box {ref['box']:.3f} (after: {ref2['box']:.3f}), auto {ref['auto']:.3f} (after: {ref2['auto']:.3f}); fast path (predict's): box {fast['box']:.3f}, auto "
          f"{fast['auto']:.3f}; ratio x{ref['box'] / fast['box']:.2f} (box), x{ref['auto'] / fast['auto']:.2f} (auto); "
          f"setup {load_s:.2f} s once; max |prob diff| {out['max_prob_diff']:.1e}, {out['mask_pixels_differing']} mask "
          f"pixels differ over {len(pics)} images")
    print(f"opt-in --precision bfloat16: box {bf['box']:.3f}, auto {bf['auto']:.3f} (x{ref['box'] / bf['box']:.2f}, "
          f"x{ref['auto'] / bf['auto']:.2f} of the reference); its box-prompted masks against the reference's: "
          f"Dice mean {np.mean(bf_dice):.4f}, min {np.min(bf_dice):.4f}")
    return out


def time_only(a, st) -> None:
    """``--time-only``: the CPU seconds per image with K randomly initialised fold models (the compute does not
    depend on the weights' values)."""
    from ceusfusion.segment.net import DECODER, build_net, load_net

    if a.models:  # the fold models a full run saved (--out DIR/models): the paths compared on trained weights
        nets = [load_net(a.models / f"fold{k}.safetensors", st.encoder, DECODER) for k in range(st.folds)]
    else:
        nets = [build_net(st.encoder) for _ in range(st.folds)]
    cpu = cpu_seconds(nets, load(a.time_images), st, a.time_images, a.time_threads)
    print(f"CPU s per 256 px image ({st.folds} fold models, {st.size} px input, flip TTA, {a.time_threads} thread): "
          f"box {cpu['box']:.3f}, auto {cpu['auto']:.3f} (goal < 0.2)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-threads", type=int, default=1)
    ap.add_argument("--time-images", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-only", action="store_true", help="only the CPU seconds per image")
    ap.add_argument("--models", type=Path, default=None, help="with --time-only: the fold models of a full run "
                    "(its --out DIR/models) instead of randomly initialised ones")
    ap.add_argument("--out", type=Path, default=None, help="write per_image.csv, result.json and the out-of-fold "
                    "masks (box/ and auto/: masks/*.png and a DDTI-format cases.csv for bench/real_ddti.py) here")
    a = ap.parse_args()
    limit_threads(a.threads)
    from ceusfusion.core.runtime import deterministic, resolve_device
    from ceusfusion.segment.train import SegmentSettings

    kw = {k: v for k, v in (("epochs", 3 if a.quick and a.epochs is None else a.epochs), ("size", a.size)) if v}
    st = SegmentSettings(folds=2 if a.quick else a.folds, seed=a.seed, device=a.device, **kw)
    if a.time_only:
        return time_only(a, st)
    if a.out:  # before the long run: a bad --out fails now, and never writes over a file it did not write
        claim_out(a.out)
    samples = load(80 if a.quick else None)
    device = resolve_device(st.device)
    t0, c0 = time.time(), time.process_time()
    with deterministic(device):
        per, nets, kept = cross_validate(samples, st, device)
    seconds = time.time() - t0
    print(f"cross-validation: {seconds:.0f} s wall, {time.process_time() - c0:.0f} s CPU (this process)", flush=True)
    fallbacks = write_masks(a.out, samples, kept) if a.out else None
    if a.out:
        from ceusfusion.segment.net import save_net

        for k, net in enumerate(nets):
            save_net(a.out / "models" / f"fold{k}.safetensors", net)
    report(per, st, seconds, cpu_seconds(nets, samples, st, a.time_images, a.time_threads), a, device, fallbacks)


def claim_out(out: Path) -> None:
    """Every file and folder the run writes under ``--out`` (``core.fsutil.claim``)."""
    from ceusfusion.core.fsutil import claim

    claim(out, files=[out / "per_image.csv", out / "result.json", out / "box" / "cases.csv", out / "auto" / "cases.csv"],
          folders=[out / "box" / "masks", out / "auto" / "masks", out / "models"])


def report(per: pd.DataFrame, st, seconds: float, cpu: dict, a, device, fallbacks=None) -> None:
    """The table, the ratios against the baselines, the goals; per-image scores and the summary to --out."""
    summary = per.groupby("mode", sort=False).agg(dice=("dice", "mean"), iou=("iou", "mean"),
                                                  hd95=("hd95", "median"), n=("dice", "size"))
    print(f"\nDDTI, {st.folds}-fold CV grouped by patient, {len(per['case_id'].unique())} images, {st.epochs} epochs, "
          f"{st.size} px, {st.encoder}, device {device}, {seconds:.0f} s")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    d = summary["dice"]
    print(f"\nbox-prompted Dice {d['box']:.3f} (goal >= 0.90): x{d['box'] / d['ellipse_jittered_box']:.3f} of the ellipse "
          f"in the same box, x{d['box'] / d['mean_mask']:.3f} of the mean mask")
    print(f"automatic    Dice {d['auto']:.3f} (goal >= 0.86): x{d['auto'] / d['mean_mask']:.3f} of the mean mask")
    print(f"CPU s per 256 px image ({st.folds} fold models, flip TTA, {a.time_threads} thread): box {cpu['box']:.3f}, "
          f"auto {cpu['auto']:.3f} (goal < 0.2)")
    if a.out:
        from ceusfusion.core.fsutil import write_csv, write_json

        write_csv(a.out / "per_image.csv", per)
        write_json(a.out / "result.json", json.loads(json.dumps(
            {"summary": summary.reset_index().to_dict("records"), "cpu_s_per_image": cpu, "settings": st.model_dump(),
             "seconds": seconds, "empty_masks_fallen_back": fallbacks}, default=float)))


if __name__ == "__main__":
    main()
