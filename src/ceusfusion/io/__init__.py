"""Readers for hospital files: still images, masks and videos.

Each reader raises :class:`ceusfusion.core.errors.CeusError` with a one-line
message naming the file and the problem; callers add the case id.
"""

from ceusfusion.io.filetypes import IMAGE_SUFFIXES, MASK_SUFFIXES, VIDEO_SUFFIXES, kind_of
from ceusfusion.io.image import read_image
from ceusfusion.io.mask import read_mask

__all__ = ["IMAGE_SUFFIXES", "MASK_SUFFIXES", "VIDEO_SUFFIXES", "kind_of", "read_image", "read_mask"]
