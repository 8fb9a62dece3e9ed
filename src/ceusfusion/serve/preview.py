"""What the page shows for drawing a box: the still, or one video frame, as PNG in the file's own pixels.

A browser shows neither DICOM nor most ultrasound AVIs, so the server decodes them with the package's
readers (the same checks as ``predict``) and the page draws the box over this picture; the box's
coordinates are the file's pixels, which is what :func:`ceusfusion.serve.uploads.masks_from_boxes` expects.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ceusfusion.io.image import read_image
from ceusfusion.io.video import VideoStream


def png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _png(arr: np.ndarray) -> bytes:
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
    return {"kind": kind, "width": int(w), "height": int(h), "time": t, "png": png_data_url(_png(arr))}
