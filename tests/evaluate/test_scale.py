"""The test/out-of-fold logit scale (issue 23 item 3, measurement): SD ratio with a seeded bootstrap CI and the
test set's calibration-in-the-large."""

from __future__ import annotations


import numpy as np
import pytest
from scipy.special import expit

from ceusfusion.core.errors import CeusError
from ceusfusion.stats import SCALE_RANGE, bootstrap_sd, calibration_in_the_large, logit_scale, prob_logit


def _sets(seed=0, n_oof=200, n_test=80, spread=1.0):
    rng = np.random.default_rng(seed)
    oof = rng.normal(-0.5, 1.0, n_oof)
    test = rng.normal(-0.5, 1.0, n_test) * spread
    y = (rng.random(n_test) < expit(test / spread)).astype(int)
    return oof, test, y


def test_ratio_citl_and_ok():
    oof, test, y = _sets(spread=2.0)
    r = logit_scale(oof, test, y)
    assert r.sd_oof == np.std(oof, ddof=1) and r.sd_test == np.std(test, ddof=1)
    assert r.ratio == pytest.approx(np.std(test, ddof=1) / np.std(oof, ddof=1), rel=1e-14)
    assert r.ratio_ci[0] < r.ratio < r.ratio_ci[1] and r.ratio_ci[0] > SCALE_RANGE[1]  # twice the spread: flagged
    assert not r.ok and r.range == (0.8, 1.25) and (r.n_oof, r.n_test, r.B) == (200, 80, 2000)
    assert r.citl == pytest.approx(calibration_in_the_large(y, expit(test)), abs=1e-12)
    same = logit_scale(oof, oof.copy(), None)
    assert same.ratio == 1.0 and same.ok and np.isnan(same.citl) and "no test outcomes" in same.note
    assert logit_scale(oof, test, y).ratio_ci == r.ratio_ci  # seeded


def test_bootstrap_sd_is_the_sd_of_each_resample():
    """The vectorised replicate SDs equal np.std of the explicitly resampled rows (same draws)."""
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 1.5, 25)
    groups = np.repeat(np.arange(10), [1, 2, 3, 4, 1, 2, 3, 4, 3, 2])
    for g in (None, groups):
        got = bootstrap_sd(x, g, B=50, rng=np.random.default_rng(9))
        draws = np.random.default_rng(9).integers(0, 25 if g is None else 10, size=(50, 25 if g is None else 10))
        for b in range(50):
            rows = draws[b] if g is None else np.concatenate([np.flatnonzero(groups == k) for k in draws[b]])
            assert got[b] == pytest.approx(np.std(x[rows], ddof=1), abs=1e-12)


def test_patients_with_two_rows_are_resampled_whole():
    """Each patient entered twice: resampling patients keeps the SD's bootstrap spread (ratio about 1.0 over
    seeds 1-7), resampling rows as if independent shrinks it by about 1/sqrt(2) (0.69-0.73)."""
    rng = np.random.default_rng(1)
    test = rng.normal(-0.5, 1.0, 80)
    dup, g = np.repeat(test, 2), np.repeat(np.arange(80), 2)
    w = lambda b: np.diff(np.quantile(b, [0.025, 0.975]))[0]  # noqa: E731
    base = w(bootstrap_sd(test, None, 2000, np.random.default_rng(0)))
    grouped = w(bootstrap_sd(dup, g, 2000, np.random.default_rng(0)))
    rows = w(bootstrap_sd(dup, None, 2000, np.random.default_rng(0)))
    assert 0.85 < grouped / base < 1.15 and rows / grouped < 0.8
    oof, _, _ = _sets(seed=1)
    r = logit_scale(oof, dup, None, groups_test=g)
    assert r.grouped and r.ratio == pytest.approx(np.std(dup, ddof=1) / np.std(oof, ddof=1))


def test_errors_and_undefined_values():
    """(Its speed, about 0.05 s for 1400 rows and 2000 resamples, is no test: timing belongs in bench/.)"""
    oof, test, y = _sets(n_oof=1000, n_test=400)
    with pytest.raises(CeusError, match="at least 2 rows"):
        logit_scale(oof, test[:1], y[:1])
    assert np.isfinite(prob_logit([0.0, 1.0])).all()  # clipped like the rest of the package
    one = logit_scale(oof, test, np.ones_like(y))
    assert np.isnan(one.citl) and "calibration-in-the-large undefined" in one.note
