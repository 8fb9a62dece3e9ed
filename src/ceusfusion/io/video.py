"""Videos: AVI / MP4 / MOV / GIF through PyAV (streamed), DICOM cines through pydicom.

Frame times come from presentation timestamps (variable frame rate exists),
and frames are decoded one at a time so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CeusError
from .filetypes import VIDEO_SUFFIXES, kind_of


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    n_frames: int | None  # from the header; may differ from what decodes


def _check(path: Path) -> str:
    if not path.is_file():
        raise CeusError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise CeusError(f"{path}: empty file (0 bytes)")
    kind = kind_of(path, VIDEO_SUFFIXES)
    if kind is None:
        raise CeusError(f"{path}: unknown video type (expected one of {', '.join(VIDEO_SUFFIXES)})")
    return kind


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # av.error.* (InvalidDataError, ...)
        raise CeusError(f"{path}: cannot open video ({exc.__class__.__name__}: {str(exc)[:160]})") from None
    if not container.streams.video:
        container.close()
        raise CeusError(f"{path}: no video stream")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """Frame size and timing, decoding the first frame to be sure the file is readable."""
    path = Path(path)
    if _check(path) in (".dcm", ".dicom"):
        from .dicom import read_dicom_frames

        frames, times = read_dicom_frames(path)
        n = frames.shape[0]
        dur = float(times[-1]) if times is not None and n > 1 else None
        fps = (n - 1) / dur if dur else None
        return VideoInfo(frames.shape[2], frames.shape[1], fps, dur, n)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except Exception as exc:
            raise CeusError(f"{path}: cannot decode video ({exc.__class__.__name__}: {str(exc)[:160]})") from None
        if first is None:
            raise CeusError(f"{path}: video holds no decodable frame")
        fps = float(stream.average_rate) if stream.average_rate else None
        dur = None
        if stream.duration is not None and stream.time_base is not None:
            dur = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            dur = container.duration / 1_000_000
        return VideoInfo(first.width, first.height, fps, dur, stream.frames or None)
    finally:
        container.close()


def iter_frames(path: str | Path, gray: bool = True) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time_s, frame) for every frame, streamed; time from the presentation timestamp."""
    path = Path(path)
    if _check(path) in (".dcm", ".dicom"):
        from .dicom import read_dicom_frames

        frames, times = read_dicom_frames(path)
        if times is None:
            times = np.zeros(1)
        for t, f in zip(times, frames):
            if gray and f.ndim == 3:
                f = _rgb_to_gray(f)
            yield float(t), f
        return
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fmt = "gray" if gray else "rgb24"
        t0 = None
        k = 0
        fps = float(stream.average_rate) if stream.average_rate else 25.0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.pts is not None else None
                if t is None:
                    t = k / fps
                if t0 is None:
                    t0 = t
                yield float(t - t0), frame.to_ndarray(format=fmt)
                k += 1
        except CeusError:
            raise
        except Exception as exc:
            if k == 0:
                raise CeusError(f"{path}: cannot decode video ({exc.__class__.__name__}: {str(exc)[:160]})") from None
            # a truncated tail: keep what decoded
    finally:
        container.close()


def _rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    return np.round(rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
