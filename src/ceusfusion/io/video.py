"""Videos: AVI / MP4 / MOV / GIF through PyAV (streamed), DICOM cines through pydicom.

Frame times come from presentation timestamps (variable frame rate exists),
relative to the first frame. Frames are decoded one at a time and handed out
as light :class:`Frame` handles: converting a frame to numpy (the expensive
part after decoding) happens only for the frames a caller keeps, and the
luma plane of YUV video is read without any conversion. Memory stays bounded
by what the caller keeps, not by the length of the video.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from ceusfusion.core.errors import CeusError
from ceusfusion.io.dicom import dicom_cine_header, iter_dicom_frames
from ceusfusion.io.filetypes import VIDEO_SUFFIXES, check_file, check_pixels, kind_of

# pixel formats whose first plane is 8-bit luma, readable without conversion
_LUMA_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv411p", "yuv440p", "yuvj440p", "nv12", "nv21", "gray"}
# a file decoding to fewer than this share of the frames its header declares is truncated
TRUNCATION_RATIO = 0.8


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    n_frames: int | None  # from the header; may differ from what decodes


class Frame:
    """One decoded frame: ``index`` (decode order), ``time`` (s from the first frame), lazy pixels."""
    __slots__ = ("index", "time", "_av", "_arr")

    def __init__(self, index: int, time: float, av_frame=None, array: np.ndarray | None = None):
        self.index = index
        self.time = time
        self._av = av_frame
        self._arr = array

    @property
    def shape(self) -> tuple[int, int]:
        if self._av is not None:
            return (self._av.height, self._av.width)
        return self._arr.shape[:2]

    def luma(self) -> np.ndarray:
        """Grey (H, W) uint8, a zero-copy view of the Y plane where the format allows."""
        if self._av is None:
            return _rgb_to_gray(self._arr) if self._arr.ndim == 3 else self._arr
        f = self._av
        if f.format.name in _LUMA_FORMATS:
            plane = f.planes[0]
            buf = np.frombuffer(plane, np.uint8)
            return buf.reshape(f.height, plane.line_size)[:, : f.width]
        return f.to_ndarray(format="gray")

    def luma_to_full(self) -> tuple[float, float]:
        """(scale, offset) mapping :meth:`luma` values to full-range grey: limited-range video has Y in 16..235."""
        f = self._av
        if f is None or f.format.name == "gray" or f.format.name.startswith("yuvj") or f.format.name not in _LUMA_FORMATS:
            return 1.0, 0.0
        if int(getattr(f, "color_range", 0) or 0) == 2:  # AVCOL_RANGE_JPEG
            return 1.0, 0.0
        return 255.0 / 219.0, -16.0 * 255.0 / 219.0

    def to_array(self, gray: bool) -> np.ndarray:
        """uint8 (H, W) when ``gray`` else (H, W, 3) RGB (a copy the caller owns)."""
        if self._av is None:
            a = self._arr
            if gray:
                return _rgb_to_gray(a) if a.ndim == 3 else a.copy()
            return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3].copy()
        return self._av.to_ndarray(format="gray" if gray else "rgb24")


def _check(path: Path) -> str:
    check_file(path)
    kind = kind_of(path, VIDEO_SUFFIXES)
    if kind is None:
        raise CeusError(f"{path}: unknown video type (expected one of {', '.join(VIDEO_SUFFIXES)})")
    return kind


def _open(path: Path):

    try:
        container = av.open(str(path))
    except Exception as exc:  # av.error.* (InvalidDataError, ...)
        msg = str(exc).replace(f": '{path}'", "").replace(str(path), "")
        raise CeusError(f"{path}: cannot open video ({exc.__class__.__name__}: {msg[:160]})") from None
    if not container.streams.video:
        container.close()
        raise CeusError(f"{path}: no video stream (not a video, or mislabelled)")
    fmt = container.format.name
    if (fmt.endswith("_pipe") and fmt != "gif_pipe") or fmt == "image2":
        container.close()
        raise CeusError(f"{path}: is a still image ({fmt.replace('_pipe', '')}), not a video (mislabelled file)")
    try:
        _check_header(path, container)
    except CeusError:
        container.close()
        raise
    return container


def _check_header(path: Path, container) -> None:
    """Refuse, before decoding, frames larger than any ultrasound frame and an AVI without a frame rate."""
    cc = container.streams.video[0].codec_context
    if cc.width and cc.height:
        check_pixels(path, cc.width, cc.height, "video frame")
    if container.format.name == "avi" and avi_without_rate(path):
        raise CeusError(f"{path}: the AVI header gives no frame rate (rate 0, no frame period), so every frame time "
                        "would be a guess at 25 fps: frame timing unusable (export the video again with its frame rate)")


def avi_without_rate(path: Path, head: int = 1 << 16) -> bool:
    """True when the video stream header's rate or scale is 0 and the main header gives no frame period.

    FFmpeg then assumes 25 fps without a word (a 10 s video at 4 fps became 1.56 s); with a frame
    period it recovers the true rate, which is fine.
    """
    with open(path, "rb") as f:
        b = f.read(head)
    avih = b.find(b"avih")
    period = struct.unpack_from("<I", b, avih + 8)[0] if 0 <= avih <= len(b) - 12 else 0
    k = b.find(b"strh")
    while 0 <= k <= len(b) - 36:
        if b[k + 8 : k + 12] == b"vids":
            scale, rate = struct.unpack_from("<II", b, k + 28)
            return (scale == 0 or rate == 0) and period == 0
        k = b.find(b"strh", k + 4)
    return False


def _header(container) -> tuple[float | None, float | None, int | None]:
    stream = container.streams.video[0]
    fps = float(stream.average_rate) if stream.average_rate else None
    dur = None
    if stream.duration is not None and stream.time_base is not None:
        dur = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        dur = container.duration / 1_000_000
    return fps, dur, (stream.frames or None)


def probe_video(path: str | Path) -> VideoInfo:
    """Frame size and timing, decoding the first frame to be sure the file is readable."""
    path = Path(path)
    if _check(path) in (".dcm", ".dicom"):

        h = dicom_cine_header(path)
        return VideoInfo(h.width, h.height, h.fps, h.duration_s, h.n_frames)
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
        fps, dur, n = _header(container)
        return VideoInfo(first.width, first.height, fps, dur, n)
    finally:
        container.close()


def video_header(path: str | Path) -> VideoInfo:
    """Frame size, rate and count from the header, nothing decoded: what a mask must fit."""
    with VideoStream(path) as vs:
        return vs.info


class VideoStream:
    """Open a video, read its header hints (``info``), then iterate :class:`Frame` handles once.

    ``strict`` (default) turns a decode error after the first frame, or a file
    that decodes to far fewer frames than its header declares, into a
    CeusError (corrupt / truncated file); otherwise what decoded is kept.
    """

    def __init__(self, path: str | Path, strict: bool = True, threads: bool = True):
        self.path = Path(path)
        self.strict = strict
        self._dicom = _check(self.path) in (".dcm", ".dicom")
        self._container = None
        self.n_decoded = 0
        self.repaired_times = 0  # non-monotonic timestamps that were put back in order
        if self._dicom:

            self._dh = dicom_cine_header(self.path)
            self.info = VideoInfo(self._dh.width, self._dh.height, self._dh.fps, self._dh.duration_s, self._dh.n_frames)
        else:
            self._container = _open(self.path)
            stream = self._container.streams.video[0]
            if threads:
                stream.thread_type = "AUTO"
            fps, dur, n = _header(self._container)
            cc = stream.codec_context
            self.info = VideoInfo(cc.width, cc.height, fps, dur, n)

    def __enter__(self) -> "VideoStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __iter__(self) -> Iterator[Frame]:
        if self._dicom:
            yield from self._iter_dicom()
        else:
            yield from self._iter_av()

    def _iter_dicom(self) -> Iterator[Frame]:

        times = self._dh.times
        for k, arr in enumerate(iter_dicom_frames(self.path)):
            self.n_decoded = k + 1
            yield Frame(k, float(times[k]) if times is not None else 0.0, array=arr)

    def _iter_av(self) -> Iterator[Frame]:
        path, container = self.path, self._container
        stream = container.streams.video[0]
        fps = self.info.fps
        t0 = None
        prev = None
        k = 0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.pts is not None else None
                if t is None:
                    if not fps:
                        raise CeusError(f"{path}: frame {k} has no timestamp and the header no frame rate: "
                                        "frame timing unusable")
                    t = k / fps if t0 is None else (prev + t0) + 1.0 / fps
                if t0 is None:
                    t0 = t
                t = float(t - t0)
                if prev is not None and t <= prev:  # broken index: keep presentation order monotonic
                    t = prev + 1.0 / (fps or 25.0)
                    self.repaired_times += 1
                prev = t
                self.n_decoded = k + 1
                yield Frame(k, t, av_frame=frame)
                k += 1
        except CeusError:
            raise
        except GeneratorExit:
            raise
        except Exception as exc:
            msg = f"{exc.__class__.__name__}: {str(exc)[:160]}"
            if k == 0:
                raise CeusError(f"{path}: cannot decode video ({msg})") from None
            if self.strict:
                raise CeusError(f"{path}: corrupt or truncated video (decode error after frame {k}: {msg})") from None
            return
        if k == 0:
            raise CeusError(f"{path}: video holds no decodable frame")
        declared = self.info.n_frames
        if self.strict and declared and k < TRUNCATION_RATIO * declared:
            raise CeusError(f"{path}: truncated video (header declares {declared} frames, only {k} decode)")


def iter_frames(path: str | Path, gray: bool = True) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time_s, frame) for every frame, streamed; time from the presentation timestamp."""
    with VideoStream(path, strict=False) as vs:
        for f in vs:
            yield f.time, f.to_array(gray)


def _rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    return np.round(rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


# ----------------------------------------------------------------------------- a few frames, for fingerprints


def frames_at(path: str | Path, fractions, run: int = 1) -> list[list[np.ndarray]]:
    """Grey (luma) frames at relative positions ``fractions`` (0..1) of a video, ``run`` consecutive
    frames from each (fewer at the end), decoding only near each: by time between the first and the
    last frame (from the header), seeking to the keyframe before each position (PyAV); by frame index
    in one streamed pass for DICOM cines, a header without a duration, or a seek the index gets wrong.
    For content fingerprints (``models.pretrain.provenance``), so a re-encoded copy gives near the same
    frames. Copies the caller owns."""
    path = Path(path)
    qs = [min(max(float(q), 0.0), 1.0) for q in fractions]
    if _check(path) not in (".dcm", ".dicom"):
        got = _frames_by_seek(path, qs, run)
        if got is not None:
            return got
    return _frames_by_index(path, qs, run)


def _frames_by_seek(path: Path, fractions: list[float], run: int) -> list[list[np.ndarray]] | None:
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps, dur, _ = _header(container)
        if not dur or stream.time_base is None:
            return None
        start, tb, step = stream.start_time or 0, stream.time_base, 1.0 / fps if fps else 0.0
        span = dur - step if dur > step else dur  # the last frame's time: the duration runs one frame past it
        out = []
        for q in fractions:
            container.seek(start + int(q * span / tb), stream=stream, backward=True)
            frames = _decode_from(container, stream, start, q * span, step, run)
            if not frames:
                return None
            out.append(frames)
        return out
    except Exception:  # a container PyAV cannot seek in: the streamed pass instead
        return None
    finally:
        container.close()


def _decode_from(container, stream, start: int, target: float, step: float, run: int) -> list[np.ndarray]:
    """After a seek: ``run`` frames from the first at ``target`` s after the start (within half a frame),
    or the last one when the stream ends first; empty when the seek landed past the target or frames
    lack timestamps."""
    kept, last = [], None
    for frame in container.decode(stream):
        if frame.pts is None:
            return []
        t = float((frame.pts - start) * stream.time_base)
        if last is None and not kept and t > target + step:
            return []
        if kept or t >= target - step / 2:
            kept.append(np.array(Frame(0, t, av_frame=frame).luma()))
            if len(kept) == run:
                break
        else:
            last = frame
    if not kept and last is not None:
        kept.append(np.array(Frame(0, 0.0, av_frame=last).luma()))
    return kept


def _frames_by_index(path: Path, fractions: list[float], run: int) -> list[list[np.ndarray]]:
    """The frames at ``fractions`` of the decoded frame count: one pass to count, one to keep."""
    with VideoStream(path, strict=False) as vs:
        n = sum(1 for _ in vs)
    first = [int(round(q * (n - 1))) for q in fractions]
    out: list[list[np.ndarray]] = [[] for _ in fractions]
    with VideoStream(path, strict=False) as vs:
        for f in vs:
            for i, a in enumerate(first):
                if a <= f.index < a + run:
                    out[i].append(np.array(f.luma()))
            if f.index >= max(first) + run - 1:
                break
    return out
