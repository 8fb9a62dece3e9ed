"""ROI geometry: boxes from masks, the square crop box around a lesion, and the crop itself.

A box is ``(y0, x0, y1, x1)`` in frame pixels, end exclusive. The lesion's box
(``bbox`` / ``mask_box``; for a video with a mask per frame, ``union_box`` over
the selected frames) grows by a margin and becomes square (``square_box``);
cases without a mask use the case's own box (the manifest's ``image_box`` /
``video_box``, "x,y,w,h": ``parse_xywh``, ``xywh_box``), else the whole frame or a
fixed crop (``fixed_or_whole``). ``crop_resize`` cuts the box out (zero padding
where it leaves the array) and resizes it to S×S. ``roi_source`` names where a
case's ROI came from, the word recorded by ``prepare`` and counted by the report.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from ceusfusion.core.errors import CeusError

Box = tuple[int, int, int, int]  # y0, x0, y1, x1 (end exclusive)
XYWH = tuple[int, int, int, int]  # x, y (top-left corner), width, height: how a user writes a box

# where a picture's ROI came from (prepare's record, the report's counts); the manifest's
# ``image_roi_source`` / ``video_roi_source`` say how a given mask was made
MASK_ORIGINS = {"manual": "manual_mask", "predicted_box": "predicted_mask_box", "predicted_auto": "predicted_mask_auto"}
ROI_SOURCES = (*MASK_ORIGINS.values(), "box", "fixed_box", "whole_frame")


def parse_xywh(text: str) -> XYWH:
    """A box written "x,y,w,h": four integers, x and y >= 0, w and h >= 1; CeusError saying what is wrong.

    Whole pixels only: a box from a drawing tool in another pixel grid (a scaled display) would crop
    the wrong place silently, so "12.5" is refused rather than rounded.
    """
    parts = [t.strip() for t in str(text).split(",")]
    if len(parts) != 4 or not all(re.fullmatch(r"[+-]?\d+", t) for t in parts):
        raise CeusError(f"box {str(text)[:40]!r} is not four integers x,y,w,h (pixels of the file)")
    x, y, w, h = (int(t) for t in parts)
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise CeusError(f"box {str(text)[:40]!r}: x and y must be >= 0 and the width and height positive")
    return x, y, w, h


def xywh_box(xywh: XYWH, shape: tuple[int, int], what: str = "box") -> Box:
    """The box (y0, x0, y1, x1) of an x,y,w,h box that must lie inside a frame of ``shape`` (H, W)."""
    x, y, w, h = xywh
    height, width = shape
    if x + w > width or y + h > height:
        raise CeusError(f"{what} {x},{y},{w},{h} lies outside the {width}x{height} px frame "
                        f"(it reaches x={x + w}, y={y + h})")
    return y, x, y + h, x + w


def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """A 2-D mask of ``shape`` whose foreground is the box: what a box-only case measures its TIC in."""
    m = np.zeros(shape, bool)
    m[box[0] : box[2], box[1] : box[3]] = True
    return m


def roi_source(has_mask: bool, mask_origin: str | None, has_box: bool, fixed_crop: bool) -> str:
    """Where a picture's ROI came from: its mask (manual or predicted, from the manifest's roi_source column),
    else its own box, else the fixed crop of ``prepare --box``, else the whole frame."""
    if has_mask:
        return MASK_ORIGINS.get(mask_origin or "manual", "manual_mask")
    if has_box:
        return "box"
    return "fixed_box" if fixed_crop else "whole_frame"


def bbox(mask: np.ndarray) -> Box | None:
    """Bounding box of a 2-D mask's foreground; None when the mask is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def mask_box(mask2d: np.ndarray, what: str) -> Box:
    """Bounding box of a mask that must not be empty; ``what`` names it in the error."""
    b = bbox(mask2d)
    if b is None:
        raise CeusError(f"{what} is empty (no foreground pixel)")
    return b


def union_box(boxes: list[Box]) -> Box:
    """The smallest box holding every box of the list."""
    a = np.array(boxes)
    return int(a[:, 0].min()), int(a[:, 1].min()), int(a[:, 2].max()), int(a[:, 3].max())


def max_diameter(mask: np.ndarray, n_angles: int = 36) -> float:
    """Largest caliper (Feret) diameter of a 2-D mask in pixels, over ``n_angles`` directions."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    ang = np.linspace(0, np.pi, n_angles, endpoint=False)
    proj = np.outer(xs, np.cos(ang)) + np.outer(ys, np.sin(ang))
    return float((proj.max(axis=0) - proj.min(axis=0)).max() + 1.0)


def square_box(bbox: Box, margin: float, shape: tuple[int, int] | None = None) -> Box:
    """The bbox grown by ``margin`` × its larger side on each side, made square about its centre.

    With the frame ``shape``, a box that would stick out of the frame is shifted back inside
    (along each axis where it fits). Zero padding would otherwise appear at the crop's edge
    with an extent set by the lesion's size and position, a shortcut a network learns
    (Grad-CAM on synthetic data lit up exactly those black borders).
    """
    y0, x0, y1, x1 = bbox
    side = max(y1 - y0, x1 - x0)
    side = max(1, int(round(side * (1 + 2 * margin))))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    top = int(round(cy - side / 2.0))
    left = int(round(cx - side / 2.0))
    if shape is not None:
        h, w = shape
        top = min(max(top, 0), h - side) if side <= h else int(round((h - side) / 2.0))
        left = min(max(left, 0), w - side) if side <= w else int(round((w - side) / 2.0))
    return top, left, top + side, left + side


def fixed_or_whole(shape: tuple[int, int], crop: tuple[int, int, int, int] | None) -> Box:
    """Box of a case without mask: the fixed crop (must lie inside the frame) or the whole frame."""
    h, w = shape
    if crop is None:
        return 0, 0, h, w
    x, y, cw, ch = crop
    if x < 0 or y < 0 or x + cw > w or y + ch > h:
        raise CeusError(f"the fixed crop {x},{y},{cw},{ch} lies outside the {w}x{h} px frame")
    return y, x, y + ch, x + cw


def shift_box(box: Box, shift) -> Box:
    """The box moved by ``shift`` = (dy, dx) whole pixels (a tracked ROI on another frame)."""
    dy, dx = int(shift[0]), int(shift[1])
    return box[0] + dy, box[1] + dx, box[2] + dy, box[3] + dx


def shift_mask(mask: np.ndarray, shift) -> np.ndarray:
    """A 2-D mask moved by ``shift`` = (dy, dx) whole pixels; what leaves the frame is lost, what enters is empty."""
    dy, dx = int(shift[0]), int(shift[1])
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dy) < h and abs(dx) < w:
        out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def clip_box(box: Box, shape: tuple[int, int]) -> Box:
    """The part of ``box`` inside a frame of ``shape`` (H, W)."""
    h, w = shape
    return max(0, box[0]), max(0, box[1]), min(h, box[2]), min(w, box[3])


def crop_resize(arr: np.ndarray, box: Box, size: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Cut ``box`` (frame coordinates) from ``arr`` (which starts at ``offset``), zero-pad outside, resize to size×size."""
    y0, x0, y1, x1 = box
    oy, ox = offset
    h, w = arr.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + arr.shape[2:], np.uint8)
    sy0, sx0 = max(y0 - oy, 0), max(x0 - ox, 0)
    sy1, sx1 = min(y1 - oy, h), min(x1 - ox, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 + oy - y0 : sy1 + oy - y0, sx0 + ox - x0 : sx1 + ox - x0] = arr[sy0:sy1, sx0:sx1]
    if out.shape[:2] != (size, size):
        out = np.asarray(Image.fromarray(out).resize((size, size), Image.Resampling.BILINEAR))
    return out
