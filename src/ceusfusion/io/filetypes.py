"""File-type recognition by suffix, with DICOM recognised by content too."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
MASK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".m4v", ".mkv", ".gif", ".mpg", ".mpeg", ".wmv", ".ogv", ".webm", ".dcm", ".dicom")


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
