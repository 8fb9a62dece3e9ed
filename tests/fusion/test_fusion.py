"""Fusion (issue 6): LASSO selection, classifier families, determinism and leakage guards."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ceusfusion.core.errors import CeusError
from ceusfusion.fusion import pipeline
from ceusfusion.fusion.families import FAMILIES, parse_families
from ceusfusion.fusion.inputs import FusionData
from ceusfusion.fusion.lasso import LassoSelector
from ceusfusion.fusion.pipeline import FusionConfig, run_fusion

N_INF, N_NOISE = 5, 50


def synthetic(n: int = 200, n_noise: int = N_NOISE, seed: int = 0, n_test: int = 50) -> pd.DataFrame:
    """case_id, set, y, f0000..: the first N_INF columns carry the signal, the rest is noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_INF + n_noise))
    w = np.zeros(X.shape[1])
    w[:N_INF] = [1.5, -1.5, 1.2, -1.2, 1.0]
    y = (X @ w + rng.normal(size=n) > 0).astype(int)
    df = pd.DataFrame(X, columns=[f"f{i:04d}" for i in range(X.shape[1])])
    df.insert(0, "y", y)
    df.insert(0, "set", np.where(np.arange(n) < n - n_test, "train", "test"))
    df.insert(0, "case_id", [f"c{i:03d}" for i in range(n)])
    return df


def as_data(df: pd.DataFrame, name: str = "img") -> FusionData:
    feats = [c for c in df.columns if c not in ("case_id", "set", "y")]
    frame = df.rename(columns={c: f"{name}__{c}" for c in feats}).reset_index(drop=True)
    return FusionData(frame=frame, deep=[f"{name}__{c}" for c in feats])


FAST = dict(folds=3, inner_folds=3, n_cs=8, fast=True, seed=0)


def small_cfg(**kw) -> FusionConfig:
    return FusionConfig(**{**FAST, "classifiers": ("lr", "knn", "lgbm"), **kw})


@pytest.fixture(scope="module")
def all_families():
    return run_fusion(as_data(synthetic()), FusionConfig(**FAST))


@pytest.fixture(scope="module")
def small():
    return run_fusion(as_data(synthetic()), small_cfg())


# --------------------------------------------------------------------------- LASSO


def _xy(n=200, seed=0):
    df = synthetic(n=n, seed=seed, n_test=0)
    return df.filter(like="f").to_numpy(), df["y"].to_numpy()


def test_lasso_keeps_informative_and_drops_most_noise():
    from sklearn.preprocessing import StandardScaler

    X, y = _xy()
    X = StandardScaler().fit_transform(X)
    best = LassoSelector(cv=5, random_state=0).fit(X, y)
    assert best.support_[:N_INF].all(), "an informative feature was dropped"
    assert best.support_[N_INF:].sum() < N_NOISE / 2
    sparse = LassoSelector(cv=5, random_state=0, one_se=True).fit(X, y)
    assert sparse.support_[:N_INF].all()
    assert sparse.C_ == sparse.C_1se_ <= sparse.C_best_ == best.C_
    assert sparse.support_[N_INF:].sum() <= best.support_[N_INF:].sum()
    assert sparse.support_[N_INF:].sum() <= 10
    assert not best.fallback_ and best.transform(X).shape[1] == best.support_.sum()


def test_lasso_falls_back_to_top_k_when_nothing_survives():
    X, y = _xy(n=80)
    sel = LassoSelector(n_cs=1, c_span=0.0, cv=3, fallback_k=4).fit(X, y)  # only the all-zero C on the grid
    assert sel.fallback_ and sel.support_.sum() == 4
    # the kept ones are the strongest at the least-penalised C
    assert set(np.flatnonzero(sel.support_)) == set(np.argsort(-np.abs(sel.coef_))[:4])


# --------------------------------------------------------------------------- families, determinism


def test_every_family_runs_and_gives_probabilities(all_families):
    res = all_families
    assert list(res.cv_results["family"]) == list(FAMILIES)
    assert res.oof.shape == (150, len(FAMILIES))
    assert np.isfinite(res.oof.to_numpy()).all()
    assert ((res.oof >= 0) & (res.oof <= 1)).all().all()
    assert (res.cv_results["mean_auc"] > 0.65).all(), res.cv_results[["family", "mean_auc"]]
    assert res.cv_results["chosen"].sum() == 1
    chosen = res.cv_results.loc[res.cv_results["mean_auc"].idxmax(), "family"]
    assert res.summary["chosen_family"] == chosen
    # the train rows of the predictions are the chosen family's out-of-fold probabilities
    tr = res.predictions[res.predictions["set"] == "train"].set_index("case_id")
    np.testing.assert_allclose(tr["prob"].to_numpy(), res.oof.loc[tr.index, chosen].to_numpy())
    te = res.predictions[res.predictions["set"] == "test"]
    assert len(te) == 50 and (te["fold"] == -1).all() and te["prob"].between(0, 1).all()
    assert set(tr["fold"]) == {0, 1, 2}
    per_fold = res.cv_results[[f"auc_fold{k}" for k in range(3)]].to_numpy()
    np.testing.assert_allclose(per_fold.mean(axis=1), res.cv_results["mean_auc"])


def test_deterministic_with_a_seed(all_families):
    again = run_fusion(as_data(synthetic()), FusionConfig(**FAST))
    pd.testing.assert_frame_equal(all_families.predictions, again.predictions)
    pd.testing.assert_frame_equal(all_families.cv_results, again.cv_results)
    pd.testing.assert_frame_equal(all_families.selected, again.selected)
    pd.testing.assert_frame_equal(all_families.oof, again.oof)


def test_another_seed_changes_the_folds(small):
    other = run_fusion(as_data(synthetic()), small_cfg(seed=1))
    assert not small.predictions["fold"].equals(other.predictions["fold"])


# --------------------------------------------------------------------------- leakage guards


def _fitted_parts(res):
    tr = res.predictions[res.predictions["set"] == "train"].reset_index(drop=True)
    return res.selected, res.cv_results, tr, res.oof, res.summary["lasso"]


def _assert_same_fits(a, b):
    for x, y in zip(_fitted_parts(a), _fitted_parts(b)):
        if isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(x, y)
        else:
            assert x == y


def test_permuting_test_labels_changes_nothing_fitted(small):
    df = synthetic()
    test = df["set"] == "test"
    df.loc[test, "y"] = np.random.default_rng(5).permutation(df.loc[test, "y"].to_numpy())
    assert not df["y"].equals(synthetic()["y"])
    res = run_fusion(as_data(df), small_cfg())
    _assert_same_fits(small, res)
    te_a = small.predictions[small.predictions["set"] == "test"]
    te_b = res.predictions[res.predictions["set"] == "test"]
    np.testing.assert_array_equal(te_a["prob"].to_numpy(), te_b["prob"].to_numpy())


def test_test_features_never_reach_a_fit(small):
    df = synthetic()
    test = (df["set"] == "test").to_numpy()
    feats = [c for c in df.columns if c.startswith("f")]
    df.loc[test, feats] = 1e6 * np.random.default_rng(9).normal(size=(test.sum(), len(feats)))
    res = run_fusion(as_data(df), small_cfg())
    _assert_same_fits(small, res)  # selection, CV, out-of-fold predictions are blind to the test rows


SCALER_FITS: list = []  # marker column of every scaler fit (module level: fitted steps are pickled by the cache)
LASSO_FITS: list = []


class SpyScaler(pipeline.StandardScaler):
    def fit(self, X, y=None, sample_weight=None):
        SCALER_FITS.append(np.asarray(X)[:, -1].copy())  # the marker column (last input column)
        return super().fit(X, y, sample_weight)


class SpyLasso(LassoSelector):
    def fit(self, X, y, groups=None):
        LASSO_FITS.append(len(X))
        return super().fit(X, y, groups)


def test_scaler_and_selector_fit_only_on_the_folds_training_part(monkeypatch):
    SCALER_FITS.clear()
    LASSO_FITS.clear()
    monkeypatch.setattr(pipeline, "StandardScaler", SpyScaler)  # as looked up by make_front
    monkeypatch.setattr(pipeline, "LassoSelector", SpyLasso)
    df = synthetic(n=120, n_noise=10, n_test=40)
    # a row marker: training rows 0..79, test rows extreme outliers (10000+)
    df["f_marker"] = np.where(df["set"] == "train", np.arange(len(df)), 10_000 + np.arange(len(df))).astype(float)
    res = run_fusion(as_data(df), FusionConfig(**{**FAST, "classifiers": ("lr",)}))
    preds = res.predictions
    ids = {cid: i for i, cid in enumerate(df["case_id"])}
    train_rows = {float(ids[c]) for c in preds.loc[preds["set"] == "train", "case_id"]}
    held = [{float(ids[c]) for c in preds.loc[preds["fold"] == k, "case_id"]} for k in range(3)]
    fits = [set(f) for f in SCALER_FITS]
    # nested: per outer fold 3 inner-fold fits + 1 on its whole training part, then 1 on all training rows (the
    # final search's inner folds are the outer folds here, same k and seed: their fits come from the cache)
    assert len(fits) == 3 * (3 + 1) + 1 and LASSO_FITS == [len(f) for f in SCALER_FITS]
    for k in range(3):
        part = fits[4 * k:4 * k + 4]
        assert part[-1] == train_rows - held[k]  # the outer fold's training part, nothing held out
        assert all(f < part[-1] for f in part[:-1])  # inner fits: strict subsets of it
    assert fits[-1] == train_rows  # the final refit: all training rows, no test row
    assert max(max(f) for f in SCALER_FITS) < 10_000
    final = res.model.named_steps["scale"]
    assert final.mean_[-1] == pytest.approx(np.mean(sorted(train_rows)))


# --------------------------------------------------------------------------- input checks


def test_too_few_cases_per_class_is_one_clear_error():
    df = synthetic(n=40, n_test=0)
    with pytest.raises(CeusError, match="folds need at least"):
        run_fusion(as_data(df), FusionConfig(folds=30, classifiers=("lr",)))


def test_unknown_family_is_rejected():
    with pytest.raises(CeusError, match="unknown classifier family svx"):
        parse_families("lr,svx")
    assert parse_families("LR, rf,lr") == ("lr", "rf")


def test_selected_table_lists_final_coefficients(small):
    sel = small.selected
    final = small.model.named_steps["lasso"]
    assert sel["selected"].sum() == final.support_.sum()
    assert (sel.loc[sel["selected"], "coefficient"] != 0).all()
    assert sel["selection_frequency"].between(0, 1).all()
    informative = {f"img__f{i:04d}" for i in range(N_INF)}
    assert informative <= set(sel.loc[sel["selected"], "feature"])
    assert sel.loc[sel["feature"].isin(informative), "selection_frequency"].eq(1.0).all()
    json.dumps(small.summary, default=str)
