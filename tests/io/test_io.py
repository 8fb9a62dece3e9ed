"""Readers: stills, masks (axis order), videos (timestamps, truncation), DICOM cines."""

from __future__ import annotations

import numpy as np
import pytest
from ingest_fixtures import l_mask, ramp_video, write_dicom, write_png, write_sitk_mask, write_video

from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.prepare import PrepareParams, prepare_image
from ceusfusion.io.dicom import read_dicom_frames
from ceusfusion.io.image import read_image
from ceusfusion.io.mask import read_mask
from ceusfusion.io.video import VideoStream, iter_frames, probe_video


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".png"])
def test_asymmetric_mask_lands_on_drawn_pixels(tmp_path, suffix):
    m = l_mask()
    path = tmp_path / f"m{suffix}"
    if suffix == ".png":
        write_png(path, (m * 255).astype(np.uint8))
    else:
        write_sitk_mask(path, m)
    got = read_mask(path)
    assert got.shape == m.shape
    assert np.array_equal(got, m)  # not transposed, not flipped


def test_mask_crop_matches_image_content(tmp_path):
    """The ROI cut for a mask drawn on an image is where the drawn structure is."""
    m = l_mask()
    img = np.full(m.shape, 30, np.uint8)
    img[m] = 220
    write_png(tmp_path / "img.png", img)
    write_sitk_mask(tmp_path / "m.nii.gz", m)
    p = PrepareParams(size=m.shape[0] * 2, margin=0.0)
    crop, meta = prepare_image(tmp_path / "img.png", tmp_path / "m.nii.gz", p)
    ys, xs = np.nonzero(m)
    assert meta["bbox"] == [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
    # nearest-free check: the bright L fills the corner where the mask's L is (bottom-left)
    side = crop.shape[0]
    assert crop[int(side * 0.85), int(side * 0.15)] > 150  # foot of the L, left end
    assert crop[int(side * 0.15), int(side * 0.85)] < 80  # top right is empty


def test_read_image_grey_colour_and_bad_files(tmp_path):
    g = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    assert read_image(write_png(tmp_path / "g.png", g)).shape == (12, 10)
    c = np.zeros((12, 10, 3), np.uint8)
    c[..., 0] = 255
    assert read_image(write_png(tmp_path / "c.png", c)).shape == (12, 10, 3)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(CeusError, match="empty file"):
        read_image(tmp_path / "zero.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all" * 10)
    with pytest.raises(CeusError, match="cannot decode"):
        read_image(tmp_path / "bad.jpg")


def test_video_times_from_timestamps_not_counts(tmp_path):
    times = [0, 0.1, 0.15, 0.5, 0.6, 1.0, 1.05, 1.9, 2.0, 2.5]
    path = write_video(tmp_path / "vfr.mp4", ramp_video(10), times=times)
    got = [t for t, _ in iter_frames(path)]
    assert np.allclose(got, times, atol=1e-3)


def test_video_stream_lazy_frames_and_luma(tmp_path):
    frames = ramp_video(20)
    path = write_video(tmp_path / "a.avi", frames)
    info = probe_video(path)
    assert (info.width, info.height, info.n_frames) == (48, 48, 20)
    with VideoStream(path) as vs:
        got = [(f.index, f.time, f.to_array(True)) for f in vs]
    assert [g[0] for g in got] == list(range(20))
    assert np.allclose([g[1] for g in got], np.arange(20) / 10)
    assert np.abs(got[5][2].astype(int) - frames[5]).mean() < 4  # lossy codec, same picture


def test_bad_videos_fail_with_one_line(tmp_path):
    src = write_video(tmp_path / "ok.avi", ramp_video(60))
    (tmp_path / "zero.avi").write_bytes(b"")
    (tmp_path / "trunc.avi").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    write_png(tmp_path / "png_as.avi", np.zeros((8, 8), np.uint8))
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01garbage" * 100)
    for name, msg in [("zero.avi", "empty file"), ("trunc.avi", "truncated"), ("png_as.avi", "video"), ("junk.mp4", "cannot open")]:
        with pytest.raises(CeusError, match=msg) as exc:
            with VideoStream(tmp_path / name) as vs:
                for _ in vs:
                    pass
        assert "\n" not in str(exc.value) and str(exc.value).count(str(tmp_path)) == 1


def test_dicom_cine_timing_and_ybr(tmp_path):
    frames = ramp_video(6, size=16)
    p = write_dicom(tmp_path / "c.dcm", frames, frame_time_ms=40)
    arr, t = read_dicom_frames(p)
    assert arr.shape == (6, 16, 16) and np.array_equal(arr, frames)
    assert np.allclose(t, np.arange(6) * 0.04)
    with VideoStream(p) as vs:
        assert [round(f.time, 3) for f in vs] == [0.0, 0.04, 0.08, 0.12, 0.16, 0.2]
    rgb = np.zeros((3, 8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 60, 20
    p2 = write_dicom(tmp_path / "y.dcm", rgb, rgb=True, ybr=True, frame_time_vector=[0, 50, 100])
    arr2, t2 = read_dicom_frames(p2)
    assert np.abs(arr2.astype(int) - rgb).max() <= 2  # YBR_FULL back to RGB
    assert np.allclose(t2, [0, 0.05, 0.15])


def test_dicom_without_timing_is_a_clear_error(tmp_path):
    p = write_dicom(tmp_path / "n.dcm", ramp_video(4, size=8), frame_time_ms=None)
    with pytest.raises(CeusError, match="no frame timing"):
        probe_video(p)
