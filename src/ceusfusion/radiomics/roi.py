"""Each case's ROIs at the source files' own resolution: the still's and each CEUS keyframe's.

Why not the prepared arrays: ``prepare`` keeps a square crop resized to the networks' input (grey
levels interpolated, the outline only implicit) and no mask, while radiomics needs the native pixels,
their spacing and the mask itself. So the stage reads the manifest's files through ``io/`` and takes
from the prepared record only what prepare decided: the keyframes (``frame_index``) and, for a case
without a mask, its box in frame pixels (the fixed box, a box of the manifest, or the whole frame).
The ROI source is recorded per case, so a reader knows what the shape features describe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ceusfusion.core.errors import CeusError
from ceusfusion.io.dicom import pixel_spacing_mm
from ceusfusion.io.image import read_image
from ceusfusion.io.mask import read_mask
from ceusfusion.io.video import VideoStream, video_header

GREY = np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as io.video's grey frames


@dataclass
class Plane:
    """One 2-D ROI: grey pixels, the ROI, and whether the ROI is a drawn mask (else a box)."""

    name: str  # "still" or "kf<k>"
    image: np.ndarray
    roi: np.ndarray
    is_mask: bool


@dataclass
class CaseROIs:
    still: Plane | None = None
    keyframes: list[Plane] = field(default_factory=list)
    roi_source: dict[str, str] = field(default_factory=dict)  # still / video -> mask, box, whole frame
    spacing: float = 1.0
    unit: str = "px"


def grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else np.round(img[..., :3].astype(float) @ GREY).astype(np.uint8)


def box_roi(shape: tuple[int, int], box) -> tuple[np.ndarray, str]:
    """A rectangular ROI from the prepared record's box (y0, x0, y1, x1) and what it is."""
    roi = np.zeros(shape, bool)
    y0, x0, y1, x1 = (int(v) for v in box)
    roi[max(y0, 0): y1, max(x0, 0): x1] = True
    whole = (y0, x0, y1, x1) == (0, 0, shape[0], shape[1])
    return roi, "whole frame" if whole else "box"


def still_plane(row: dict, record: dict | None) -> tuple[Plane, str]:
    """The still and its ROI: the mask when the manifest has one, else the prepared box."""
    img = grey(read_image(row["image"]))
    said = row.get("image_roi")  # prepare's record of it (index.csv: manual or predicted mask, box, ...)
    if row.get("image_mask"):
        return Plane("still", img, read_mask(row["image_mask"], img.shape, of="image"), True), said or "mask"
    box = (record or {}).get("image", {}).get("bbox")
    if box is None:
        raise CeusError("no mask and no prepared box for the still (run `ceusfusion prepare` first)")
    roi, source = box_roi(img.shape, box)
    return Plane("still", img, roi, False), said or source


def keyframe_planes(row: dict, record: dict | None) -> tuple[list[Plane], str]:
    """The prepared keyframes, decoded again at full resolution, with their ROIs."""
    entry = (record or {}).get("video")
    if not entry or "frame_index" not in entry:
        raise CeusError("no prepared keyframes for the video (run `ceusfusion prepare` first)")
    wanted = {int(k): i for i, k in enumerate(entry["frame_index"])}
    mask = None
    if row.get("video_mask"):
        info = video_header(row["video"])
        mask = read_mask(row["video_mask"], (info.height, info.width), of="video", frames=info.n_frames)
    frames: dict[int, np.ndarray] = {}
    with VideoStream(row["video"], strict=False) as vs:
        for f in vs:
            if f.index in wanted:
                frames[f.index] = f.to_array(gray=True)
            if len(frames) == len(wanted):
                break
    if len(frames) < len(wanted):
        raise CeusError(f"{row['video']}: {len(wanted) - len(frames)} keyframe(s) no longer decode")
    return [keyframe_plane(k, frames[k], mask, entry, wanted[k]) for k in sorted(wanted)], "mask" if mask is not None else ""


def keyframe_plane(k: int, frame: np.ndarray, mask: np.ndarray | None, entry: dict, i: int) -> Plane:
    """Keyframe ``k`` (the ``i``-th) and its ROI; where prepare followed the nodule (``prepare --track``), the
    ROI moves with that keyframe's own box."""
    if mask is None:
        roi = box_roi(frame.shape, entry["bbox"])[0]
    else:
        roi = mask[k] if mask.ndim == 3 else mask
    if entry.get("boxes") and (mask is None or mask.ndim == 2):  # a mask per frame already moves
        dy, dx = (int(entry["boxes"][i][j]) - int(entry["box"][j]) for j in (0, 1))
        roi = ndimage.shift(roi.astype(np.uint8), (dy, dx), order=0, mode="constant").astype(bool)
    return Plane(f"kf{k}", frame, roi, mask is not None)


def case_rois(row: dict, record: dict | None, keyframes: bool, spacing_mm: float | None) -> CaseROIs:
    """Every ROI of one case (``row``: its RUN/cohort.csv row, absolute paths), with the ROI source."""
    out = CaseROIs()
    if row.get("image"):
        out.still, out.roi_source["still"] = still_plane(row, record)
    if keyframes and row.get("video"):
        out.keyframes, src = keyframe_planes(row, record)
        box = (record or {}).get("video", {}).get("bbox")
        out.roi_source["video"] = row.get("video_roi") or src or (
            box_roi(out.keyframes[0].image.shape, box)[1] if box else "box")
    if out.still is None and not out.keyframes:
        raise CeusError("neither a still nor a video to compute radiomics from")
    files = [row[c] for c in ("image", "video") if row.get(c)]  # the still's spacing, else the cine's
    dicom = next((sp for sp in map(pixel_spacing_mm, files) if sp), None)
    out.spacing, out.unit = (dicom, "mm (DICOM)") if dicom else (spacing_mm, "mm (given)") if spacing_mm else (1.0, "px")
    return out
