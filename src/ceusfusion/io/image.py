"""Still images: PNG, JPG, BMP, TIFF through Pillow; DICOM through pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ceusfusion.core.errors import CeusError
from ceusfusion.io.dicom import read_dicom_frames
from ceusfusion.io.filetypes import IMAGE_SUFFIXES, kind_of


def read_image(path: str | Path) -> np.ndarray:
    """Read a still as uint8, (H, W) for grey or (H, W, 3) for colour."""
    path = Path(path)
    if not path.is_file():
        raise CeusError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise CeusError(f"{path}: empty file (0 bytes)")
    kind = kind_of(path, IMAGE_SUFFIXES)
    if kind is None:
        raise CeusError(f"{path}: unknown image type (expected one of {', '.join(IMAGE_SUFFIXES)})")
    if kind in (".dcm", ".dicom"):

        frames, _ = read_dicom_frames(path)
        if frames.shape[0] < 1:
            raise CeusError(f"{path}: DICOM holds no frame")
        arr = frames[0]
    else:

        try:
            with Image.open(path) as im:
                im.load()
                if im.mode in ("L", "I;16", "I", "F"):
                    arr = _to_uint8(np.asarray(im))
                else:
                    arr = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise CeusError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from None
    if arr.ndim == 3 and arr.shape[2] == 3 and _is_grey(arr):
        arr = arr[..., 0]
    return np.ascontiguousarray(arr)


def _is_grey(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) / (hi - lo) * 255).astype(np.uint8)
