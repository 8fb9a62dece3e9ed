"""Overlap and boundary agreement of two masks: Dice, IoU and HD95 (pixels), per case and summarised.

HD95 is medpy's / MONAI's: the larger of the two directed 95th percentiles of the distances from
one mask's boundary pixels to the other's boundary (scipy's exact Euclidean distance transform).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

METRICS = ("dice", "iou", "hd95")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A and B| / (|A| + |B|); two empty masks agree (1.0)."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = int(np.logical_or(a, b).sum())
    return 1.0 if u == 0 else int(np.logical_and(a, b).sum()) / u


def boundary(m: np.ndarray) -> np.ndarray:
    """The mask's pixels that touch the background (4-neighbourhood)."""
    return m & ~ndimage.binary_erosion(m, border_value=0)


def hd95(a: np.ndarray, b: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance in pixels; NaN when exactly one mask is empty."""
    a, b = a.astype(bool), b.astype(bool)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("nan")
    ba, bb = boundary(a), boundary(b)
    to_b = ndimage.distance_transform_edt(~bb)[ba]
    to_a = ndimage.distance_transform_edt(~ba)[bb]
    return float(max(np.percentile(to_b, 95), np.percentile(to_a, 95)))


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {"dice": dice(pred, truth), "iou": iou(pred, truth), "hd95": hd95(pred, truth)}


def summarise(df: pd.DataFrame) -> dict:
    """Mean (and SD) Dice and IoU, median HD95, over the rows of ``df``; how many predictions were empty."""
    out = {"n": int(len(df))}
    for m in ("dice", "iou"):
        out[m] = float(df[m].mean()) if len(df) else float("nan")
        out[f"{m}_sd"] = float(df[m].std(ddof=1)) if len(df) > 1 else float("nan")
    h = df["hd95"].dropna()
    out["hd95_median"] = float(h.median()) if len(h) else float("nan")
    out["hd95_mean"] = float(h.mean()) if len(h) else float("nan")
    out["n_empty"] = int(df["hd95"].isna().sum())
    return out
