"""Readers for hospital files: still images, masks and videos.

Each reader raises :class:`ceusfusion.errors.CeusError` with a one-line
message naming the file and the problem; callers add the case id.
"""

from .filetypes import IMAGE_SUFFIXES, MASK_SUFFIXES, VIDEO_SUFFIXES, kind_of
from .image import read_image
from .mask import read_mask

__all__ = ["IMAGE_SUFFIXES", "MASK_SUFFIXES", "VIDEO_SUFFIXES", "kind_of", "read_image", "read_mask"]
