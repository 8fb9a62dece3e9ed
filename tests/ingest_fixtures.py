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


# --------------------------------------------------------------------------- hostile files (issue 16)


def write_avi(path: Path, n: int = 40, fps: int = 4, h: int = 24, w: int = 32) -> Path:
    """A small MJPEG AVI whose frames brighten over time."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuvj420p"
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), min(255, 5 * k), np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return Path(path)


def zero_avi_rate(path: Path) -> Path:
    """Set the AVI's frame rate to 0 (stream header dwRate and main header dwMicroSecPerFrame), as broken
    exporters do: FFmpeg then guesses 25 fps, whatever the true rate."""
    import struct

    b = bytearray(Path(path).read_bytes())
    strh, avih = b.find(b"strh"), b.find(b"avih")
    assert b[strh + 8 : strh + 12] == b"vids", "the first stream of the AVI is not video"
    struct.pack_into("<I", b, strh + 8 + 24, 0)  # strh data: fccType, fccHandler, flags, prio+lang, initial, scale, rate
    struct.pack_into("<I", b, avih + 8, 0)  # avih data: dwMicroSecPerFrame first
    Path(path).write_bytes(bytes(b))
    return Path(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, w: int = 30000, h: int = 30000) -> Path:
    """A PNG whose header declares w×h grey pixels, with a few hundred bytes of data (a decompression bomb's header)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (w + 1) * 4, 9)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return Path(path)


def write_nifti_bomb(path: Path, x: int = 20000, y: int = 20000, z: int = 8) -> Path:
    """A .nii.gz whose header declares x×y×z voxels while holding a 4×4 mask: decoding it would allocate the lot."""
    import gzip
    import struct
    import tempfile

    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "m.nii"
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((1, 4, 4), np.uint8)), str(raw))
        b = bytearray(raw.read_bytes())
    struct.pack_into("<8h", b, 40, 3, x, y, z, 1, 1, 1, 1)  # dim[0..7]
    Path(path).write_bytes(gzip.compress(bytes(b)))
    return Path(path)


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so process_case does not turn it into a failed case."""


def interrupted_prepare(monkeypatch, manifest, run, params, after: int) -> None:
    """Run prepare and kill it while the case after the first ``after`` ones is being written (its arrays
    are on disk, its sheet is not): the deterministic stand-in for a prepare killed half-way."""
    import pytest

    from ceusfusion.ingest import prepare as prepare_mod

    real, calls = prepare_mod.write_sheet, {"n": 0}

    def sheet(*a, **k):
        calls["n"] += 1
        if calls["n"] > after:
            raise Killed
        return real(*a, **k)

    monkeypatch.setattr(prepare_mod, "write_sheet", sheet)
    with pytest.raises(Killed):
        prepare_mod.prepare(manifest, run, params, progress=False)
    monkeypatch.setattr(prepare_mod, "write_sheet", real)
