"""Tiny synthetic hospital files for the ingestion tests (issue 3): videos, DICOMs, masks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from paths import SHARED

DATA = SHARED / "data"
PATIENT_NAME = "Doe^Janet Quixotic"
PATIENT_ID = "PID-998877"


def write_video(path: Path, frames: np.ndarray, fps: float = 10.0, times: list[float] | None = None, codec: str = "mpeg4") -> Path:
    """Encode frames (T, H, W) grey or (T, H, W, 3) RGB; ``times`` (s) give variable frame timing."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv420p"
        s.bit_rate = 4_000_000
        s.options = {"qscale": "2"} if codec == "mpeg4" else {}
        if times is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for k, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="gray" if f.ndim == 2 else "rgb24")
            if times is not None:
                vf.pts = int(round(times[k] * 1000))
                vf.time_base = Fraction(1, 1000)
            else:
                vf.pts = k
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def ramp_video(n: int = 50, size: int = 48, peak_frame: int = 30, box=(12, 14, 30, 36)) -> np.ndarray:
    """Grey frames: a rectangle (y0, x0, y1, x1) whose brightness rises to a peak at ``peak_frame``."""
    frames = np.full((n, size, size), 40, np.uint8)
    y0, x0, y1, x1 = box
    for k in range(n):
        level = 60 + 180 * np.exp(-(((k - peak_frame) / 8.0) ** 2))
        frames[k, y0:y1, x0:x1] = int(level)
    return frames


def l_mask(h: int = 40, w: int = 52) -> np.ndarray:
    """An asymmetric L: a transposed or flipped reading lands elsewhere."""
    m = np.zeros((h, w), bool)
    m[5:30, 8:14] = True  # vertical bar, left
    m[24:30, 8:40] = True  # foot, to the right
    return m


def write_png(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")
    return path


def write_sitk_mask(path: Path, mask2d: np.ndarray) -> Path:
    """Save like ITK-SNAP does for a still: a 1-slice volume built from a (1, H, W) array."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(mask2d[None].astype(np.uint8))
    sitk.WriteImage(img, str(path))
    return path


def write_dicom(path: Path, frames: np.ndarray, frame_time_ms: float | None = 100.0, rgb: bool = False,
                ybr: bool = False, frame_time_vector: list[float] | None = None) -> Path:
    """An uncompressed DICOM (still or multi-frame) with identity fields set, to test privacy."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19610203"
    ds.AccessionNumber = "ACC55443322"
    ds.Modality = "US"
    n = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if rgb:
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        data = frames
        if ybr:
            from pydicom.pixels import convert_color_space

            data = convert_color_space(frames, "RGB", "YBR_FULL")
        ds.PhotometricInterpretation = "YBR_FULL" if ybr else "RGB"
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        data = frames
    if n > 1:
        ds.NumberOfFrames = n
        if frame_time_vector is not None:
            ds.FrameTimeVector = frame_time_vector
        elif frame_time_ms is not None:
            ds.FrameTime = frame_time_ms
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path
