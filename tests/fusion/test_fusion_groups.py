"""Fusion CVs are split by patient (issue 15, item 1): outer folds, LASSO, grid search, SVM Platt scaling.

The scenario of the issue: two near-identical rows per patient (a twin nodule: same features plus tiny
noise) and no signal at all (labels random per patient). Any CV that puts one twin on each side of a
split scores the memorised twin, not the patient: chance must stay chance.
"""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ceusfusion.core.errors import CeusError
from ceusfusion.fusion import lasso as lasso_module
from ceusfusion.fusion import pipeline
from ceusfusion.fusion.families import GroupedPlattSVC
from ceusfusion.fusion.features import feature_names, read_features, write_features
from ceusfusion.fusion.inputs import FusionData, join_features, load_inputs
from ceusfusion.fusion.lasso import LassoSelector, inner_folds
from ceusfusion.fusion.pipeline import FusionConfig, run_fusion

FAST = dict(folds=3, inner_folds=3, n_cs=8, fast=True, seed=0)


def twins(n_pat: int = 60, p: int = 20, seed: int = 0, noise: float = 0.01) -> pd.DataFrame:
    """case_id, set, y, group, f0000..: two near-identical training rows per patient, labels random per patient."""
    rng = np.random.default_rng(seed)
    X = np.repeat(rng.normal(size=(n_pat, p)), 2, axis=0) + noise * rng.normal(size=(2 * n_pat, p))
    df = pd.DataFrame(X, columns=[f"f{i:04d}" for i in range(p)])
    df.insert(0, "group", np.repeat([f"p{i:03d}" for i in range(n_pat)], 2))
    df.insert(0, "y", np.repeat(rng.integers(0, 2, n_pat), 2))
    df.insert(0, "set", "train")
    df.insert(0, "case_id", [f"c{i:03d}" for i in range(2 * n_pat)])
    return df


def as_data(df: pd.DataFrame) -> FusionData:
    """A FusionData whose groups are the table's group column (as load_inputs makes it)."""
    feats = [c for c in df.columns if c.startswith("f")]
    frame = df.rename(columns={c: f"img__{c}" for c in feats}).reset_index(drop=True)
    return FusionData(frame=frame, deep=[f"img__{c}" for c in feats], groups=frame["group"].astype(str),
                      group_source="features")


SPLITS: list[tuple[np.ndarray, np.ndarray]] = []  # (training groups, validation groups) of every grouped split


class RecordingSplitter(StratifiedGroupKFold):
    """StratifiedGroupKFold that records the groups on each side of every split it makes."""

    def split(self, X, y=None, groups=None):
        assert groups is not None, "a grouped splitter was called without groups"
        g = np.asarray(groups)
        for tr, va in super().split(X, y, groups):
            SPLITS.append((g[tr], g[va]))
            yield tr, va


@pytest.fixture
def recorded(monkeypatch):
    """Every inner splitter (lasso.inner_folds: LASSO, grid search, SVM calibration) records its splits."""
    SPLITS.clear()
    monkeypatch.setattr(lasso_module, "StratifiedGroupKFold", RecordingSplitter)
    return SPLITS


def assert_no_patient_on_both_sides(splits):
    assert splits, "no grouped split was made"
    for tr, va in splits:
        assert not set(tr) & set(va), f"patient(s) on both sides: {sorted(set(tr) & set(va))[:3]}"


# --------------------------------------------------------------------------- the whole stage


@pytest.fixture(scope="module")
def twin_runs(module_tmp_factory):
    """The no-signal twins through load_inputs + run_fusion: the file with its group column, and the
    same file without it (an old file: each case its own patient, as the ungrouped code treated every file)."""
    tmp = module_tmp_factory.mktemp("twins")
    df = twins(seed=5)
    write_features(tmp / "img.parquet", df, {"name": "img"})
    write_features(tmp / "old.parquet", df.drop(columns="group"), {"name": "img"})
    cfg = FusionConfig(**FAST, classifiers=("lr", "svm"))
    return {kind: run_fusion(load_inputs([tmp / f"{kind}.parquet"]), cfg) for kind in ("img", "old")}


def _pooled_auc(res) -> float:
    p = res.predictions[res.predictions["set"] == "train"]
    return float(roc_auc_score(p["y"], p["prob"]))


def test_no_signal_twins_score_chance_when_the_group_travels_with_the_features(twin_runs):
    grouped, old = twin_runs["img"], twin_runs["old"]
    assert _pooled_auc(grouped) < 0.65, grouped.cv_results[["family", "pooled_oof_auc"]]
    assert (grouped.cv_results["pooled_oof_auc"] < 0.65).all()
    # every patient in one outer fold
    group_of = twins(seed=5).set_index("case_id")["group"]
    folds = grouped.predictions.assign(group=grouped.predictions["case_id"].map(group_of))
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    # without the group (what the fusion stage did before: no cohort, no groups) the twins leak
    assert _pooled_auc(old) > 0.75


def test_summary_says_which_cv_was_grouped_and_by_what(twin_runs):
    cv = twin_runs["img"].summary["cv"]
    assert cv["grouped"] == {"outer": True, "lasso": True, "grid_search": True, "svm_calibration": True}
    assert cv["groups"] == cv["group_source"] == "features" and cv["nested"] is True
    assert cv["n_groups_train"] == 60 and cv["n_groups_with_several_train_rows"] == 60
    assert cv["n_groups_in_train_and_test"] == 0
    old = twin_runs["old"].summary["cv"]
    assert old["group_source"] == "case_id" and not any(old["grouped"].values())
    assert "every case is its own patient" in old["group_note"]
    inputs = twin_runs["old"].summary["inputs"]
    assert inputs[0]["groups"].startswith("case_id") and inputs[0]["meta"]["has_group"] is False
    json.dumps(twin_runs["img"].summary)
    assert twin_runs["img"].summary["best_params"].keys() <= {"C", "gamma"}  # no "clf__" / "estimator__" prefix


def test_outer_folds_need_enough_patients_not_rows():
    df = twins(n_pat=8)  # 16 rows, about 4 patients of each class
    with pytest.raises(CeusError, match="folds need at least 5 training patients"):
        run_fusion(as_data(df), FusionConfig(**{**FAST, "folds": 5}, classifiers=("lr",)))


# --------------------------------------------------------------------------- each inner CV alone


def test_lasso_penalty_cv_never_splits_a_patient(recorded):
    df = twins(n_pat=40, p=60, seed=5)  # more features than a fold's patients: L1-LR can memorise a twin
    X = StandardScaler().fit_transform(df.filter(like="f0").to_numpy())
    y, g = df["y"].to_numpy(), df["group"].to_numpy()
    sel = LassoSelector(cv=5, n_cs=8, random_state=0).fit(X, y, groups=g)
    assert_no_patient_on_both_sides(recorded)
    assert len(recorded) == 5 and sel.grouped_
    assert sel.cv_mean_.max() < 0.65  # no signal: no penalty looks good
    leaky = LassoSelector(cv=5, n_cs=8, random_state=0).fit(X, y)  # rows as units: the twin is memorised
    assert leaky.cv_mean_.max() > 0.85 and not leaky.grouped_


def test_grid_search_inner_folds_keep_each_patient_on_one_side(recorded):
    data = as_data(twins())
    X, y, g = data.frame[data.columns], data.frame["y"].to_numpy(), data.groups.to_numpy()
    cfg = FusionConfig(**FAST)
    search = pipeline.fit_search("svm", data, cfg, X, y, g)
    assert isinstance(search.cv, StratifiedGroupKFold) and search.cv.get_n_splits() == 3
    assert_no_patient_on_both_sides(recorded)  # grid search, LASSO and Platt folds alike
    assert_no_patient_on_both_sides([(g[a], g[b]) for a, b in search.cv.split(X, y, g)])
    assert search.best_score_ < 0.7
    leaky = pipeline.fit_search("svm", data, cfg, X, y, data.frame["case_id"].to_numpy())
    assert leaky.best_score_ > 0.75  # the same search with rows as patients


class MarkerScaler(pipeline.StandardScaler):
    """Records the raw marker column (row number, the last input column) of every scaler fit."""

    fits: ClassVar[list] = []

    def fit(self, X, y=None, sample_weight=None):
        MarkerScaler.fits.append(frozenset(np.asarray(X)[:, -1].astype(int)))
        return super().fit(X, y, sample_weight)


class CountingLasso(LassoSelector):
    fits: ClassVar[list] = []

    def fit(self, X, y, groups=None):
        CountingLasso.fits.append(len(X))
        return super().fit(X, y, groups)


def test_lasso_is_refitted_inside_every_inner_fold_of_the_grid_search(monkeypatch):
    """Nesting (item 9): an inner validation row never helps the scaler or LASSO it is scored through."""
    MarkerScaler.fits, CountingLasso.fits = [], []
    monkeypatch.setattr(pipeline, "StandardScaler", MarkerScaler)
    monkeypatch.setattr(pipeline, "LassoSelector", CountingLasso)
    df = twins(n_pat=30)
    df["fmarker"] = np.arange(len(df), dtype=float)
    data = as_data(df)
    X, y, g = data.frame[data.columns], data.frame["y"].to_numpy(), data.groups.to_numpy()
    search = pipeline.fit_search("lr", data, FusionConfig(**FAST), X, y, g)  # no cache: every candidate refits
    inner = {frozenset(tr) for tr, _ in search.cv.split(X, y, g)}
    assert len(inner) == 3 and set(MarkerScaler.fits) == inner | {frozenset(range(len(df)))}
    assert len(MarkerScaler.fits) == len(search.cv_results_["params"]) * 3 + 1  # + the refit on every row
    assert CountingLasso.fits == [len(f) for f in MarkerScaler.fits]


def test_svm_platt_scaling_folds_are_grouped(recorded, monkeypatch):
    df = twins()
    X, y, g = df.filter(like="f0").to_numpy(), df["y"].to_numpy(), df["group"].to_numpy()
    svm = GroupedPlattSVC(random_state=0).fit(X, y, groups=g)
    assert len(recorded) == 3
    assert_no_patient_on_both_sides(recorded)
    # no signal: calibrated on held-out patients the sigmoid is shallow; on held-out twins it is steep
    leaky = GroupedPlattSVC(random_state=0).fit(X, y)
    assert abs(svm.a_) < 1.5 and leaky.a_ < -3
    # the pipeline hands the SVM the groups of its own training rows
    got = []
    fit = GroupedPlattSVC.fit

    def spy(self, X, y, groups=None):
        got.append(groups)
        return fit(self, X, y, groups)

    monkeypatch.setattr(GroupedPlattSVC, "fit", spy)
    data = as_data(df)
    pipeline.fit_search("svm", data, FusionConfig(**FAST), data.frame[data.columns], y, g)
    assert got and all(gr is not None and len(gr) < len(g) for gr in got[:-1]) and len(got[-1]) == len(g)


def test_svm_without_groups_is_calibrated_classifier_cv():
    """Same sigmoid (Platt targets) and one SVC on all rows, as CalibratedClassifierCV(ensemble=False)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(90, 6))
    y = (X[:, 0] + rng.normal(size=90) > 0).astype(int)
    folds = list(StratifiedGroupKFold(3, shuffle=True, random_state=0).split(X, y, np.arange(90)))
    ref = CalibratedClassifierCV(SVC(random_state=0), method="sigmoid", ensemble=False, cv=folds).fit(X, y)
    ours = GroupedPlattSVC(random_state=0).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_inner_folds_shrink_to_the_patients_of_the_smaller_class():
    y = np.array([0] * 10 + [1] * 6)
    g = np.array([f"a{i}" for i in range(10)] + ["b0", "b0", "b1", "b1", "b2", "b2"])  # 3 positive patients
    folds = inner_folds(5, y, g, 0, "x")
    assert isinstance(folds, StratifiedGroupKFold) and folds.get_n_splits() == 3
    assert isinstance(inner_folds(5, y, None, 0, "x"), StratifiedKFold)  # a selector used on its own
    assert inner_folds(5, y, None, 0, "x").get_n_splits() == 5
    with pytest.raises(CeusError, match="needs at least 2 patients"):
        inner_folds(5, y, np.where(y == 1, "b", g), 0, "the grid search")
    # a whole run where the outer training parts have fewer patients of a class than inner_folds
    df = twins(n_pat=16).assign(y=np.repeat(np.arange(16) % 2, 2))  # 8 patients of each class
    cfg = FusionConfig(**{**FAST, "folds": 2, "inner_folds": 5}, classifiers=("lr", "svm"))
    res = run_fusion(as_data(df), cfg)  # 4 per class in an outer training part: 4 grid folds, 3 for LASSO
    assert res.summary["cv"]["grouped"]["grid_search"] and res.predictions["prob"].between(0, 1).all()


# --------------------------------------------------------------------------- the group column of the features files


def test_features_file_group_column_and_old_files(tmp_path):
    df = twins(n_pat=5)
    df.loc[0, "group"] = ""  # an empty group is the case itself, as in the cohort
    write_features(tmp_path / "new.parquet", df, {"name": "new"})
    new, meta = read_features(tmp_path / "new.parquet")
    assert meta["has_group"] and "group" not in feature_names(new) and len(feature_names(new)) == 20
    assert new["group"].tolist() == ["c000"] + df["group"].tolist()[1:]
    write_features(tmp_path / "old.parquet", df.drop(columns="group"), {"name": "old", "has_group": True})
    old, meta = read_features(tmp_path / "old.parquet")
    assert meta["has_group"] is False and old["group"].tolist() == old["case_id"].tolist()
    assert list(old.columns[:4]) == ["case_id", "set", "y", "group"]
    # joined: the file that has groups gives them, whichever comes first
    frame, cols, inputs = join_features([tmp_path / "old.parquet", tmp_path / "new.parquet"])
    assert frame["group"].tolist() == new["group"].tolist() and "group" not in cols
    assert [i["groups"].split(" ")[0] for i in inputs] == ["case_id", "file"]
    assert load_inputs([tmp_path / "old.parquet", tmp_path / "new.parquet"]).group_source == "features"
    assert load_inputs([tmp_path / "old.parquet"]).group_source == "case_id"


def test_join_refuses_files_whose_groups_disagree(tmp_path):
    df = twins(n_pat=5)
    write_features(tmp_path / "a.parquet", df, {"name": "a"})
    df.loc[3, "group"] = "someone else"
    write_features(tmp_path / "b.parquet", df, {"name": "b"})
    with pytest.raises(CeusError, match=r"b.parquet: patient group disagrees with .*a.parquet for 1 case\(s\): c003"):
        join_features([tmp_path / "a.parquet", tmp_path / "b.parquet"])
