"""Which videos, and their frames: video listing, streamed frame extraction, the frame bank
(cached in ``WEIGHTS.ckpt/frames.npz``) and the intra-video partner windows of the positive pairs.

Labels are never read here: the manifest is read with only ``case_id``, ``video`` and ``split``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import atomic_path
from ceusfusion.ingest.roi import crop_resize, fixed_or_whole, square_box
from ceusfusion.io.filetypes import VIDEO_SUFFIXES, full_suffix, kind_of
from ceusfusion.io.video import VideoStream

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("case_id", "video", "split")  # the only columns pretraining reads


# ----------------------------------------------------------------------------- which videos


def read_columns(manifest: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Only ``columns`` of a cohort manifest (stripped names, strings, "" as missing): pretraining must not
    read labels or covariates."""
    if not manifest.is_file():
        raise CeusError(f"{manifest}: cohort manifest not found")
    try:
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False, na_values=[""],
                         usecols=lambda c: c.strip() in columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise CeusError(f"{manifest}: cannot read the manifest as CSV ({str(exc).splitlines()[0]})") from None
    df.columns = [c.strip() for c in df.columns]
    return df


def manifest_videos(cohort: str | Path, splits: tuple = ("train",)) -> list[tuple[str, Path]]:
    """(case_id, video path) of the cohort's rows in ``splits``; reads ONLY case_id, video, split.

    A manifest without a split column has no test split: every row is used.
    """
    cohort = Path(cohort)
    df = read_columns(cohort, MANIFEST_COLUMNS)
    for col in ("case_id", "video"):
        if col not in df.columns:
            raise CeusError(f"{cohort}: column {col!r} is missing (pretraining needs case_id and video)")
    if "split" in df.columns:
        df = df[df["split"].fillna("").str.strip().isin(splits)]
    else:
        log.warning("%s has no split column: every case is used for pretraining", cohort)
    out = []
    for cid, rel in zip(df["case_id"], df["video"]):
        if pd.isna(rel) or not str(rel).strip():
            continue
        p = Path(str(rel).strip())
        out.append((str(cid), p if p.is_absolute() else cohort.parent / p))
    return out


def folder_videos(folder: str | Path) -> list[tuple[str, Path]]:
    """Every video under ``folder`` (recursive, any video suffix, suffix-less DICOM), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CeusError(f"--unlabeled {folder}: not a folder")
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and \
                (full_suffix(p) in VIDEO_SUFFIXES or (full_suffix(p) == "" and kind_of(p, (".dcm",)))):
            out.append((f"{folder.name}/{p.relative_to(folder).as_posix()}", p))
    return out


# ----------------------------------------------------------------------------- frames


def extract_frames(path: str | Path, size: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_frames`` grey frames evenly spread in time: (uint8 (n, size, size), times (n,)).

    Decoding is streamed; the header's frame count (or duration x fps) picks the
    frames to keep, so only those are converted and resized.
    """
    frames, times = [], []
    with VideoStream(path, strict=False) as vs:
        n = vs.info.n_frames
        if not n and vs.info.duration_s and vs.info.fps:
            n = round(vs.info.duration_s * vs.info.fps)
        keep = None
        if n and n > max_frames:
            keep = set(np.round(np.linspace(0, n - 1, max_frames)).astype(int).tolist())
        last = max(keep) if keep else None
        box = None
        for f in vs:
            if keep is not None:
                if f.index > last:
                    break
                if f.index not in keep:
                    continue
            if box is None:
                box = square_box(fixed_or_whole(f.shape, None), 0.0)
            frames.append(crop_resize(f.luma(), box, size))
            times.append(f.time)
    if not frames:
        raise CeusError(f"{path}: video holds no decodable frame")
    if len(frames) > max_frames:  # header without a usable frame count
        idx = np.round(np.linspace(0, len(frames) - 1, max_frames)).astype(int)
        frames, times = [frames[i] for i in idx], [times[i] for i in idx]
    return np.stack(frames), np.asarray(times, np.float64)


@dataclass
class FrameBank:
    """All kept frames, sorted by video then time."""

    frames: torch.Tensor   # uint8 (N, S, S)
    times: np.ndarray      # float (N,)
    video: np.ndarray      # int (N,) index into ``videos``
    videos: list[str]      # video ids (case_id, or folder/relative path)
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.video)


def _fingerprint(videos: list[tuple[str, Path]], size: int, fpv: int) -> str:
    items = []
    for vid, p in videos:
        try:
            st = p.stat()
            items.append([vid, str(p.resolve()), st.st_size, st.st_mtime_ns])
        except OSError:
            items.append([vid, str(p), None, None])
    return hashlib.sha256(json.dumps([items, size, fpv]).encode()).hexdigest()[:16]


def _cached_bank(cache: Path, fingerprint: str, size: int) -> FrameBank | None:
    """The cached bank when it was built from the same videos and settings; None otherwise (an
    unreadable or foreign cache is ignored: the frames are extracted again)."""
    try:
        with np.load(cache, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta["fingerprint"] != fingerprint:
                return None
            frames, times, video, videos = z["frames"], z["times"], z["video"], meta["videos"]
            _check_bank(frames, times, video, videos, meta["skipped"], size)
            return FrameBank(torch.from_numpy(frames), times, video, videos, meta["skipped"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: unreadable frame cache, extracting again (%s)", cache, exc)
        return None


def _check_bank(frames: np.ndarray, times: np.ndarray, video: np.ndarray, videos, skipped, size: int) -> None:
    """Raise ValueError unless the arrays are a frame bank as :func:`build_bank` writes it (a foreign
    file with the right fingerprint must not reach training)."""
    n = len(frames)
    if frames.dtype != np.uint8 or frames.ndim != 3 or frames.shape[1:] != (size, size):
        raise ValueError(f"frames are {frames.dtype} {frames.shape}, expected uint8 (N, {size}, {size})")
    if times.shape != (n,) or video.shape != (n,) or times.dtype.kind != "f" or video.dtype.kind not in "iu":
        raise ValueError("times or video index do not match the frames")
    if not isinstance(videos, list) or not all(isinstance(v, str) for v in videos) or not isinstance(skipped, list):
        raise ValueError("video ids are not a list of names")
    if n and (video.min() < 0 or video.max() >= len(videos)):
        raise ValueError("video index outside the list of videos")


def build_bank(videos: list[tuple[str, Path]], size: int, frames_per_video: int, cache: Path | None = None,
               on_video: Callable[[int, int], None] | None = None) -> FrameBank:
    """Extract frames of every video; an unreadable video is skipped (listed in ``skipped``)."""
    fp = _fingerprint(videos, size, frames_per_video)
    if cache is not None and cache.is_file():
        bank = _cached_bank(cache, fp, size)
        if bank is not None:
            return bank
    arrays, times, vidx, ids, skipped = [], [], [], [], []
    for k, (vid, path) in enumerate(videos):
        try:
            fr, t = extract_frames(path, size, frames_per_video)
        except CeusError as exc:
            log.warning("skipped %s: %s", vid, exc)
            skipped.append({"video": vid, "problem": str(exc)})
            continue
        order = np.argsort(t, kind="stable")
        arrays.append(fr[order])
        times.append(t[order])
        vidx.append(np.full(len(t), len(ids)))
        ids.append(vid)
        if on_video:
            on_video(k + 1, len(videos))
    if not ids:
        raise CeusError("no readable video to pretrain on" + (f" ({skipped[0]['problem']})" if skipped else ""))
    bank = FrameBank(torch.from_numpy(np.concatenate(arrays)), np.concatenate(times), np.concatenate(vidx), ids, skipped)
    if cache is not None:
        meta = json.dumps({"fingerprint": fp, "videos": ids, "skipped": skipped})
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, frames=bank.frames.numpy(), times=bank.times, video=bank.video, meta=np.array(meta))
    return bank


# ----------------------------------------------------------------------------- positive pairs


def partner_windows(bank: FrameBank, max_gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """For each frame the index range [lo, hi) of frames of its video at most ``max_gap_s`` away."""
    lo = np.empty(len(bank), np.int64)
    hi = np.empty(len(bank), np.int64)
    starts = np.flatnonzero(np.r_[True, bank.video[1:] != bank.video[:-1]])
    ends = np.r_[starts[1:], len(bank)]
    for s, e in zip(starts, ends):
        t = bank.times[s:e]
        lo[s:e] = s + np.searchsorted(t, t - max_gap_s - 1e-9, side="left")
        hi[s:e] = s + np.searchsorted(t, t + max_gap_s + 1e-9, side="right")
    return lo, hi


def draw_partners(lo: np.ndarray, hi: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """A random other frame within each window (the frame itself when it is alone)."""
    n = len(lo)
    u = torch.rand(n, generator=gen, dtype=torch.float64).numpy()
    count = hi - lo
    r = np.floor(u * np.maximum(count - 1, 1)).astype(np.int64)
    self_pos = np.arange(n) - lo
    r = r + (r >= self_pos)
    return np.where(count > 1, lo + np.minimum(r, count - 1), np.arange(n))
