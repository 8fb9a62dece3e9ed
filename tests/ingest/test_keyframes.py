"""Keyframe policies, the time–intensity curve and perfusion parameters."""

from __future__ import annotations

import numpy as np
import pytest
from ingest_fixtures import ramp_video, write_video

from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.keyframes import KeyframeParams, select_keyframes
from ceusfusion.ingest.perfusion import TIC, gamma_variate, perfusion_parameters
from ceusfusion.ingest.roi import max_diameter

BOX = (12, 14, 30, 36)


def _mask2d(size=48):
    m = np.zeros((size, size), bool)
    m[BOX[0] : BOX[2], BOX[1] : BOX[3]] = True
    return m


@pytest.fixture(scope="module")
def video(module_tmp_factory):
    """10 s at 5 fps (50 frames); the ROI enhances to a peak at frame 30 (t = 6 s)."""
    d = module_tmp_factory.mktemp("kf")
    return write_video(d / "v.avi", ramp_video(50, peak_frame=30), fps=5)


def test_study_policy_2d_mask_centres_on_peak_enhancement(video):
    sel = select_keyframes(video, _mask2d(), KeyframeParams(period=2.0, n=5))
    assert sel.centre == 30
    assert np.allclose(sel.times, [2, 4, 6, 8, 9.8], atol=0.01) or np.allclose(sel.times, [2, 4, 6, 8, 10], atol=0.21)
    assert list(sel.frame_index[:4]) == [10, 20, 30, 40]
    assert len(sel.frames) == 5 and sel.gray
    # TIC covers every frame; the lesion curve peaks at 6 s and the ring stays dark
    assert sel.tic.times.size == 50
    assert abs(sel.tic.times[int(np.argmax(sel.tic.lesion))] - 6.0) < 0.25
    assert np.nanmax(sel.tic.ring) < 60


def test_window_is_clamped_to_the_video(tmp_path):
    path = write_video(tmp_path / "early.avi", ramp_video(50, peak_frame=3), fps=5)
    sel = select_keyframes(path, _mask2d(), KeyframeParams(period=2.0, n=5))
    assert sel.frame_index[0] == 0 and len(set(sel.frame_index.tolist())) == 5
    assert np.allclose(np.diff(sel.times), 2.0, atol=0.01)


def test_uniform_and_peak_policies(video):
    u = select_keyframes(video, None, KeyframeParams(policy="uniform", n=4))
    assert np.allclose(u.times, [0, 3.27, 6.53, 9.8], atol=0.15)
    # no mask: the peak policy scores the whole frame, which still peaks at 6 s
    pk = select_keyframes(video, None, KeyframeParams(policy="peak", n=3, period=1.0))
    assert pk.centre == 30 and list(pk.frame_index) == [25, 30, 35]


def test_per_frame_masks_largest_diameter_and_visibility(video):
    masks = np.zeros((50, 48, 48), bool)
    for k in range(5, 45):  # nodule visible from 1 s to 8.8 s; largest at frame 15 (3 s)
        r = 12 if k == 15 else 6
        masks[k, 24 - r : 24 + r, 24 - r : 24 + r] = True
    sel = select_keyframes(video, masks, KeyframeParams(period=1.0, n=5))
    assert sel.centre == 15
    assert list(sel.frame_index) == [5, 10, 15, 20, 25]  # clamped to the first visible sample
    assert all(masks[k].any() for k in sel.frame_index)
    # peak policy ignores the diameters and follows enhancement (ROI mean), at frame 30
    assert select_keyframes(video, masks, KeyframeParams(policy="peak", period=1.0, n=5)).centre == 30


def test_short_visible_part_spreads_frames_evenly(video):
    masks = np.zeros((50, 48, 48), bool)
    masks[20:27, 10:20, 10:20] = True  # visible only 4.0-5.2 s
    sel = select_keyframes(video, masks, KeyframeParams(period=2.0, n=5))
    idx = list(sel.frame_index)
    assert idx[0] == 20 and idx[-1] == 26 and idx[2] == 23 and len(set(idx)) == 5 and idx == sorted(idx)
    assert "evenly" in sel.note


def test_short_video_uses_finer_grid(tmp_path):
    path = write_video(tmp_path / "short.avi", ramp_video(12, peak_frame=6), fps=10)  # 1.1 s
    sel = select_keyframes(path, None, KeyframeParams(period=2.0, n=5))
    assert len(set(sel.frame_index.tolist())) == 5
    assert sel.times[-1] - sel.times[0] > 0.8


def test_too_short_and_mask_mismatch_fail(tmp_path, video):
    one = write_video(tmp_path / "one.avi", ramp_video(1), fps=5)
    with pytest.raises(CeusError, match="too short"):
        select_keyframes(one, None, KeyframeParams())
    with pytest.raises(CeusError, match="mask is 40x40 px but the video is 48x48"):
        select_keyframes(video, np.ones((40, 40), bool), KeyframeParams())
    with pytest.raises(CeusError, match="30 frames but the video decodes to 50"):
        select_keyframes(video, np.ones((30, 48, 48), bool), KeyframeParams())


def test_max_diameter():
    m = np.zeros((50, 50), bool)
    m[10, 5:45] = True
    assert abs(max_diameter(m) - 40) < 1
    m2 = np.zeros((50, 50), bool)
    np.fill_diagonal(m2, True)
    assert abs(max_diameter(m2) - 50 * np.sqrt(2)) < 2


def test_perfusion_parameters_recover_a_gamma_variate():
    t = np.arange(0, 60, 0.2)
    clean = gamma_variate(t, 3.0, 10.0, 2.0, 4.0, 30.0)  # peak at t0 + alpha*beta = 18 s
    rng = np.random.default_rng(0)
    y = clean + rng.normal(0, 0.5, t.size)
    ring = 0.5 * (clean - 30) + 30
    p = perfusion_parameters(TIC(t, y, ring))
    assert abs(p["baseline"] - 30) < 1
    assert abs(p["time_to_peak"] - 18) < 1.0
    assert abs(p["gv_peak_time"] - 18) < 0.5 and p["gv_r2"] > 0.97
    assert abs(p["peak_enhancement"] - clean.max() + 30) < 2
    assert p["wash_in_slope"] > 0 > p["wash_out_slope"]
    assert p["peak_ratio_ring"] > 1.2 and p["rise_time"] > 0 and p["auc"] > 0


def test_perfusion_on_a_flat_curve_is_nan_not_an_error():
    t = np.linspace(0, 10, 50)
    p = perfusion_parameters(TIC(t, np.full(50, 40.0), np.full(50, np.nan)))
    assert np.isnan(p["gv_r2"]) and np.isnan(p["peak_ratio_ring"])
