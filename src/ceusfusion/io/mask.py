"""Masks: NIfTI / NRRD / MHA through SimpleITK, PNG/BMP/TIFF through Pillow.

Axis convention: ITK-SNAP opens a 2-D still as a 1-slice volume and saves its
segmentation through ITK. ``SimpleITK.GetArrayFromImage`` returns that volume
as (z, y, x) = (slice, row, column), the same row/column order in which a
numpy image is indexed, so a mask drawn on an image lands on the same pixels.
(nibabel would return (x, y, z), i.e. the transpose; we never use it.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, UnidentifiedImageError

from ceusfusion.core.errors import CeusError
from ceusfusion.io.filetypes import MASK_SUFFIXES, full_suffix


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as bool: (H, W) for one 2-D mask, (T, H, W) for a mask per frame."""
    path = Path(path)
    if not path.is_file():
        raise CeusError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise CeusError(f"{path}: empty file (0 bytes)")
    suffix = full_suffix(path)
    if suffix not in MASK_SUFFIXES:
        raise CeusError(f"{path}: unknown mask type (expected one of {', '.join(MASK_SUFFIXES)})")
    if suffix in (".png", ".bmp", ".tif", ".tiff"):

        try:
            with Image.open(path) as im:
                arr = np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise CeusError(f"{path}: cannot decode mask ({exc.__class__.__name__}: {exc})") from None
        if arr.ndim == 3:  # colour-coded labels: any non-black pixel is foreground
            arr = arr[..., :3].max(axis=2)
    else:

        try:
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
            raise CeusError(f"{path}: cannot read mask ({first[:160]})") from None
        if arr.ndim == 4 and arr.shape[-1] in (3, 4):  # vector pixels
            arr = arr[..., :3].max(axis=-1)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
    if arr.ndim not in (2, 3):
        raise CeusError(f"{path}: mask has {arr.ndim} dimensions, expected 2 (H, W) or 3 (frames, H, W)")
    return arr > 0
