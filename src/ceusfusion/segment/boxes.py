"""Boxes in the manifest ("x,y,w,h") and the regions the segmenter looks at.

A box here is :data:`ceusfusion.ingest.roi.Box`, ``(y0, x0, y1, x1)`` end exclusive. The manifest's
``image_box`` / ``video_box`` columns are ``"x,y,w,h"`` (top-left corner, in the file's pixels).
``parse_box`` is local until the manifest reader owns these columns (issue 26 item 1).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.roi import Box

BOX_COLUMNS = {"image": "image_box", "video": "video_box"}
BOX_TIME = "video_box_time"


def parse_box(text, shape: tuple[int, int] | None = None, what: str = "box") -> Box | None:
    """``"x,y,w,h"`` -> ``(y0, x0, y1, x1)``; None for an empty cell; one line naming ``what`` otherwise."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4 or not all(p.isdigit() for p in parts) or min(int(p) for p in parts[2:]) < 1:
        raise CeusError(f"{what} {text!r}: expected x,y,w,h as four integers, w and h positive")
    x, y, w, h = (int(p) for p in parts)
    if shape is not None and (x + w > shape[1] or y + h > shape[0]):
        raise CeusError(f"{what} {text!r} lies outside the {shape[1]}x{shape[0]} px frame")
    return y, x, y + h, x + w


def box_text(box: Box) -> str:
    """The manifest's spelling of a box."""
    y0, x0, y1, x1 = box
    return f"{x0},{y0},{x1 - x0},{y1 - y0}"


def parse_time(value, what: str = BOX_TIME) -> float | None:
    """Seconds from the start of the clip, or None for an empty cell."""
    if value is None or pd.isna(value) or not str(value).strip():
        return None
    try:
        t = float(value)
    except ValueError:
        raise CeusError(f"{what} {value!r}: not a number of seconds") from None
    if not (math.isfinite(t) and t >= 0):
        raise CeusError(f"{what} {value!r}: must be zero or more seconds")
    return t


def jitter_box(box: Box, rng: np.random.Generator, amount: float, shape: tuple[int, int] | None = None) -> Box:
    """Every side moved at random by up to ``amount`` x the box's size along that axis (a hurried user's box)."""
    y0, x0, y1, x1 = box
    h, w = y1 - y0, x1 - x0
    d = rng.uniform(-amount, amount, 4) * np.array([h, w, h, w])
    out = [int(round(v)) for v in (y0 + d[0], x0 + d[1], y1 + d[2], x1 + d[3])]
    if shape is not None:
        out = [max(0, out[0]), max(0, out[1]), min(shape[0], out[2]), min(shape[1], out[3])]
    if out[2] - out[0] < 1 or out[3] - out[1] < 1:
        return box
    return tuple(out)


def context_region(box: Box, context: float) -> tuple[float, float, float]:
    """(centre y, centre x, side) of the square the network sees around a box: its larger side plus
    ``context`` x that side on each side (TN-SCUI's second stage: the nodule with the tissue around it)."""
    y0, x0, y1, x1 = box
    side = max(y1 - y0, x1 - x0) * (1 + 2 * context)
    return (y0 + y1) / 2.0, (x0 + x1) / 2.0, float(max(side, 8.0))


def whole_region(shape: tuple[int, int]) -> tuple[float, float, float]:
    """(centre y, centre x, side) of the square holding the whole frame (the automatic mode's first look)."""
    h, w = shape
    return h / 2.0, w / 2.0, float(max(h, w))
