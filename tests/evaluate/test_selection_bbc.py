"""BBC-CV (stats.selection): the selection-corrected AUC of the best of several candidates."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ceusfusion.core.errors import CeusError
from ceusfusion.stats.selection import bbc_cv, group_multiplicities, weighted_aucs


def test_weighted_auc_is_the_auc_of_the_replicated_rows():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60), 1)  # ties
    w = rng.integers(0, 3, size=(4, 60)).astype(float)
    got = weighted_aucs(s, y, w)
    for b in range(4):
        rows = np.repeat(np.arange(60), w[b].astype(int))
        assert got[b] == pytest.approx(roc_auc_score(y[rows], s[rows]), abs=1e-12)


def naive_bbc(oof, y, groups, B, seed):
    """Algorithm 1 of Tsamardinos et al. (2018), one resample at a time, with sklearn's AUC."""
    rng = np.random.default_rng(seed)
    names, gi = np.unique(groups, return_inverse=True)
    scores = []
    for _ in range(B):
        counts = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
        inbag = np.repeat(np.arange(len(y)), counts[gi])
        outbag = np.flatnonzero(counts[gi] == 0)
        if len(set(y[inbag])) < 2 or len(set(y[outbag])) < 2:
            continue
        best = int(np.argmax([roc_auc_score(y[inbag], oof[inbag, c]) for c in range(oof.shape[1])]))
        scores.append(roc_auc_score(y[outbag], oof[outbag, best]))
    return float(np.mean(scores)), len(scores)


def test_bbc_equals_the_published_algorithm_run_naively():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    groups = np.repeat(np.arange(40), 2).astype(str)
    oof = rng.normal(size=(80, 3)) + 0.4 * y[:, None] * np.array([0.0, 1.0, 0.5])
    est = bbc_cv(oof, y, groups=groups, B=200, seed=7)
    mean, n = naive_bbc(oof, y, groups, 200, 7)
    assert est.n_boot == n
    assert est.auc == pytest.approx(mean, abs=1e-12)


def test_on_noise_the_corrected_auc_is_at_chance_where_the_best_of_five_is_not():
    apparent, corrected = [], []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        y = rng.permutation(np.r_[np.ones(60), np.zeros(140)]).astype(int)
        est = bbc_cv(rng.normal(size=(200, 5)), y, B=500, seed=seed)
        apparent.append(est.apparent)
        corrected.append(est.auc)
    assert np.mean(apparent) > 0.53  # the best of five noise columns looks like signal
    assert abs(np.mean(corrected) - 0.5) < 0.02


def test_a_real_signal_keeps_its_auc():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    oof = np.c_[rng.normal(size=300) + 1.5 * y, rng.normal(size=(300, 3))]
    est = bbc_cv(oof, y, B=500, seed=0)
    assert est.chosen_share[0] == 1.0
    assert est.auc == pytest.approx(roc_auc_score(y, oof[:, 0]), abs=0.02)


def test_patients_with_two_identical_rows_give_the_same_estimate_as_one_row_each():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 50)
    oof = rng.normal(size=(50, 4))
    g = np.arange(50).astype(str)
    one = bbc_cv(oof, y, groups=g, B=300, seed=5)
    two = bbc_cv(np.repeat(oof, 2, axis=0), np.repeat(y, 2), groups=np.repeat(g, 2), B=300, seed=5)
    assert two.auc == pytest.approx(one.auc, abs=1e-12)
    assert two.ci == pytest.approx(one.ci, abs=1e-12)


def test_multiplicities_follow_the_groups():
    w = group_multiplicities(np.array(["a", "a", "b", "c"]), 50, np.random.default_rng(0))
    assert (w[:, 0] == w[:, 1]).all()  # both rows of patient a drawn together
    assert (w.sum(axis=1) == 3 + w[:, 0]).all()  # three patients drawn; a's draws count twice


def test_too_few_cases_is_one_clear_error():
    with pytest.raises(CeusError, match="too few cases"):
        bbc_cv(np.array([[0.1], [0.9], [0.2]]), np.array([0, 1, 0]), B=100)
