"""Masks: NIfTI / NRRD / MHA through SimpleITK, PNG/BMP/TIFF through Pillow.

Axis convention: ITK-SNAP opens a 2-D still as a 1-slice volume and saves its
segmentation through ITK. ``SimpleITK.GetArrayFromImage`` returns that volume
as (z, y, x) = (slice, row, column), the same row/column order in which a
numpy image is indexed, so a mask drawn on an image lands on the same pixels.
(nibabel would return (x, y, z), i.e. the transpose; we never use it.)

The size is read from the header first and checked against a limit and
against the picture the mask belongs to, before any voxel is decoded: a
compressed mask of a few hundred bytes can declare gigabytes of voxels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import UnidentifiedImageError

from ceusfusion.core.errors import CeusError
from ceusfusion.io.filetypes import MASK_SUFFIXES, MAX_MASK_VOXELS, check_file, full_suffix
from ceusfusion.io.image import open_still

PILLOW_MASKS = (".png", ".bmp", ".tif", ".tiff")


def read_mask(path: str | Path, shape: tuple[int, int] | None = None, of: str | None = None,
              frames: int | None = None) -> np.ndarray:
    """Read a mask as bool: (H, W) for one 2-D mask, (T, H, W) for a mask per frame.

    Checked from the header before decoding: the voxel limit; ``shape`` (H, W) of the picture it
    belongs to, ``of`` "image" (one slice) or "video" (not many more slices than the video's
    ``frames`` from its header; the exact count is checked once the video is decoded).
    """
    path = Path(path)
    check_file(path)
    suffix = full_suffix(path)
    if suffix not in MASK_SUFFIXES:
        raise CeusError(f"{path}: unknown mask type (expected one of {', '.join(MASK_SUFFIXES)})")
    if suffix in PILLOW_MASKS:
        return _pillow_mask(path, shape, of)
    reader, dims = volume_header(path)
    check_mask_dims(path, dims, shape, of, frames)
    arr = decode_volume(reader, path)
    if arr.ndim == 4 and arr.shape[-1] in (3, 4):  # vector pixels
        arr = arr[..., :3].max(axis=-1)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr > 0


def _pillow_mask(path: Path, shape: tuple[int, int] | None, of: str) -> np.ndarray:
    try:
        with open_still(path, "mask") as im:
            check_mask_dims(path, (im.height, im.width), shape, of, None)
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CeusError(f"{path}: cannot decode mask ({exc.__class__.__name__}: {exc})") from None
    if arr.ndim == 3:  # colour-coded labels: any non-black pixel is foreground
        arr = arr[..., :3].max(axis=2)
    return arr > 0


def volume_header(path: Path) -> tuple[sitk.ImageFileReader, tuple[int, ...]]:
    """The reader, with the header read, and the mask's dimensions in numpy order: (H, W) or (slices, H, W)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _unreadable(path, exc) from None
    dims = tuple(int(v) for v in reversed(reader.GetSize()))
    if reader.GetNumberOfComponents() > 4:
        raise CeusError(f"{path}: mask has {reader.GetNumberOfComponents()} values per voxel, expected 1 (or RGB)")
    if len(dims) == 3 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) not in (2, 3):
        raise CeusError(f"{path}: mask has {len(dims)} dimensions, expected 2 (H, W) or 3 (frames, H, W)")
    return reader, dims


def check_mask_dims(path: Path, dims: tuple[int, ...], shape: tuple[int, int] | None, of: str | None,
                    frames: int | None) -> None:
    """The header's dimensions against the voxel limit, the picture's size and its frame count."""
    n = math.prod(dims)
    if n > MAX_MASK_VOXELS:
        slices = f" x {dims[0]} slices" if len(dims) == 3 else ""
        raise CeusError(f"{path}: mask header declares {dims[-1]}x{dims[-2]} px{slices} ({n / 1e6:.0f} M voxels), over the "
                        f"limit of {MAX_MASK_VOXELS / 1e6:.0f} M (a decompression bomb, or not a mask)")
    if shape is not None and tuple(dims[-2:]) != tuple(shape):
        raise CeusError(f"{path}: mask is {dims[-1]}x{dims[-2]} px but the {of or 'picture'} is {shape[1]}x{shape[0]} px")
    if len(dims) == 3 and of == "image":
        raise CeusError(f"{path}: mask has {dims[0]} slices, expected one (a still has one)")
    if len(dims) == 3 and frames and dims[0] > frames + max(2, frames // 4):
        raise CeusError(f"{path}: mask has {dims[0]} slices but the video has {frames} frames")


def decode_volume(reader: sitk.ImageFileReader, path: Path) -> np.ndarray:
    """Every voxel, once the header has passed the checks."""
    try:
        return sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: RuntimeError) -> CeusError:
    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
    return CeusError(f"{path}: cannot read mask ({first[:160]})")
