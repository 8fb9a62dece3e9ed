"""The pictures the segmenter learns from and predicts on: a still, or one frame of a clip.

A video contributes one frame: the frame its box was drawn on (``video_box_time``), else the frame
the keyframe logic centres on (``ingest.keyframes``: the largest nodule with a mask per frame, the
peak enhancement otherwise), so the mask lands where prepare looks first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.ingest.cohort import absolute, groups_of
from ceusfusion.ingest.keyframes import KeyframeParams, select_keyframes
from ceusfusion.ingest.roi import Box, bbox
from ceusfusion.io.image import read_image
from ceusfusion.io.mask import read_mask
from ceusfusion.io.video import VideoStream
from ceusfusion.segment.boxes import BOX_COLUMNS, BOX_TIME, parse_box, parse_time

MODALITIES = ("image", "video")


@dataclass
class Sample:
    """One picture of one case: the grey frame, its mask (training) or box (prompt), where it came from."""

    case_id: str
    modality: str
    group: str
    frame: np.ndarray  # (H, W) uint8
    source: Path
    mask: np.ndarray | None = None  # (H, W) bool
    box: Box | None = None
    frame_index: int | None = None
    time: float | None = None


def grey(arr: np.ndarray) -> np.ndarray:
    """(H, W) uint8 from a grey or RGB picture (ITU-R 601 luma)."""
    if arr.ndim == 2:
        return arr
    return np.round(arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


def frame_at(path: Path, t: float) -> tuple[np.ndarray, int, float]:
    """The clip's frame nearest to ``t`` seconds: (grey frame, index, time)."""
    best = None
    with VideoStream(path) as vs:
        for fr in vs:
            if best is None or abs(fr.time - t) < abs(best[2] - t):
                best = (fr.to_array(True), fr.index, fr.time)
            elif fr.time > t:
                break
        fps = vs.info.fps or 25.0
    if best is None or t > best[2] + 1.5 / fps:
        end = best[2] if best else 0.0
        raise CeusError(f"{path}: {BOX_TIME} {t:g} s lies beyond the clip (last frame at {end:.2f} s)")
    return best


def key_frame(path: Path, mask: np.ndarray | None) -> tuple[np.ndarray, int, float, np.ndarray | None]:
    """The frame the keyframe logic centres on, and the mask on it: (grey frame, index, time, mask or None)."""
    sel = select_keyframes(path, mask, KeyframeParams(n=1, color="gray"), tic=False)
    idx = int(sel.frame_index[0])
    m = None if mask is None else (mask if mask.ndim == 2 else mask[idx])
    return grey(sel.frames[0]), idx, float(sel.times[0]), m


def load_picture(row: dict, modality: str, manifest: Path, with_mask: bool) -> Sample:
    """The case's still or video frame (and mask, ``with_mask``), its box from the manifest; CaseError naming the
    file and the problem."""
    cid, rel = str(row["case_id"]), str(row[modality])
    path = absolute(manifest, rel)
    mask_rel = row.get(f"{modality}_mask") if with_mask else None
    where = rel
    try:
        mask = None
        if modality == "image":
            frame = grey(read_image(path))
            idx = t = None
            if mask_rel:
                where = str(mask_rel)
                mask = read_mask(absolute(manifest, str(mask_rel)), frame.shape, of="image")
        else:
            frame, idx, t, mask = _video_picture(row, path, manifest, mask_rel)
        where = f"{BOX_COLUMNS[modality]} of {rel}"
        box = parse_box(row.get(BOX_COLUMNS[modality]), frame.shape, BOX_COLUMNS[modality])
    except CeusError as exc:
        raise CaseError(cid, where, str(exc).replace(str(path), rel)) from None
    if mask is not None and not mask.any():
        raise CaseError(cid, str(mask_rel), "mask is empty (no foreground pixel)")
    return Sample(cid, modality, str(row.get("group") or cid), frame, path, mask, box, idx, t)


def _video_picture(row: dict, path: Path, manifest: Path, mask_rel) -> tuple:
    """(frame, index, time, mask on it) of a clip: at the box's time when given, else the keyframe centre."""
    t = parse_time(row.get(BOX_TIME))
    mask = read_mask(absolute(manifest, str(mask_rel)), of="video") if mask_rel else None
    if t is not None and isinstance(row.get(BOX_COLUMNS["video"]), str):
        frame, idx, t = frame_at(path, t)
        if mask is not None and tuple(mask.shape[-2:]) != frame.shape[:2]:
            raise CeusError(f"{mask_rel}: the mask is {mask.shape[-1]}x{mask.shape[-2]} px but the video is "
                            f"{frame.shape[1]}x{frame.shape[0]} px")
        if mask is not None and mask.ndim == 3:
            mask = mask[idx] if idx < len(mask) else None
        return grey(frame), idx, t, mask
    return key_frame(path, mask)


def training_rows(df: pd.DataFrame) -> list[tuple[dict, str]]:
    """(row, modality) of every training-split picture with a mask: test-split masks never train the segmenter."""
    if "split" not in df.columns:
        raise CeusError("the manifest has no 'split' column: split it first (`ceusfusion split`), so that "
                        "no test-split mask trains the segmenter")
    df = df.assign(group=groups_of(df))
    out = []
    for row in df[df["split"].astype(str).str.strip() == "train"].to_dict(orient="records"):
        for m in MODALITIES:
            if has(row, m) and has(row, f"{m}_mask"):
                out.append((row, m))
    return out


def has(row: dict, col: str) -> bool:
    """The row holds a non-empty text in ``col`` (an empty CSV cell reads as NaN)."""
    v = row.get(col)
    return isinstance(v, str) and bool(v.strip())


def mask_box(s: Sample) -> Box:
    b = bbox(s.mask)
    if b is None:
        raise CaseError(s.case_id, str(s.source), "mask is empty on the chosen frame")
    return b
