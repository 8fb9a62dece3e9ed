"""`evaluate` and issue 23: patients with several rows (clustered CIs), the test-scale check, the
selection-corrected training AUC in Table 2, and a test set with one outcome class."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from ceusfusion.evaluate.evaluate import evaluate
from ceusfusion.stats import (
    auc_ci,
    calibration_in_the_large,
    clustered_auc_ci,
    clustered_auc_test,
    clustered_metrics_at,
    youden,
)

SCALE_KEYS = {"sd_oof", "sd_test", "ratio", "ratio_ci", "ok", "range", "citl", "n_oof", "n_test"}


def _two_nodules(tmp_path, names=("A", "B"), seed=0, n_train=80, n_test=60):
    """Every patient entered as two nodules (same outcome, nearly the same score); the cohort names the patient."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = (rng.random(n) < 0.4).astype(int)
    sets = np.where(np.arange(n) < n_train, "train", "test")
    latent = rng.normal(0.6 * y, 1.0)
    paths = []
    for k, name in enumerate(names):
        lp = np.repeat(latent + rng.normal(0, 0.5 + k, n), 2) + rng.normal(0, 0.05, 2 * n)
        df = pd.DataFrame({"case_id": [f"pt{i:03d}_{j}" for i in range(n) for j in "ab"], "set": np.repeat(sets, 2),
                           "fold": -1, "y": np.repeat(y, 2), "prob": expit(lp - 0.4)})
        paths.append(tmp_path / f"{name}.csv")
        df.to_csv(paths[-1], index=False)
    cohort = pd.DataFrame({"case_id": df["case_id"], "group": [c.split("_")[0] for c in df["case_id"]],
                           "label": df["y"]})
    cohort.to_csv(tmp_path / "cohort.csv", index=False)
    return paths, tmp_path / "cohort.csv"


def test_patients_with_two_nodules_get_clustered_cis(tmp_path):
    paths, cohort = _two_nodules(tmp_path)
    m = evaluate(paths, tmp_path / "ev", figures=False, cohort=cohort)
    a = pd.read_csv(paths[0])
    b = pd.read_csv(paths[1])
    te, tb = a[a.set == "test"], b[b.set == "test"]
    g = te.case_id.str.split("_").str[0].to_numpy()
    blk = m["sets"]["test"]
    r = blk["models"]["A"]
    assert blk["clustered"] and blk["n_groups"] == 60 and r["n_groups"] == 60
    assert r["ci_method_auc"] == "obuchowski (clustered by patient, 60 groups)"
    assert r["ci_method_proportions"].endswith("(clustered by patient, 60 groups)")
    ref = clustered_auc_ci(te.y, te.prob, g)
    assert r["auc_ci"] == pytest.approx(list(ref.ci), abs=1e-12)
    naive = auc_ci(te.y, te.prob)
    assert (r["auc_ci"][1] - r["auc_ci"][0]) > 1.3 * (naive.ci[1] - naive.ci[0])  # not the rows-as-patients CI
    thr = youden(a[a.set == "train"].y, a[a.set == "train"].prob).threshold
    mt = clustered_metrics_at(te.y, te.prob, thr, g)
    assert r["sensitivity_ci"] == pytest.approx(mt["sensitivity_ci"], abs=1e-12)
    (cmp,) = blk["comparisons"]
    t = clustered_auc_test(te.y, te.prob, tb.prob, g)
    assert cmp["method"] == "obuchowski (clustered by patient, 60 groups)" and cmp["paired"]
    assert cmp["z"] == pytest.approx(t.z, rel=1e-10) and cmp["p"] == pytest.approx(t.p, rel=1e-10)
    # without the cohort every nodule is its own patient: DeLong and Wilson, recorded as such
    m2 = evaluate(paths, tmp_path / "ev2", figures=False)
    r2 = m2["sets"]["test"]["models"]["A"]
    assert r2["ci_method_auc"] == "delong" and r2["auc_ci"] == list(naive.ci) and not m2["sets"]["test"]["clustered"]


def test_group_column_of_the_predictions_is_used(tmp_path):
    paths, _ = _two_nodules(tmp_path, names=("A",))
    df = pd.read_csv(paths[0])
    df["group"] = df.case_id.str.split("_").str[0]
    df.to_csv(paths[0], index=False)
    m = evaluate(paths, tmp_path / "ev", figures=False)
    r = m["sets"]["test"]["models"]["A"]
    te = df[df.set == "test"]
    assert r["ci_method_auc"] == "obuchowski (clustered by patient, 60 groups)"
    assert r["auc_ci"] == pytest.approx(list(clustered_auc_ci(te.y, te.prob, te.group).ci), abs=1e-12)


def _scaled(tmp_path, spread):
    rng = np.random.default_rng(2)
    n = 200
    y = (rng.random(n) < 0.35).astype(int)
    sets = np.where(np.arange(n) < 140, "train", "test")
    lp = rng.normal(1.2 * y - 1, 1.0)
    lp = np.where(sets == "test", lp * spread, lp)
    df = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "set": sets, "fold": -1, "y": y, "prob": expit(lp)})
    df.to_csv(tmp_path / "M.csv", index=False)
    return df


def test_scale_of_the_test_logits(tmp_path):
    df = _scaled(tmp_path, spread=2.0)
    m = evaluate([tmp_path / "M.csv"], tmp_path / "ev", figures=False)
    sc = m["sets"]["test"]["models"]["M"]["scale"]
    assert SCALE_KEYS <= set(sc) and "scale" not in m["sets"]["train"]["models"]["M"]
    tr, te = df[df.set == "train"], df[df.set == "test"]
    lo, lt = logit(tr.prob), logit(te.prob)
    assert sc["ratio"] == pytest.approx(np.std(lt, ddof=1) / np.std(lo, ddof=1), rel=1e-12)
    assert sc["sd_oof"] == pytest.approx(np.std(lo, ddof=1), rel=1e-12) and (sc["n_oof"], sc["n_test"]) == (140, 60)
    assert sc["ok"] is False and sc["range"] == [0.8, 1.25] and sc["ratio_ci"][0] > 1.25
    assert sc["citl"] == pytest.approx(calibration_in_the_large(te.y, te.prob), abs=1e-10)
    t = pd.read_csv(tmp_path / "ev" / "scale.csv")
    assert list(t.columns) == ["model", "sd_oof", "sd_test", "ratio", "ci", "citl", "ok"] and t.model.tolist() == ["M"]
    assert not bool(t.ok[0])
    _scaled(tmp_path, spread=1.0)
    m = evaluate([tmp_path / "M.csv"], tmp_path / "ev1", figures=False)
    assert m["sets"]["test"]["models"]["M"]["scale"]["ok"] is True


def test_selection_corrected_auc_and_the_cis_in_table2(tmp_path):
    _scaled(tmp_path, spread=1.0)
    sel = {"M": {"auc": 0.7012, "ci": [0.61, 0.79], "method": "nested CV over 12 candidates", "n_candidates": 12},
           "absent": {"auc": 0.6, "ci": None, "method": "x", "n_candidates": 2}}
    m = evaluate([tmp_path / "M.csv"], tmp_path / "ev", figures=False, selection=sel)
    assert m["sets"]["train"]["models"]["M"]["selection_corrected"] == sel["M"]
    assert "selection_corrected" not in m["sets"]["test"]["models"]["M"]
    assert m["selection_corrected_methods"] == {"M": "nested CV over 12 candidates", "absent": "x"}
    t2 = pd.read_csv(tmp_path / "ev" / "table2.csv", dtype=str, keep_default_na=False).set_index("cohort")
    assert t2.loc["Train", "AUC (selection-corrected)"] == "0.701 (0.610 - 0.790)"
    assert t2.loc["Test", "AUC (selection-corrected)"] == ""
    r = m["sets"]["test"]["models"]["M"]
    assert t2.loc["Test", "threshold"] == f"{r['threshold']:.4g}"
    for key, col in (("sensitivity", "sensitivity (95% CI)"), ("specificity", "specificity (95% CI)"),
                     ("ppv", "PPV (95% CI)"), ("npv", "NPV (95% CI)")):
        lo, hi = r[f"{key}_ci"]
        assert t2.loc["Test", col] == f"{r[key]:.3f} ({lo:.3f} - {hi:.3f})"


def test_a_test_set_with_one_class_is_reported_not_aborted(tmp_path):
    """Issue 23 item 8: an all-positive test set used to abort evaluate ("only one class present")."""
    rng = np.random.default_rng(5)
    rows = []
    y = np.r_[(rng.random(60) < 0.4).astype(int), np.ones(20, int)]
    for name, shift in (("A", 0.0), ("B", 0.3)):
        p = expit(rng.normal(1.5 * y - 0.7 + shift, 1.0))
        d = pd.DataFrame({"case_id": [f"c{i}" for i in range(80)], "set": ["train"] * 60 + ["test"] * 20, "fold": -1,
                          "y": y, "prob": p})
        d.to_csv(tmp_path / f"{name}.csv", index=False)
        rows.append(d)
    m = evaluate([tmp_path / "A.csv", tmp_path / "B.csv"], tmp_path / "ev", figures=True)
    r = m["sets"]["test"]["models"]["A"]
    te = rows[0][rows[0].set == "test"]
    assert r["undefined"].startswith("only one class in this set (all positive): AUC")
    assert r["auc"] is None and r["auc_ci"] == [None, None] and r["calibration_slope"] is None
    assert r["calibration_intercept"] is None and r["hosmer_lemeshow"]["p"] is None
    thr = youden(rows[0].y[:60], rows[0].prob[:60]).threshold
    assert r["threshold"] == thr and r["threshold_source"] == "train"
    tp = int((te.prob >= thr).sum())
    assert r["sensitivity"] == tp / 20 and r["sensitivity_ci"][0] < r["sensitivity"] <= r["sensitivity_ci"][1]
    assert r["specificity"] is None and r["accuracy"] == tp / 20 and r["ppv"] == 1.0
    assert r["brier"] == pytest.approx(np.mean((te.prob - 1) ** 2)) and (r["n"], r["n_pos"]) == (20, 20)
    (cmp,) = m["sets"]["test"]["comparisons"]
    assert cmp["p"] is None and "only one class" in cmp["note"]
    t2 = pd.read_csv(tmp_path / "ev" / "table2.csv", dtype=str, keep_default_na=False).set_index("cohort")
    assert t2.loc["Test", "AUC (95% CI)"].tolist() == ["undefined (one class)"] * 2
    assert t2.loc["Test", "specificity (95% CI)"].tolist() == ["undefined (one class)"] * 2
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["sets"]["train"]["models"]["A"]["auc"] > 0.5
    assert (tmp_path / "ev" / "figures" / "roc_train.png").is_file() and not (tmp_path / "ev" / "figures" / "roc_test.png").exists()


def test_where_the_group_comes_from():
    """The predictions' group first, then the cohort's (numbers read as 7.0 are '7'), then the case_id."""
    from ceusfusion.evaluate.predictions import attach_groups  # the helper under test

    pred = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "group": ["P1", None, "", None]})
    cohort = pd.DataFrame({"group": [7.0, float("nan")]}, index=pd.Index(["b", "c"], name="case_id"))
    assert attach_groups(pred, cohort)["group"].tolist() == ["P1", "7", "c", "d"]
    assert attach_groups(pred.drop(columns="group"), None)["group"].tolist() == ["a", "b", "c", "d"]
