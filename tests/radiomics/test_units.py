"""The radiomics stage's small parts: ICC(1,1), the 2-D shape, perturbations, the config's one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ceusfusion.core.errors import CeusError
from ceusfusion.radiomics.robust import perturb_roi, perturbations
from ceusfusion.radiomics.settings import RadiomicsConfig
from ceusfusion.radiomics.shape import shape_features
from ceusfusion.stats.icc import icc1

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; their ICC(1,1) is 0.17
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def test_icc1_matches_shrout_and_fleiss():
    assert round(float(icc1(SHROUT_FLEISS)), 2) == 0.17


def test_icc1_per_feature_and_undefined_cases():
    rng = np.random.default_rng(0)
    subject = rng.normal(size=(30, 1, 1)) * 10
    cube = np.concatenate([subject + rng.normal(size=(30, 5, 1)) * 0.1,  # robust
                           rng.normal(size=(30, 5, 1)),  # pure noise
                           np.ones((30, 5, 1))], axis=2)  # constant
    icc = icc1(cube)
    assert icc[0] > 0.99 and icc[1] < 0.3 and math.isnan(icc[2])


def disc(n: int, r: float, cy: float, cx: float, ry: float | None = None) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return ((yy - cy) / (ry or r)) ** 2 + ((xx - cx) / r) ** 2 <= 1


def test_shape_of_a_disc_and_a_tall_ellipse():
    d = shape_features(disc(101, 30, 50, 50), spacing=0.5)
    assert d["shape2d_area"] == pytest.approx(math.pi * 15**2, rel=0.01)
    assert d["shape2d_feret_max"] == pytest.approx(30.5, abs=1.0)
    assert d["shape2d_elongation"] == pytest.approx(1.0, abs=0.02)
    assert d["shape2d_taller_than_wide"] == pytest.approx(1.0, abs=0.02)
    tall = shape_features(disc(101, 15, 50, 50, ry=40))
    assert tall["shape2d_taller_than_wide"] == pytest.approx(81 / 31, rel=0.02)
    assert tall["shape2d_circularity"] < d["shape2d_circularity"]


def test_perturbations_are_seeded_and_change_the_roi_as_said():
    cfg = RadiomicsConfig()
    a = perturbations(cfg, np.random.default_rng(3))
    assert a == perturbations(cfg, np.random.default_rng(3))
    assert [p[0] for p in a] == ["erode", "dilate", "erode", "dilate", "shift"]
    roi = disc(64, 10, 32, 32)
    assert perturb_roi(roi, ("erode", 1, (0, 0))).sum() < roi.sum() < perturb_roi(roi, ("dilate", 2, (0, 0))).sum()
    moved = perturb_roi(roi, ("shift", 0, (2, -1)))
    assert moved.sum() == roi.sum() and np.array_equal(np.roll(np.roll(roi, 2, 0), -1, 1), moved)
    tiny = np.zeros((8, 8), bool)
    tiny[3, 3:5] = True
    assert np.array_equal(perturb_roi(tiny, ("erode", 1, (0, 0))), tiny)  # never emptied


@pytest.mark.parametrize("kw, words", [({"discretisation": "octiles"}, "--discretisation must be one of"),
                                       ({"bins": 1}, "--bins must be at least 2"),
                                       ({"families": ("glcm", "wavelet")}, "families must be among"),
                                       ({"intensity_range": (200, 10)}, "LOW < HIGH")])
def test_config_errors_are_one_line(kw, words):
    with pytest.raises(CeusError, match=words) as e:
        RadiomicsConfig(**kw)
    assert "\n" not in str(e.value)


def test_cli_without_a_prepared_run_is_one_line(tmp_path, capsys):
    from cli_run import exit_code

    assert exit_code(["radiomics", "--run", str(tmp_path / "nothing")]) != 0
    err = capsys.readouterr().err
    assert "run `ceusfusion prepare` first" in err and "Traceback" not in err
    assert exit_code(["radiomics", "--run", str(tmp_path), "--bins", "1"]) != 0
    assert "--bins must be at least 2, got 1" in capsys.readouterr().err


def test_keyframe_summary_is_mean_sd_and_the_brightest_frame():
    from ceusfusion.radiomics.extract import keyframe_summary
    from ceusfusion.radiomics.roi import Plane

    roi = np.ones((4, 4), bool)
    planes = [Plane(f"kf{k}", np.full((4, 4), g, np.uint8), roi, True) for k, g in enumerate((10, 200, 50))]
    per = [{"stat_mean": 10.0}, {"stat_mean": 200.0}, {"stat_mean": 50.0}]
    out, peak = keyframe_summary(per, planes)
    assert peak == 1 and out["kf_peak_stat_mean"] == 200.0
    assert out["kf_mean_stat_mean"] == pytest.approx(260 / 3)
    assert out["kf_sd_stat_mean"] == pytest.approx(np.std([10, 200, 50], ddof=1))


def test_a_tracked_keyframe_roi_moves_with_its_box():
    from ceusfusion.radiomics.roi import keyframe_plane

    frame = np.zeros((12, 12), np.uint8)
    entry = {"bbox": [2, 2, 6, 6], "box": [0, 0, 8, 8], "boxes": [[0, 0, 8, 8], [1, 3, 9, 11]]}
    still = keyframe_plane(7, frame, None, entry, 0).roi
    moved = keyframe_plane(9, frame, None, entry, 1)
    assert still[2:6, 2:6].all() and still.sum() == 16
    assert moved.roi[3:7, 5:9].all() and moved.roi.sum() == 16 and not moved.is_mask
    mask = np.zeros((12, 12), bool)
    mask[4, 4:6] = True
    assert keyframe_plane(9, frame, mask, entry, 1).roi[5, 7:9].all()  # a 2-D mask moves too
