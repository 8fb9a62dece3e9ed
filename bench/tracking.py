"""Benchmark (issue 26): the ROI followed through a moving clip, against the fixed box, on synthetic truth.

A synthetic cohort with motion (``synth --motion``: the scene moves along a smooth path; the mask drawn on the
nodule's peak frame, ``video_box_time``; signal/<case>_video_path.csv the true box in every frame). Per case:

- mean IoU over every frame of the tracked box (``ingest.track.track_roi``) and of the fixed box against the
  true box (goal: tracked >= 0.8 on average);
- the TIC (mean grey in the nodule, every frame) measured in the tracked ROI and in the fixed ROI, against
  the TIC measured in the true moving mask: mean absolute error in grey levels, and their ratio.

    OMP_NUM_THREADS=1 .venv/bin/python bench/tracking.py [--n 12] [--motion 8] [--size 128] [--seed 0]

``--pocus N``: speed only, on the N largest real POCUS clips of ../shared/data (no truth of their motion).

``--motion 0``: the default cohort's clips (breathing of a few pixels; the bubble speckle drifting as one block
apart from the tissue), its truth from ``--mask-per-frame``: what ``track: auto`` would meet in the demo.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ceusfusion.ingest.perfusion import RoiMeter  # noqa: E402
from ceusfusion.ingest.roi import mask_box, shift_box  # noqa: E402
from ceusfusion.ingest.track import track_roi  # noqa: E402
from ceusfusion.io.mask import read_mask  # noqa: E402
from ceusfusion.io.video import VideoStream  # noqa: E402
from ceusfusion.synthetic.synth import SynthConfig, generate  # noqa: E402


def iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def tics(video: Path, mask: np.ndarray, moves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The nodule's mean grey per frame, the anchor mask moved by each of ``moves`` ((T, 2) shifts)."""
    meter = RoiMeter(mask, 0.5)
    out = {k: [] for k in moves}
    with VideoStream(video) as vs:
        for fr in vs:
            for k, s in moves.items():
                out[k].append(meter.measure(fr, s[fr.index])[0])
    return {k: np.asarray(v) for k, v in out.items()}


def one_case(data: Path, row) -> dict:
    path = pd.read_csv(data / "signal" / f"{row.case_id}_video_path.csv")
    a = int(np.argmin(np.abs(path["time_s"] - float(row.video_box_time))))
    mask = read_mask(data / row.video_mask)
    mask = mask[a] if mask.ndim == 3 else mask  # --motion 0 writes the true mask of every frame
    box = mask_box(mask, "mask")
    true = np.stack([path["y"] - path["y"][a], path["x"] - path["x"][a]], 1).astype(int)
    t = time.perf_counter()
    track = track_roi(data / row.video, box, float(row.video_box_time))
    seconds = time.perf_counter() - t
    truth_boxes = [shift_box(box, d) for d in true]
    curves = tics(data / row.video, mask, {"true": true, "tracked": track.shifts, "fixed": np.zeros_like(true)})
    lit = np.isfinite(curves["true"])
    return {"case_id": row.case_id, "box_side": max(box[2] - box[0], box[3] - box[1]), "motion_px": float(np.hypot(*true.T).max()),
            "iou_tracked": np.mean([iou(shift_box(box, d), b) for d, b in zip(track.shifts, truth_boxes)]),
            "iou_fixed": np.mean([iou(box, b) for b in truth_boxes]),
            "tic_mae_tracked": float(np.nanmean(np.abs(curves["tracked"] - curves["true"])[lit])),
            "tic_mae_fixed": float(np.nanmean(np.abs(curves["fixed"] - curves["true"])[lit])),
            "held": track.record()["held"], "frames": len(true), "seconds": seconds}


def real_speed(n: int) -> None:
    """Seconds per frame and per second of clip on the n largest real POCUS clips (no truth: speed only), a centred
    box of a quarter of the frame's side drawn at mid-clip."""
    cases = pd.read_csv(ROOT.parent / "shared" / "data" / "pocus" / "cases.csv").nlargest(n, "size_bytes")
    rows = []
    for r in cases.itertuples():
        side = min(r.width, r.height) // 4
        y0, x0 = (r.height - side) // 2, (r.width - side) // 2
        t = time.perf_counter()
        track = track_roi(ROOT.parent / "shared" / "data" / "pocus" / r.video, (y0, x0, y0 + side, x0 + side), r.duration_s / 2)
        sec = time.perf_counter() - t
        rows.append({"case": r.case_id, "px": f"{r.width}x{r.height}", "frames": len(track.times), "seconds": sec,
                     "ms_per_frame": 1000 * sec / len(track.times), "clip_s": r.duration_s, "motion_px": track.motion_px()})
    df = pd.DataFrame(rows)
    print(df.round(2).to_string(index=False))
    print(f"real clips: {1000 * df.seconds.sum() / df.frames.sum():.1f} ms per frame, "
          f"{df.seconds.sum() / df.clip_s.sum():.2f} s per second of clip")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--motion", type=float, default=8.0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pocus", type=int, default=0, help="instead: tracking speed on the N largest real POCUS clips")
    args = ap.parse_args()
    if args.pocus:
        return real_speed(args.pocus)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, SynthConfig(n=args.n, seed=args.seed, size=args.size, fps=4.0, duration=30.0, motion=args.motion,
                                       mask_per_frame=args.motion == 0), workers=1)
        cohort = pd.read_csv(data / "cohort.csv", dtype=str)
        rows = pd.DataFrame([one_case(data, r) for r in cohort.itertuples()])
    pd.set_option("display.width", 200)
    print(rows.round(3).to_string(index=False))
    m = rows.mean(numeric_only=True)
    print(f"\nmean IoU vs the true box: tracked {m.iou_tracked:.3f}, fixed {m.iou_fixed:.3f} "
          f"(ratio {m.iou_tracked / m.iou_fixed:.2f}; goal tracked >= 0.8)")
    print(f"TIC mean absolute error vs the true moving ROI (grey): tracked {m.tic_mae_tracked:.2f}, fixed {m.tic_mae_fixed:.2f} "
          f"(ratio tracked/fixed {m.tic_mae_tracked / m.tic_mae_fixed:.2f})")
    print(f"tracking: {rows.seconds.sum() / rows.frames.sum() * 1000:.2f} ms per frame ({args.size} px, {args.n} clips)")


if __name__ == "__main__":
    main()
