"""Still images: PNG, JPG, BMP, TIFF through Pillow; DICOM through pydicom.

The size in the header is checked before any pixel is decoded (``open_still``),
so a decompression bomb is one line naming the file, never an allocation.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ceusfusion.core.errors import CeusError
from ceusfusion.io.dicom import dicom_cine_header, iter_dicom_frames
from ceusfusion.io.filetypes import IMAGE_SUFFIXES, MAX_PIXELS, check_file, check_pixels, kind_of


def read_image(path: str | Path) -> np.ndarray:
    """Read a still as uint8, (H, W) for grey or (H, W, 3) for colour."""
    path = Path(path)
    check_file(path)
    kind = kind_of(path, IMAGE_SUFFIXES)
    if kind is None:
        raise CeusError(f"{path}: unknown image type (expected one of {', '.join(IMAGE_SUFFIXES)})")
    arr = _first_dicom_frame(path) if kind in (".dcm", ".dicom") else _pillow_image(path)
    if arr.ndim == 3 and arr.shape[2] == 3 and _is_grey(arr):
        arr = arr[..., 0]
    return np.ascontiguousarray(arr)


def _first_dicom_frame(path: Path) -> np.ndarray:
    """The first frame only: a cine given as a still is not decoded whole."""
    dicom_cine_header(path, timing=False)  # the size check, from the header
    for arr in iter_dicom_frames(path):
        return arr
    raise CeusError(f"{path}: DICOM holds no frame")


def _pillow_image(path: Path) -> np.ndarray:
    try:
        with open_still(path, "image") as im:
            im.load()
            if im.mode in ("L", "I;16", "I", "F"):
                return _to_uint8(np.asarray(im))
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CeusError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from None


def open_still(path: Path, what: str) -> Image.Image:
    """Open with Pillow (header only) and check the size before the caller decodes.

    Pillow's own bomb check (a warning from 89 MP, an error from 179 MP) becomes our one line.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" declares {int(found.group(1)) / 1e6:.1f} MP," if found else " is"
        raise CeusError(f"{path}: {what} header{size} over the limit of {MAX_PIXELS / 1e6:.0f} MP "
                        f"(a decompression bomb, or not an ultrasound {what})") from None
    try:
        check_pixels(path, im.width, im.height, what)
    except CeusError:
        im.close()
        raise
    return im


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
