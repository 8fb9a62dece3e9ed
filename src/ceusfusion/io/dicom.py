"""DICOM stills and multi-frame cines through pydicom.

Only pixel data and frame timing leave this module: names, IDs, birth dates
and accession numbers are never returned, logged or copied anywhere (error
messages name the file path and the problem only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pydicom
from pydicom.pixels import iter_pixels

from ceusfusion.core.errors import CeusError
from ceusfusion.io.filetypes import check_pixels, is_dicom


@dataclass(frozen=True)
class CineHeader:
    width: int
    height: int
    n_frames: int
    times: np.ndarray | None  # seconds, one per frame; None for a still
    fps: float | None
    duration_s: float | None


def _fail(path: Path, exc: Exception, what: str = "decode") -> CeusError:
    first = str(exc).splitlines()[0][:160] if str(exc) else ""
    return CeusError(f"{path}: cannot {what} DICOM ({exc.__class__.__name__}: {first})")


def dicom_cine_header(path: str | Path, timing: bool = True) -> CineHeader:
    """Frame size, count and timing from the header alone (no pixel decoding); ``timing=False`` for a still
    taken from a cine (its frame times do not matter)."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
        n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except Exception as exc:
        raise _fail(path, exc, "read") from None
    check_pixels(path, cols, rows, "DICOM frame")
    if n < 1:
        raise CeusError(f"{path}: DICOM NumberOfFrames is {n}")
    times = dicom_frame_times(ds, n, path) if n > 1 and timing else None
    dur = float(times[-1]) if times is not None else None
    fps = (n - 1) / dur if dur else None
    return CineHeader(cols, rows, n, times, fps, dur)


def _to_uint8(arr: np.ndarray, ds) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    bits = int(getattr(ds, "BitsStored", 16) or 16)
    a = arr.astype(np.float64)
    if getattr(ds, "PixelRepresentation", 0) == 1:
        a = a + 2 ** (bits - 1)
    return np.clip(np.round(a / (2**bits - 1) * 255), 0, 255).astype(np.uint8)


def iter_dicom_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield frames one at a time: uint8 (H, W) grey or (H, W, 3) RGB (YBR converted)."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:
        raise _fail(path, exc, "read") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    try:
        for arr in iter_pixels(str(path)):  # YBR_FULL(_422) -> RGB inside pydicom
            if photometric == "MONOCHROME1":
                arr = arr.max() - arr
            yield np.ascontiguousarray(_to_uint8(arr, ds))
    except CeusError:
        raise
    except Exception as exc:  # truncated pixel data, missing decoder, ...
        raise _fail(path, exc) from None


def read_dicom_frames(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (frames, times_s): frames uint8 (T, H, W) or (T, H, W, 3); times or None for a still."""
    header = dicom_cine_header(path)
    frames = list(iter_dicom_frames(path))
    if not frames:
        raise CeusError(f"{path}: DICOM holds no frame")
    return np.stack(frames), header.times


def dicom_frame_times(ds, n: int, path: str | Path = "DICOM") -> np.ndarray:
    """Frame times in seconds from FrameTimeVector, FrameTime, CineRate or RecommendedDisplayFrameRate.

    The first of these the file holds decides; times that are not positive and strictly increasing
    (a negative FrameTime, an all-zero vector) fail here with the tag and its value, instead of
    giving negative or equal times that the TIC fit and the keyframe grid would take at face value.
    """
    vec = getattr(ds, "FrameTimeVector", None)
    if vec is not None and len(vec) == n:
        # FrameTimeVector holds increments in ms; the first is usually 0
        inc = _numbers(vec, "FrameTimeVector", path)
        bad = np.flatnonzero(~(inc[1:] > 0))
        if bad.size:
            k = int(bad[0]) + 1
            raise _unusable(path, f"FrameTimeVector holds {inc[k]:g} ms between frames {k - 1} and {k}"
                            f"{' (all increments are 0)' if not inc.any() else ''}")
        t = np.cumsum(inc) / 1000.0
        return t - t[0]
    ft = getattr(ds, "FrameTime", None)
    if ft is not None and str(ft).strip() != "":
        step = float(_numbers([ft], "FrameTime", path)[0])
        if not step > 0:
            raise _unusable(path, f"FrameTime is {step:g} ms")
        return np.arange(n) * step / 1000.0
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = getattr(ds, key, None)
        if rate is not None and str(rate).strip() != "":
            r = float(_numbers([rate], key, path)[0])
            if not r > 0:
                raise _unusable(path, f"{key} is {r:g} frames/s")
            return np.arange(n) / r
    raise CeusError(f"{path}: DICOM cine has no frame timing (FrameTimeVector, FrameTime or CineRate)")


def _numbers(values, tag: str, path) -> np.ndarray:
    try:
        a = np.asarray([float(v) for v in values], np.float64)
    except (TypeError, ValueError):
        raise _unusable(path, f"{tag} is not a number") from None
    if not np.isfinite(a).all():
        raise _unusable(path, f"{tag} holds a non-finite value")
    return a


def _unusable(path, what: str) -> CeusError:
    return CeusError(f"{path}: DICOM {what}; frame times must be positive and increasing: frame timing unusable")


def pixel_spacing_mm(path: str | Path) -> float | None:
    """The side of a square pixel in mm from a DICOM header (PixelSpacing, else the first ultrasound
    region's PhysicalDeltaX/Y in cm); None for another file type, no spacing, or non-square pixels."""
    if not is_dicom(path):
        return None
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        if "PixelSpacing" in ds:
            dy, dx = (float(v) for v in ds.PixelSpacing)
        else:
            region = ds.SequenceOfUltrasoundRegions[0]
            if int(region.PhysicalUnitsXDirection) != 3 or int(region.PhysicalUnitsYDirection) != 3:  # 3: cm
                return None
            dy, dx = 10 * float(region.PhysicalDeltaY), 10 * float(region.PhysicalDeltaX)
    except Exception:  # a header without a usable spacing: the features stay in pixels, as recorded
        return None
    return dy if dy > 0 and abs(dy - dx) <= 1e-3 * dy else None
