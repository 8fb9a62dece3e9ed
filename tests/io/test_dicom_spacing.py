"""io.dicom.pixel_spacing_mm: the radiomics stage's pixel size, from PixelSpacing or the ultrasound region."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ceusfusion.io.dicom import pixel_spacing_mm


def still(path, **tags):
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # ultrasound image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.zeros((8, 8), np.uint8).tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return path


def region(dx_cm: float, dy_cm: float, units: int = 3) -> Dataset:
    r = Dataset()
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx_cm, dy_cm
    return r


@pytest.mark.parametrize("tags, expected", [
    ({"PixelSpacing": [0.1, 0.1]}, 0.1),
    ({"SequenceOfUltrasoundRegions": [region(0.012, 0.012)]}, 0.12),  # cm -> mm
    ({"PixelSpacing": [0.1, 0.2]}, None),  # non-square pixels: features stay in pixels
    ({"SequenceOfUltrasoundRegions": [region(0.01, 0.01, units=4)]}, None),  # seconds, not cm
    ({}, None),
])
def test_spacing_from_the_header(tmp_path, tags, expected):
    got = pixel_spacing_mm(still(tmp_path / "s.dcm", **tags))
    assert got == (pytest.approx(expected) if expected else None)


def test_not_a_dicom_has_no_spacing(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert pixel_spacing_mm(tmp_path / "a.png") is None
