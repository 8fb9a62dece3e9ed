"""The clinical statistics beyond their R references: degenerate inputs, definitions, determinism, and their
place in ``evaluate`` (metrics.json, CSV tables, figures, the CLI) and in the fusion bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from ceusfusion.cli import main
from ceusfusion.core.errors import CeusError
from ceusfusion.evaluate.clinical import ClinicalOptions, sample_size
from ceusfusion.evaluate.evaluate import evaluate
from ceusfusion.fusion.inputs import FusionData
from ceusfusion.fusion.pipeline import FusionConfig
from ceusfusion.fusion.validation import same_procedure_problem, validate_fusion
from ceusfusion.report.html import build_report
from ceusfusion.report.tripod import ITEMS, checklist
from ceusfusion.stats import (
    bootstrap_validate,
    cox_snell_r2,
    idi,
    improve_prob,
    interventions_table,
    net_interventions_avoided,
    nomogram,
    nri,
    pmsampsize_binary,
    risk_category,
    sample_size_adequacy,
    subgroup_auc,
    validate_logistic,
)


def _data(n=150, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    x = rng.normal(y, 1.0, size=(3, n)).T
    p_old = 1 / (1 + np.exp(-(x[:, 0] - 1)))
    p_new = 1 / (1 + np.exp(-(x[:, 0] + x[:, 1] - 1.5)))
    return y, x, p_old, p_new


# --------------------------------------------------------------------------- reclassification


def test_reclassification_degenerate_inputs_raise_one_line():
    y, _, a, b = _data()
    for bad_y in (np.zeros_like(y), np.ones_like(y)):
        with pytest.raises(CeusError, match="two values"):
            improve_prob(bad_y, a, b)
    with pytest.raises(CeusError, match="probabilities"):
        improve_prob(y, a * 3, b)
    with pytest.raises(CeusError, match="missing"):
        improve_prob(y, np.where(np.arange(len(a)) == 3, np.nan, a), b)
    with pytest.raises(CeusError, match="shape"):
        improve_prob(y, a[:-1], b)
    for cuts in ((), (0.3, 0.2), (0, 0.5), (0.5, 1.0), (np.nan,)):
        with pytest.raises(CeusError, match="cut-points"):
            nri(y, a, b, cuts=cuts)


def test_nri_definitions():
    y, _, a, b = _data()
    r = improve_prob(y, a, b)
    ev, ne = y == 1, y == 0
    d = b - a
    assert r.nri_events == pytest.approx(np.mean(d[ev] > 0) - np.mean(d[ev] < 0))
    assert r.nri_nonevents == pytest.approx(np.mean(d[ne] < 0) - np.mean(d[ne] > 0))
    assert r.nri == pytest.approx(r.nri_events + r.nri_nonevents)
    assert r.idi == pytest.approx((b[ev].mean() - b[ne].mean()) - (a[ev].mean() - a[ne].mean()))
    assert idi(y, a, b).idi == r.idi and idi(y, a, b).se == r.se_idi
    swapped = improve_prob(y, b, a)  # old and new exchanged: every index changes sign
    assert swapped.nri == pytest.approx(-r.nri) and swapped.idi == pytest.approx(-r.idi)
    lo, hi = r.ci("nri")
    assert lo < r.nri < hi and r.to_dict()["ci_nri"] == [lo, hi] and r["se.nri"] == r.se_nri


def test_categorical_nri_counts_only_moves_across_cuts():
    assert risk_category([0.05, 0.1, 0.15, 0.2, 0.35], (0.1, 0.2, 0.3)).tolist() == [0, 1, 1, 2, 3]
    y = np.array([1, 1, 0, 0])
    r = nri(y, [0.11, 0.25, 0.12, 0.31], [0.19, 0.31, 0.05, 0.29], cuts=(0.1, 0.2, 0.3))
    assert r.kind == "categorical" and r.cuts == (0.1, 0.2, 0.3)
    assert (r.pup_ev, r.pdown_ev, r.pup_ne, r.pdown_ne) == (0.5, 0.0, 0.0, 1.0)  # 0.11 -> 0.19 stays in [0.1, 0.2)
    assert r.nri == pytest.approx(1.5)


def test_zero_se_gives_r_conventions():
    y = np.array([0, 1, 0, 1, 0, 1])
    p = np.array([0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    same = improve_prob(y, p, p)
    assert same.nri == 0 and same.se_nri == 0 and np.isnan(same.z_nri) and np.isnan(same.p_nri)
    moved = improve_prob(y, p, np.where(y == 1, p + 0.2, p - 0.1))
    assert moved.nri == 2 and moved.se_nri == 0 and moved.z_nri == np.inf and moved.p_nri == 0


# --------------------------------------------------------------------------- interventions avoided


def test_interventions_table_definitions():
    y, _, _, p = _data(200, 3)
    t = interventions_table(y, p, thresholds=(0.1, 0.2, 0.3))
    n, n1 = len(y), y.sum()
    for _, row in t.iterrows():
        pos = p >= row["threshold"]
        assert row["interventions"] == pytest.approx(pos.mean() * 100)
        assert row["interventions_avoided"] == pytest.approx((~pos).mean() * 100)
        assert row["events_missed"] == pytest.approx(np.sum(~pos & (y == 1)) / n * 100)
        assert row["unnecessary_interventions_avoided"] + row["events_missed"] == pytest.approx(row["interventions_avoided"])
        odds = row["threshold"] / (1 - row["threshold"])
        # NIA = avoided unnecessary interventions - missed events weighted by the odds at pt
        assert row["net_intervention_avoided"] == pytest.approx(row["unnecessary_interventions_avoided"] - row["events_missed"] / odds)
    assert n1 > 0
    nia = net_interventions_avoided(y, p)
    assert len(nia) == 99 and nia["threshold"].iloc[6] == 0.07  # thresholds are i/100 exactly


# --------------------------------------------------------------------------- bootstrap validation


def test_bootstrap_is_seeded_and_matches_between_callable_and_estimator():
    y, x, _, _ = _data(120, 1)
    a = validate_logistic(x, y, B=40, seed=3)
    b = validate_logistic(x, y, B=40, seed=3)
    assert a.table().equals(b.table())
    assert not a.table().equals(validate_logistic(x, y, B=40, seed=4).table())
    est = bootstrap_validate(x, y, LogisticRegression(C=1e8, max_iter=1000), B=40, seed=3)
    np.testing.assert_allclose(est.index_corrected[[0, 1, 9]], a.index_corrected[[0, 1, 9]], atol=2e-3)
    row = a["C"]
    assert row["index_corrected"] == pytest.approx(row["index_orig"] - row["optimism"])
    assert row["optimism"] > 0 and a["Slope"]["index_corrected"] < 1  # a fitted model is optimistic


def test_bootstrap_by_patient_group_and_failures():
    y, x, _, _ = _data(60, 2)
    groups = np.repeat(np.arange(30), 2)
    v = validate_logistic(x, y, B=20, seed=0, groups=groups)
    assert v.grouped and v.to_dict()["grouped"]
    with pytest.raises(CeusError, match="rows"):
        validate_logistic(x[:-1], y, B=5)
    with pytest.raises(CeusError, match="B must"):
        validate_logistic(x, y, B=0)
    with pytest.raises(CeusError, match="only one class"):
        validate_logistic(x, np.zeros_like(y), B=5)
    sep = np.r_[np.zeros(20), np.ones(20)]  # a perfectly separating predictor: the original fit fails
    with pytest.raises(CeusError, match="converge"):
        validate_logistic(sep[:, None] + 0.0, sep.astype(int), B=5)


def test_validate_fusion_refits_the_pipeline_per_resample():
    rng = np.random.default_rng(0)
    n = 90
    y = (rng.random(n) < 0.35).astype(int)
    frame = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "set": np.where(np.arange(n) < 70, "train", "test"), "y": y,
                          "img__a": rng.normal(y, 1), "img__b": rng.normal(0, 1, n), "img__c": rng.normal(y, 2)})
    data = FusionData(frame=frame, deep=["img__a", "img__b", "img__c"])
    cfg = FusionConfig(folds=2, inner_folds=2, n_cs=4, fast=True, seed=0, classifiers=("lr",))
    v = validate_fusion(data, cfg, "lr", B=3, seed=1)
    assert v["B"] == 3 and v["family"] == "lr" and v["n"] == 70 and "LASSO" in v["refitted"]
    assert set(v["indexes"]) >= {"C", "Dxy", "Slope", "Intercept", "B", "Emax", "R2"}
    assert v["indexes"] == validate_fusion(data, cfg, "lr", B=3, seed=1)["indexes"]  # seeded
    held = validate_fusion(data, cfg, "lr", B=3, seed=1, params={"C": 0.1})  # the study's way: chosen hyperparameters
    assert held["hyperparameters"] == {"C": 0.1} and "held at" in held["refitted"] and held["indexes"]["C"]["n"] == 3
    knn = validate_fusion(data, cfg, "knn", B=3, seed=1)  # a one-point grid: fitted without a search
    assert knn["indexes"]["C"]["n"] + knn["n_failed"] == 3
    few = FusionData(frame=frame.assign(y=np.where(np.arange(n) < 6, 1, 0)), deep=data.deep)  # 6 positives, 3 x 3 needed
    assert "inner folds" in same_procedure_problem(few, FusionConfig(inner_folds=3, fast=True))
    with pytest.raises(CeusError, match="not run"):
        validate_fusion(few, FusionConfig(inner_folds=3, fast=True, classifiers=("lr",)), "lr", B=3)


# --------------------------------------------------------------------------- nomogram, sample size, subgroups


def test_nomogram_rejects_what_rms_cannot_draw():
    y = np.array([0, 1] * 10)
    with pytest.raises(CeusError, match="constant"):
        nomogram(pd.DataFrame({"x": np.ones(20)}), y)
    with pytest.raises(CeusError, match="converge"):
        nomogram(pd.DataFrame({"x": y * 1.0 + 0.5}), y)
    with pytest.raises(CeusError, match="missing"):
        nomogram(pd.DataFrame({"x": np.r_[np.nan, np.arange(19.0)]}), y)
    nm = nomogram(pd.DataFrame({"x": np.arange(20.0) % 7, "sex": ["F", "F", "M", "M"] * 5}), y)
    with pytest.raises(CeusError, match="not seen"):
        nm.predict(pd.DataFrame({"x": [1.0], "sex": ["X"]}))
    table = nm.points_table()
    assert set(table["variable"]) == {"x", "sex", "Risk"}
    assert table.loc[table["variable"] != "Risk", "points"].max() == pytest.approx(100)  # the widest predictor spans 0-100


def test_sample_size_sentences_and_errors():
    ok = sample_size_adequacy(700, 122, 24, csrsquared=0.288)
    assert ok["adequate"] and ok["sentence"].startswith("this cohort is large enough for 24 candidate")
    assert "events per candidate predictor = 5.08" in ok["sentence"]
    small = sample_size_adequacy(280, 55, 40, csrsquared=0.1)
    assert not small["adequate"] and "is not large enough" in small["sentence"]
    with pytest.raises(CeusError, match="exactly one"):
        pmsampsize_binary(10, 0.2)
    with pytest.raises(CeusError, match="exactly one"):
        pmsampsize_binary(10, 0.2, csrsquared=0.1, cstatistic=0.7)
    with pytest.raises(CeusError, match="prevalence"):
        pmsampsize_binary(10, 1.2, csrsquared=0.1)
    with pytest.raises(CeusError, match="parameters"):
        pmsampsize_binary(0, 0.2, csrsquared=0.1)
    y, _, _, p = _data(300, 5)
    assert 0 < cox_snell_r2(y, p) < 1 and cox_snell_r2(y, np.full(300, y.mean())) == pytest.approx(0, abs=1e-12)


def test_sample_size_of_a_chance_model_is_a_note_not_a_crash():
    rng = np.random.default_rng(0)
    n = 200
    pred = pd.DataFrame({"model": "DL_combined", "case_id": [f"c{i}" for i in range(n)], "set": "train",
                         "y": (rng.random(n) < 0.3).astype(int), "prob": 0.5 - rng.random(n) * 0.01})
    pred.loc[pred["y"] == 1, "prob"] -= 0.01  # worse than chance
    r = sample_size(pred, ["DL_combined"], ClinicalOptions(candidate_predictors=5))
    assert "no better than chance" in r["note"] and "sentence" not in r
    r = sample_size(pred, ["DL_combined"], ClinicalOptions(candidate_predictors=5, anticipated_r2=0.1))
    assert r["r2_source"] == "given" and r["parameters"] == 5 and r["sentence"]


def test_subgroups_record_unusable_strata():
    y = np.array([0, 1] * 20 + [0] * 10)
    s = np.linspace(0, 1, 50)
    strata = ["A"] * 20 + ["B"] * 20 + ["C"] * 10
    r = subgroup_auc(y, s, strata)
    assert [x["stratum"] for x in r["strata"]] == ["A", "B", "C"]
    assert "C" in r["excluded"] and r["heterogeneity"]["k"] == 2
    with pytest.raises(CeusError, match="missing"):
        subgroup_auc(y, s, strata[:-1] + [None])


# --------------------------------------------------------------------------- evaluate: metrics.json, tables, CLI


def _run(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    n = 160
    y = (rng.random(n) < 0.3).astype(int)
    sets = np.where(np.arange(n) < 110, "train", "test")
    latent = rng.normal(y, 1.0)
    ids = [f"p{i:03d}" for i in range(n)]
    paths = []
    for k, name in enumerate(("DL_image_resnet18", "DL_video_resnet18", "DL_combined")):
        prob = 1 / (1 + np.exp(-(latent * (0.6 + 0.3 * k) + rng.normal(0, 1.0, n) - 1)))
        path = tmp_path / "predictions" / f"{name}.csv"
        path.parent.mkdir(exist_ok=True)
        pd.DataFrame({"case_id": ids, "set": sets, "fold": -1, "y": y, "prob": prob}).to_csv(path, index=False)
        paths.append(path)
    cohort = tmp_path / "cohort.csv"
    pd.DataFrame({"case_id": ids, "label": y, "center": np.where(rng.random(n) < 0.6, "c1", "c2"),
                  "sex": rng.choice(["F", "M"], n), "age": rng.integers(20, 80, n)}).to_csv(cohort, index=False)
    return paths, cohort


def test_evaluate_writes_the_clinical_statistics(tmp_path):
    paths, cohort = _run(tmp_path)
    out = tmp_path / "evaluation"
    opts = ClinicalOptions(candidate_predictors=3, subgroups=("sex",), nomogram_covariates=("age", "sex"))
    iv = {"B": 2, "indexes": {"C": {"index_orig": 0.8, "training": 0.82, "test": 0.78, "optimism": 0.04,
                                    "index_corrected": 0.76, "n": 2}}}
    m = evaluate(paths, out, cohort=cohort, clinical=opts, validation=iv)
    test = m["sets"]["test"]
    assert [(r["old"], r["new"]) for r in test["reclassification"]][0] == ("DL_image_resnet18", "DL_video_resnet18")
    rec = test["reclassification"][-1]
    th = m["clinical_thresholds"]  # not given: around the training prevalence (tests/evaluate/test_outcome_words.py)
    assert set(rec) >= {"continuous_nri", "categorical_nri", "idi"} and rec["categorical_nri"]["cuts"] == th["nri_cuts"]
    assert [r["threshold"] for r in test["interventions"]["models"]["DL_combined"]] == th["thresholds"]
    assert set(test["subgroups"]) == {"center", "sex"} and test["subgroups"]["center"]["DL_combined"]["heterogeneity"]
    assert m["sample_size"]["parameters"] == 3 and "candidate predictor" in m["sample_size"]["sentence"]
    assert m["nomogram"]["covariates"] == ["age", "sex"] and m["nomogram"]["points_table"]
    assert m["nomogram"]["auc_test"]["scoring"] == "fitted on train, scored once"
    assert m["internal_validation"] == iv
    for f in ("reclassification", "interventions", "nia", "subgroups", "heterogeneity", "nomogram_points", "internal_validation"):
        assert (out / f"{f}.csv").is_file(), f
    for f in ("nomogram.png", "nomogram.svg", "nia_test.png", "subgroups_center_test.png"):
        assert (out / "figures" / f).is_file(), f
    json.loads((out / "metrics.json").read_text())  # NaN-free JSON
    html = build_report(tmp_path).read_text()  # the report reads tmp_path/evaluation
    for text in ("Internal validation of DL_combined", "optimism-corrected", "Reclassification (NRI, IDI)",
                 "treatments avoided per 100", "positives missed per 100", "Performance by centre and subgroup",
                 "Cochran", "Points table (rms::nomogram)", "candidate predictor parameters", "TRIPOD+AI checklist",
                 "the authors must supply this: eligibility criteria"):
        assert text in html, text
    items = {r["item"]: r for r in checklist(tmp_path)}
    assert items["10"]["status"] == "partly" and "Sample size" in items["10"]["where"][0]
    assert items["23b"]["status"] == "answered" and items["6b"]["status"] == "authors"
    assert len(items) == len(ITEMS) and {"1", "12a", "27c"} <= set(items)


def test_evaluate_without_cohort_still_reports_what_it_can(tmp_path):
    paths, cohort = _run(tmp_path, 1)
    m = evaluate(paths, tmp_path / "ev", figures=False)
    assert m["sets"]["test"]["subgroups"] == {} and "not given" in m["sample_size"]["note"]
    assert m["nomogram"]["scores"] == ["DL_combined"] and m["nomogram"]["covariates"] == []
    with pytest.raises(CeusError, match="not in the cohort"):
        evaluate(paths, tmp_path / "ev2", cohort=cohort, clinical=ClinicalOptions(subgroups=("smoker",)), figures=False)


def test_cli_evaluate_clinical_options(tmp_path, capsys):
    paths, cohort = _run(tmp_path, 3)
    out = tmp_path / "ev"
    with pytest.raises(SystemExit) as e:
        main(["evaluate", *map(str, paths), "--out", str(out), "--no-figures", "--cohort", str(cohort),
              "--subgroup", "sex", "--nri-cuts", "0.15,0.3", "--candidate-predictors", "4", "--nomogram-covariate", "age"])
    assert e.value.code in (0, None)
    m = json.loads((out / "metrics.json").read_text())
    assert m["sets"]["test"]["reclassification"][0]["categorical_nri"]["cuts"] == [0.15, 0.3]
    assert m["sample_size"]["parameters"] == 4 and m["nomogram"]["covariates"] == ["age"]
    assert "large enough" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["evaluate", *map(str, paths), "--out", str(out), "--nri-cuts", "0.1,x"])
    assert e.value.code == 2 and "--nri-cuts" in capsys.readouterr().err


def test_apparent_emax_follows_the_apparent_calibration_of_a_flexible_model():
    """Issue 24: the report showed 'apparent Emax 0.000' beside an apparent slope of 1.42 (rms prints 0 because an
    lrm is calibrated on its own rows); for any other model the apparent Emax comes from its own intercept and slope."""
    from ceusfusion.stats.optimism import INDEXES, bootstrap_validate, emax

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    y = (X[:, 0] + rng.normal(size=120) > 0).astype(int)

    def shrunk(Xb, yb, gb=None):  # a model whose logit is half the right one: apparent slope about 2
        return lambda Z: 0.5 * (Z[:, 0] * 1.7)

    v = bootstrap_validate(X, y, shrunk, B=20, seed=0)
    orig = dict(zip(INDEXES, v.index_orig))
    assert orig["Slope"] > 1.3 and orig["Emax"] == pytest.approx(emax(orig["Intercept"], orig["Slope"]))
    assert orig["Emax"] > 0.02
