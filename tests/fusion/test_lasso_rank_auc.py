"""The LASSO's inner-CV AUC from mid-ranks (``fusion.lasso.rank_auc``): scikit-learn's ``roc_auc_score`` to
1e-12, ties included, and a LassoSelector fit that chooses the same C and the same features as with it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ceusfusion.fusion import lasso
from ceusfusion.fusion.lasso import LassoSelector, rank_auc


def test_rank_auc_equals_roc_auc_score_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(2, 80))
        y = rng.integers(0, 2, n)
        y[:2] = (0, 1)  # both classes
        rng.shuffle(y)
        score = rng.normal(y * rng.uniform(0, 2), 1.0)
        if trial % 3 == 0:  # heavy ties: a handful of distinct values
            score = np.round(score * 2) / 2
        if trial % 7 == 0:  # every score tied
            score = np.zeros(n)
        assert abs(rank_auc(y, score) - roc_auc_score(y, score)) < 1e-12


@pytest.mark.parametrize("y, score, auc", [([0, 1], [0.1, 0.9], 1.0), ([0, 1], [0.9, 0.1], 0.0),
                                           ([0, 1, 0, 1], [1, 1, 1, 1], 0.5), ([1, 0, 0], [2, 2, 1], 0.75)])
def test_rank_auc_by_hand(y, score, auc):
    assert rank_auc(np.array(y), np.array(score, dtype=float)) == pytest.approx(auc, abs=1e-15)


def _data(seed: int = 3, n: int = 140, p: int = 12):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    X[:, 5] = np.round(X[:, 5])  # a coarse feature: ties in the decision function
    y = (X[:, 0] - 0.8 * X[:, 1] + 0.5 * X[:, 5] + rng.normal(0, 1.5, n) > 0).astype(int)
    groups = np.repeat(np.arange(n // 2), 2)  # two nodules per patient
    return X, y, groups


@pytest.mark.parametrize("grouped, one_se", [(False, False), (True, False), (True, True)])
def test_lasso_choice_unchanged(monkeypatch, grouped, one_se):
    X, y, groups = _data()
    g = groups if grouped else None
    fast = LassoSelector(cv=5, one_se=one_se, random_state=1).fit(X, y, g)
    monkeypatch.setattr(lasso, "rank_auc", roc_auc_score)
    ref = LassoSelector(cv=5, one_se=one_se, random_state=1).fit(X, y, g)
    np.testing.assert_array_equal(fast.Cs_, ref.Cs_)
    np.testing.assert_allclose(fast.cv_scores_, ref.cv_scores_, rtol=0, atol=1e-12)
    assert fast.C_ == ref.C_ and fast.C_best_ == ref.C_best_ and fast.C_1se_ == ref.C_1se_
    np.testing.assert_array_equal(fast.support_, ref.support_)
    np.testing.assert_array_equal(fast.coef_, ref.coef_)
    assert 0 < fast.support_.sum() < X.shape[1]  # a real choice, not everything or the fallback
