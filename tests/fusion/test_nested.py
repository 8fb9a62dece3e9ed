"""Internal validation of DL_combined (issue 23, items 1-2): rms's cross-validation against R, the nested CV
of the whole fusion procedure, the method chosen per procedure and its budget, and the null behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ceusfusion.core.errors import CeusError
from ceusfusion.fusion.inputs import FusionData
from ceusfusion.fusion.nested import nested_problem, nested_splits, nested_validate, part
from ceusfusion.fusion.pipeline import FusionConfig, fit_procedure, run_fusion
from ceusfusion.fusion.validation import FIT_BUDGET, MAX_REPEATS, internal_validation, validation_plan
from ceusfusion.stats.logistic import fit_logistic
from ceusfusion.stats.optimism import cv_validate

REFERENCE = Path(__file__).parent / "data" / "reference_cv_validate.json"
DEMO = dict(classifiers=("lr", "svm", "knn", "rf", "et", "xgb", "lgbm", "mlp"), folds=3, fast=True)  # the demo's fusion
SMALL = dict(folds=3, inner_folds=3, n_cs=5, fast=True)


def frame_data(n: int, n_test: int, p: int, seed: int, signal: float = 0.0) -> FusionData:
    """n training + n_test test rows, p features; labels 40 % positive, permuted (pure noise) when signal is 0."""
    rng = np.random.default_rng(seed)
    y = rng.permutation((np.arange(n + n_test) % 5 < 2).astype(int))
    X = rng.normal(size=(n + n_test, p)) + signal * y[:, None] * (np.arange(p) < 2)
    frame = pd.DataFrame({"case_id": [f"c{i:03d}" for i in range(n + n_test)],
                          "set": np.where(np.arange(n + n_test) < n, "train", "test"), "y": y,
                          **{f"img__f{j}": X[:, j] for j in range(p)}})
    return FusionData(frame=frame, deep=[f"img__f{j}" for j in range(p)])


def _lrm(X, y, groups=None):
    return fit_logistic(X, y, maxit=25).linear_predictor


# --------------------------------------------------------------------------- rms::validate(method = "crossvalidation")


def test_cv_validate_matches_rms_crossvalidation():
    """Every index of rms 6.5 validate(lrm, method = "crossvalidation", B) on R's own held-out groups."""
    ref = json.loads(REFERENCE.read_text())
    for case in ref["cases"]:
        X, y = np.column_stack(case["X"]), np.array(case["y"], dtype=int)
        held = [np.array(t, dtype=int) for t in case["test_groups"]]
        splits = [(0, np.setdiff1d(np.arange(len(y)), t), t) for t in held]
        v = cv_validate(X, y, _lrm, splits)
        assert v.method == "crossvalidation" and v.B == case["B"] and v.n_failed == 0
        for name, row in case["validate"].items():
            for col in ("index.orig", "training", "test", "optimism", "index.corrected"):
                assert v[name][col] == pytest.approx(row[col], abs=1e-5), (case["name"], name, col)
            assert v[name]["n"] == row["n"]
        assert v["C"]["index_corrected"] == pytest.approx((1 + case["validate"]["Dxy"]["index.corrected"]) / 2, abs=1e-8)


def test_cv_validate_held_out_estimate_and_repeats():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + rng.normal(size=120) > 0).astype(int)
    splits = nested_splits(y, np.arange(120).astype(str), 4, 2, seed=5)
    assert [r for r, _, _ in splits] == [0] * 4 + [1] * 4
    rms = cv_validate(X, y, _lrm, splits)
    held = cv_validate(X, y, _lrm, splits, estimate="held_out")
    for k in ("C", "Slope", "B"):
        assert held[k]["index_corrected"] == pytest.approx(rms[k]["test"])  # corrected = the held-out mean
        assert held[k]["optimism"] == pytest.approx(held[k]["index_orig"] - held[k]["test"])
        assert held[k]["training"] == pytest.approx(rms[k]["training"])
    per = held.per_repeat("C")
    assert [p["repeat"] for p in per] == [0, 1] and all(p["n"] == 4 for p in per)
    assert np.mean([p["index_corrected"] for p in per]) == pytest.approx(held["C"]["index_corrected"])
    d = held.to_dict()
    assert d["method"] == "crossvalidation" and d["estimate"] == "held_out" and len(d["per_repeat"]) == 2
    with pytest.raises(CeusError, match="estimate"):
        cv_validate(X, y, _lrm, splits, estimate="boot")


# --------------------------------------------------------------------------- the nested procedure


def test_a_nested_fold_reruns_run_fusion_exactly():
    """The refit on an outer training part is run_fusion's model on those rows (test rows are never read)."""
    data = frame_data(90, 30, 3, seed=1, signal=1.0)
    cfg = FusionConfig(classifiers=("lr", "knn"), folds=2, inner_folds=2, n_cs=4, fast=True)
    tr = data.frame.index[data.frame["set"] == "train"].to_numpy()
    rows, held = tr[:60], tr[60:]
    proc = fit_procedure(part(data, rows), cfg)
    as_test = FusionData(frame=data.frame.loc[np.r_[rows, held]].reset_index(drop=True).assign(
        set=["train"] * 60 + ["test"] * 30), deep=data.deep)
    ref = run_fusion(as_test, cfg)
    assert proc.chosen == ref.summary["chosen_family"]
    got = proc.model.predict_proba(data.frame.loc[held, data.columns])[:, 1]
    want = ref.predictions.loc[ref.predictions["set"] == "test", "prob"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_validation_plan_chooses_the_method_and_bounds_the_cost():
    lr = validation_plan(FusionConfig(classifiers=("lr",), folds=3, fast=True))
    assert lr["validation"] == "harrell" and lr["front_fits_per_unit"] == 6  # one grid search: 5 inner folds + the refit
    assert lr["n"] == min(200, FIT_BUDGET // 6) and lr["requested"] == 200
    demo = validation_plan(FusionConfig(**DEMO))
    assert demo["validation"] == "nested_cv" and demo["front_fits_per_unit"] == 3 * 4 * 6
    assert demo["n"] == min(MAX_REPEATS, FIT_BUDGET // 72) and demo["front_fits"] <= FIT_BUDGET
    assert validation_plan(FusionConfig(**DEMO, validation_repeats=2))["n"] == 2
    assert validation_plan(FusionConfig(classifiers=("lgbm",), folds=3))["validation"] == "nested_cv"  # flexible


def test_harrell_is_kept_for_a_single_lr_family_and_says_so():
    data = frame_data(80, 20, 3, seed=2, signal=1.0)
    cfg = FusionConfig(classifiers=("lr",), folds=2, inner_folds=2, n_cs=4, fast=True, bootstrap=3)
    lines = []
    v = internal_validation(data, cfg, "lr", seed=1, say=lines.append)
    assert v["validation"] == "harrell" and "Harrell" in v["method"] and v["B"] == 3 and v["B_requested"] == 3
    assert v["hyperparameters"] == "re-tuned in every resample" and "re-chosen by the inner grid search" in v["refitted"]
    assert v["selection_corrected"]["auc"] == v["indexes"]["C"]["index_corrected"]
    assert v["selection_corrected"]["n_candidates"] == 1 and v["fit_budget"] == FIT_BUDGET
    assert "Harrell" in lines[0] and lines[-1].startswith("    bootstrap refit 3/3")


def test_nested_record_and_skip():
    data = frame_data(90, 20, 3, seed=3, signal=1.0)
    cfg = FusionConfig(classifiers=("lr", "knn"), folds=2, inner_folds=2, n_cs=4, fast=True, validation_repeats=2)
    lines = []
    v = internal_validation(data, cfg, "lr", seed=4, say=lines.append)
    assert v["validation"] == "nested_cv" and "nested" in v["method"] and v["repeats"] == 2 and v["B"] == 4
    assert len(v["per_repeat"]) == 2 and v["spread"]["sd"] is not None
    assert v["indexes"]["C"]["index_corrected"] == pytest.approx(np.mean([r["index_corrected"] for r in v["per_repeat"]]))
    assert sum(v["families_chosen"].values()) == 4 and all(len(r["families_chosen"]) == 2 for r in v["per_repeat"])
    assert v["selection_corrected"]["n_candidates"] == 2 and v["indexes"]["C"]["n"] == 4
    assert sum("outer fold" in x for x in lines) == 4 and sum("done: mean held-out C" in x for x in lines) == 2
    splits = nested_splits(data.frame["y"].to_numpy()[:90], np.arange(90), 2, 2, seed=4)  # seeded, a seed per repeat
    assert all((a == c).all() for (_, a, _), (_, c, _) in zip(splits, nested_splits(data.frame["y"].to_numpy()[:90],
                                                                                    np.arange(90), 2, 2, seed=4)))
    assert not np.array_equal(splits[0][2], splits[2][2])
    two = internal_validation(data, cfg.model_copy(update={"validation_repeats": 1}), "lr", seed=4, n_jobs=2)
    assert two["n_jobs"] == 2 and two["per_repeat"][0] == v["per_repeat"][0]  # processes change nothing
    few = FusionData(frame=data.frame.assign(y=np.where(np.arange(len(data.frame)) < 12, 1, 0)), deep=data.deep)
    skipped = internal_validation(few, cfg, "lr")
    assert "inner folds" in skipped["skipped"] and skipped["validation"] == "nested_cv"
    assert nested_problem(data, cfg) is None
    with pytest.raises(CeusError, match="not run"):
        nested_validate(few, cfg, 1)


def test_fusion_json_records_the_selection_corrected_auc(tmp_path):
    data = frame_data(90, 30, 3, seed=5, signal=1.0)
    res = run_fusion(data, FusionConfig(classifiers=("lr", "knn", "rf"), folds=2, inner_folds=2, n_cs=4, fast=True))
    sc = res.summary["selection_corrected"]
    assert set(sc) >= {"auc", "ci", "method", "n_candidates"} and sc["n_candidates"] == 3 and "BBC-CV" in sc["method"]
    assert 0 <= sc["auc"] <= 1 and sc["ci"][0] <= sc["auc"] <= sc["ci"][1] and set(sc["chosen_share"]) == {"lr", "knn", "rf"}
    train = res.predictions.loc[res.predictions["set"] == "train", "scoring"].unique()
    assert len(train) == 1 and "optimistic" in train[0] and f"selection-corrected AUC {sc['auc']:.3f}" in train[0]
    one = run_fusion(data, FusionConfig(classifiers=("lr",), folds=2, inner_folds=2, n_cs=4, fast=True))
    assert one.summary["selection_corrected"]["n_candidates"] == 1
    assert set(one.predictions.loc[one.predictions["set"] == "train", "scoring"]) == {"out-of-fold"}


# --------------------------------------------------------------------------- pure noise (issue 23's done-when)


@pytest.mark.slow
def test_on_pure_noise_the_corrected_estimates_sit_at_chance():
    """Permuted labels, 3 seeds: the nested-CV corrected c-index of the chosen fusion family and fuse's
    selection-corrected AUC average within 0.5 +/- 0.07 (the held-family Harrell bootstrap printed 0.66-0.74
    for lgbm on the same data; see the report of issue 23)."""
    corrected, selection = [], []
    for seed in range(3):
        data = frame_data(150, 30, 3, seed=seed)
        cfg = FusionConfig(classifiers=("lr", "knn", "lgbm"), folds=2, inner_folds=3, n_cs=5, fast=True, seed=seed,
                           validation_repeats=1)
        fused = run_fusion(data, cfg)
        v = internal_validation(data, cfg, fused.summary["chosen_family"], seed=seed, model=fused.model)
        assert v["validation"] == "nested_cv"
        corrected.append(v["indexes"]["C"]["index_corrected"])
        selection.append(fused.summary["selection_corrected"]["auc"])
    assert abs(np.mean(corrected) - 0.5) <= 0.07, corrected
    assert abs(np.mean(selection) - 0.5) <= 0.07, selection


def test_the_report_says_which_method_was_used(tmp_path):
    from ceusfusion.report.clinical import validation_section

    rows = {"C": {"index_orig": 0.91, "training": 0.9, "test": 0.48, "optimism": 0.43, "index_corrected": 0.48, "n": 6}}
    nested = {"validation": "nested_cv", "method": "repeated grouped nested cross-validation", "B": 6, "repeats": 2,
              "folds": 3, "seed": 0, "n": 150, "indexes": rows, "refitted": "the whole run_fusion procedure",
              "per_repeat": [{"index_corrected": 0.47}, {"index_corrected": 0.49}], "spread": {"sd": 0.014},
              "families_chosen": {"lr": 4, "lgbm": 2, "mlp": 0}, "fit_budget": 150, "front_fits_per_unit": 72}
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "metrics.json").write_text(json.dumps({"internal_validation": nested}))
    text = validation_section(tmp_path)
    for want in ("Repeated grouped nested cross-validation (2 repeat(s) of 3 outer folds", "Harrell&#x27;s bootstrap is not valid",
                 "Per repeat: 0.470, 0.490 (SD 0.014)", "lr 4, lgbm 2.", "held-out parts", "corrected (held-out)",
                 "fit budget (150 LASSO fits, 72 per repeat)"):
        assert want in text, want
    harrell = {"validation": "harrell", "B": 25, "B_requested": 200, "n": 150, "seed": 0, "indexes": rows,
               "refitted": "re-tuned", "resampled": "patient groups (with replacement)"}
    (tmp_path / "evaluation" / "metrics.json").write_text(json.dumps({"internal_validation": harrell}))
    text = validation_section(tmp_path)
    assert "Harrell&#x27;s bootstrap optimism correction, valid for this single penalised logistic family (25 resamples of the 200 asked" in text
    assert "bootstrap test" in text and "optimism-corrected" in text
