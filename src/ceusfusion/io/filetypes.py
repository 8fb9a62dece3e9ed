"""File-type recognition by suffix (DICOM by content too), and the checks every reader makes first.

``check_file`` turns each way a path can fail to be a readable file (missing,
a folder, a link loop, a FIFO, empty) into one line; ``check_pixels`` refuses
a picture whose header declares more pixels than any ultrasound frame has,
before a decoder allocates them (a decompression bomb is a few hundred bytes).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ceusfusion.core.errors import CeusError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
MASK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".m4v", ".mkv", ".gif", ".mpg", ".mpeg", ".wmv", ".ogv", ".webm", ".dcm", ".dicom")

MAX_PIXELS = 50_000_000  # one still or frame; an ultrasound frame has under 2 MP
MAX_MASK_VOXELS = 500_000_000  # one mask volume, e.g. 1000 frames of 700x700 px (0.5 GB as bool)


def full_suffix(path: str | Path) -> str:
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def is_dicom(path: str | Path) -> bool:
    """True when the file carries the DICOM preamble magic ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def kind_of(path: str | Path, allowed: tuple[str, ...]) -> str | None:
    """The file's suffix if it is one of ``allowed``; DICOM without suffix counts as '.dcm'."""
    suffix = full_suffix(path)
    if suffix in allowed:
        return suffix
    if ".dcm" in allowed and is_dicom(path):
        return ".dcm"
    return None


def check_file(path: str | Path) -> None:
    """Raise one line naming what ``path`` is instead of a readable, non-empty regular file.

    A folder or a link loop is not "file not found"; a FIFO or device would block or never end.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CeusError(f"{path}: {_stat_problem(path, exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CeusError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise CeusError(f"{path}: not a regular file (a device, pipe or socket)")
    if st.st_size == 0:
        raise CeusError(f"{path}: empty file (0 bytes)")


def _stat_problem(path: str | Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (a link that leads back to itself)"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "broken symbolic link (its target does not exist)" if os.path.islink(path) else "file not found"
    if exc.errno == errno.EACCES:
        return "permission denied"
    return f"cannot open ({exc.strerror or exc.__class__.__name__})"


def check_pixels(path: str | Path, width: int, height: int, what: str = "image") -> None:
    """Refuse a picture larger than :data:`MAX_PIXELS` from its header, before it is decoded."""
    n = int(width) * int(height)
    if width <= 0 or height <= 0:
        raise CeusError(f"{path}: {what} is {width}x{height} px (holds no pixel)")
    if n > MAX_PIXELS:
        raise CeusError(f"{path}: {what} is {width}x{height} px ({n / 1e6:.1f} MP), over the limit of "
                        f"{MAX_PIXELS / 1e6:.0f} MP (a decompression bomb, or not an ultrasound {what})")
