"""What a page shows for drawing a box: the still, one video frame, or frames sampled through the clip (the
annotate page's slider), in the file's own pixels.

A browser shows neither DICOM nor most ultrasound AVIs, so the server decodes them with the package's
readers (the same checks as ``predict``) and the page draws the box over this picture; the box's
coordinates are the file's pixels, which is what :func:`ceusfusion.serve.uploads.masks_from_boxes` expects.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ceusfusion.io.image import read_image
from ceusfusion.io.video import VideoStream


def png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def video_frame(path: Path) -> tuple[np.ndarray, float]:
    """The frame at half the video's duration (the nodule is enhanced by then in most CEUS clips), and its time."""
    with VideoStream(path, strict=False) as vs:
        target = (vs.info.duration_s or 0.0) / 2
        frame = None
        for f in vs:
            frame = f
            if f.time >= target:
                break
        return frame.to_array(gray=False), float(frame.time)


def preview(path: Path, kind: str) -> dict:
    """``{"width", "height", "time", "png"}`` of the still (``kind`` "image") or a video frame ("video")."""
    if kind == "image":
        arr, t = read_image(path), None
    else:
        arr, t = video_frame(path)
    h, w = arr.shape[:2]
    return {"kind": kind, "width": int(w), "height": int(h), "time": t, "png": png_data_url(png_bytes(arr))}


def jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    """A frame to look at (a slider's worth of them stays small); its pixels grid is the file's."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).convert("RGB" if arr.ndim == 3 else "L").save(buf, format="JPEG",
                                                                                           quality=quality)
    return buf.getvalue()


@dataclass
class Clip:
    """Frames sampled evenly through a clip: ``times`` (s from the first frame), ``frames`` (JPEG bytes)."""

    width: int
    height: int
    times: list[float]
    frames: list[bytes]
    stride: int  # every ``stride``-th decoded frame was kept


def clip_frames(path: Path, limit: int = 240) -> Clip:
    """At most ``limit`` frames of the clip, every k-th, decoded once in one pass (the header's frame count
    sets k; where it under-counts, every other kept frame is dropped and k doubles), encoded as they come so
    that a long clip never sits in memory decoded."""
    kept: list[tuple[float, bytes]] = []
    with VideoStream(path, strict=False) as vs:
        stride = max(1, math.ceil((vs.info.n_frames or 0) / limit))
        width, height = vs.info.width, vs.info.height
        for f in vs:
            if f.index % stride:
                continue
            arr = f.to_array(gray=False)
            height, width = arr.shape[:2]
            kept.append((float(f.time), jpeg(arr)))
            if len(kept) > limit:
                kept, stride = kept[::2], stride * 2
    return Clip(int(width), int(height), [t for t, _ in kept], [b for _, b in kept], stride)
