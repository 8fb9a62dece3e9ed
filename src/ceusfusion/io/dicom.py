"""DICOM stills and multi-frame cines through pydicom.

Only pixel data and frame timing leave this module: names, IDs, birth dates
and accession numbers are never returned, logged or copied anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CeusError


def read_dicom_frames(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (frames, times_s): frames uint8 (T, H, W) or (T, H, W, 3); times or None for a still."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt / unsupported data
        raise CeusError(f"{path}: cannot decode DICOM ({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]})") from None
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if n == 1:
        arr = arr[None]
    if samples == 3 and photometric.startswith("YBR") and not getattr(ds, "_pixel_array_rgb", False):
        try:
            from pydicom.pixels import convert_color_space
        except ImportError:  # pydicom < 3
            from pydicom.pixel_data_handlers.util import convert_color_space
        arr = convert_color_space(arr, photometric, "RGB")
    if photometric == "MONOCHROME1":
        arr = arr.max() - arr
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        arr = np.zeros(a.shape, np.uint8) if hi <= lo else np.round((a - lo) / (hi - lo) * 255).astype(np.uint8)
    times = dicom_frame_times(ds, arr.shape[0]) if n > 1 else None
    return np.ascontiguousarray(arr), times


def dicom_frame_times(ds, n: int) -> np.ndarray:
    """Frame times in seconds from FrameTimeVector, FrameTime, CineRate or RecommendedDisplayFrameRate."""
    vec = getattr(ds, "FrameTimeVector", None)
    if vec is not None and len(vec) == n:
        # FrameTimeVector holds increments in ms; the first is usually 0
        return np.cumsum(np.asarray([float(v) for v in vec])) / 1000.0
    ft = getattr(ds, "FrameTime", None)
    if ft:
        return np.arange(n) * float(ft) / 1000.0
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = getattr(ds, key, None)
        if rate:
            return np.arange(n) / float(rate)
    raise CeusError("DICOM cine has no frame timing (FrameTimeVector, FrameTime or CineRate)")
