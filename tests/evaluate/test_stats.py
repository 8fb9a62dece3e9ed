"""ceusfusion.stats on made-up data: fast DeLong = naive DeLong, degenerate inputs, thresholds, CIs, Table 1."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ceusfusion.core.errors import CeusError
from ceusfusion.stats import (
    auc_ci,
    bootstrap_ci,
    confusion,
    decision_curves,
    delong_test,
    delong_test_unpaired,
    hosmer_lemeshow,
    metrics_at,
    roc_curve,
    table1,
    threshold_for_sensitivity,
    wilson_ci,
    youden,
)
from ceusfusion.stats.delong import midpoint_thresholds
from ceusfusion.stats.table1 import wilcoxon_rank_sum


def naive_delong(y, scores):
    """O(n1*n0) DeLong (1988) from the psi kernel: AUCs and the covariance matrix S."""
    y = np.asarray(y)
    aucs, v10s, v01s = [], [], []
    for s in scores:
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
    s10, s01 = np.atleast_2d(np.cov(np.array(v10s))), np.atleast_2d(np.cov(np.array(v01s)))
    return np.array(aucs), s10 / len(v10s[0]) + s01 / len(v01s[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_delong_equals_naive_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = (rng.random(n) < 0.3).astype(int)
    a = np.round(rng.normal(y * 0.8, 1.0), 1)  # coarse grid: many ties, within and across classes
    b = np.round(0.5 * a + rng.normal(0, 1, n), 0)
    aucs, S = naive_delong(y, [a, b])
    ra, rb = auc_ci(y, a), auc_ci(y, b)
    assert ra.auc == pytest.approx(aucs[0], abs=1e-14) and rb.auc == pytest.approx(aucs[1], abs=1e-14)
    assert ra.var == pytest.approx(S[0, 0], rel=1e-12) and rb.var == pytest.approx(S[1, 1], rel=1e-12)
    t = delong_test(y, a, b)
    var_diff = S[0, 0] + S[1, 1] - 2 * S[0, 1]
    assert t.var_diff == pytest.approx(var_diff, rel=1e-10)
    z = (aucs[0] - aucs[1]) / math.sqrt(var_diff)
    assert t.z == pytest.approx(z, rel=1e-10) and t.p == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-9)
    assert ra.ci[0] == pytest.approx(aucs[0] - 1.959963984540054 * math.sqrt(S[0, 0]), abs=1e-12)
    # unpaired: variances add
    u = delong_test_unpaired(y, a, y[::-1], b[::-1])
    assert u.var_diff == pytest.approx(ra.var + rb.var, rel=1e-12) and not u.paired


def test_auc_agrees_with_sklearn_and_roc_points():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 2)
    assert auc_ci(y, s).auc == pytest.approx(roc_auc_score(y, s), abs=1e-14)
    rc = roc_curve(y, s)
    assert rc.thresholds[0] == -np.inf and rc.thresholds[-1] == np.inf
    assert rc.tp[0] == y.sum() and rc.fp[-1] == 0 and np.all(np.diff(rc.tp) <= 0)
    assert np.trapezoid(rc.sensitivity[::-1], (1 - rc.specificity)[::-1]) == pytest.approx(auc_ci(y, s).auc, abs=1e-12)


def test_midpoint_moves_onto_upper_double():
    a = 0.3
    b = np.nextafter(a, 1)
    t = midpoint_thresholds(np.array([a, b]))
    assert t[1] in (b,) and (np.array([a, b]) >= t[1]).tolist() == [False, True]
    assert midpoint_thresholds(np.array([0.2, 0.21]))[1] == 0.20500000000000002


def test_degenerate_inputs():
    y = np.array([0, 0, 1, 1, 0, 1])
    with pytest.raises(CeusError, match="only one class.*no positive"):
        auc_ci(np.zeros(5), np.arange(5.0))
    with pytest.raises(CeusError, match="only one class.*no negative"):
        delong_test(np.ones(5), np.arange(5.0), np.arange(5.0))
    with pytest.raises(CeusError, match=r"missing.*rows \(0-based\) 1, 4"):
        auc_ci(y, [0.1, np.nan, 0.3, 0.4, np.nan, 0.2])
    with pytest.raises(CeusError, match=r"missing values in y at rows \(0-based\) 2"):
        auc_ci([0, 1, np.nan], [0.1, 0.2, 0.3])
    with pytest.raises(CeusError, match="must be 0 or 1"):
        auc_ci([0, 1, 2], [0.1, 0.2, 0.3])
    c = auc_ci(y, np.full(6, 0.4))  # all scores equal
    assert c.auc == 0.5 and c.ci == (0.5, 0.5) and c.var == 0 and c.note
    p = auc_ci(y, [0.1, 0.2, 0.8, 0.9, 0.3, 0.7])  # perfect separation
    assert p.auc == 1 and p.ci == (1.0, 1.0)
    one = auc_ci([0, 0, 0, 1], [0.1, 0.5, 0.2, 0.4])  # one positive: CI undefined, flagged
    assert one.auc == pytest.approx(2 / 3) and not one.ci_defined and all(math.isnan(v) for v in one.ci)
    assert "undefined" in one.note
    t = delong_test(y, np.full(6, 0.4), np.full(6, 0.9))
    assert t.z == 0 and t.p == 1
    t = delong_test(y, [0.1, 0.2, 0.8, 0.9, 0.3, 0.7], [0.9, 0.8, 0.2, 0.1, 0.7, 0.3])
    assert t.z == np.inf and t.p == 0


def test_youden_target_sensitivity_and_confusion():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 1])
    s = np.array([.1, .2, .3, .45, .4, .6, .7, .8, .9, .95])
    yd = youden(y, s)
    c = confusion(y, s, yd.threshold)
    assert c["sensitivity"] + c["specificity"] - 1 == pytest.approx(yd.j)
    assert yd.j == pytest.approx(max(confusion(y, s, t)["sensitivity"] + confusion(y, s, t)["specificity"] - 1
                                     for t in np.r_[s, np.inf]))
    t = threshold_for_sensitivity(y, s, 1.0)
    assert confusion(y, s, t)["sensitivity"] == 1 and t == pytest.approx(0.35)  # highest threshold keeping all cases
    assert confusion(y, s, threshold_for_sensitivity(y, s, 0.8))["sensitivity"] >= 0.8
    with pytest.raises(CeusError):
        threshold_for_sensitivity(y, s, 1.5)


def test_wilson_and_bootstrap_cis():
    lo, hi = wilson_ci(41, 58)  # textbook Wilson formula
    z, ph, n = sps.norm.ppf(0.975), 41 / 58, 58
    centre = (ph + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    y = np.r_[np.zeros(60), np.ones(40)].astype(int)
    s = np.r_[np.linspace(0, .7, 60), np.linspace(.3, 1, 40)]
    m1 = metrics_at(y, s, 0.5, ci="bootstrap", n_boot=500, seed=3)
    m2 = metrics_at(y, s, 0.5, ci="bootstrap", n_boot=500, seed=3)
    m3 = metrics_at(y, s, 0.5, ci="bootstrap", n_boot=500, seed=4)
    assert m1 == m2 and m1["sensitivity_ci"] != m3["sensitivity_ci"]
    assert m1["sensitivity_ci"][0] < m1["sensitivity"] < m1["sensitivity_ci"][1]
    w = metrics_at(y, s, 0.5)
    assert w["sensitivity_ci"] == pytest.approx(list(wilson_ci(w["tp"], 40)))
    assert set(bootstrap_ci(confusion(y, s, 0.5), 100)) == {"sensitivity", "specificity", "ppv", "npv", "accuracy"}


def test_hosmer_lemeshow_textbook_and_dca():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 500)
    y = (rng.random(500) < p).astype(int)
    hl = hosmer_lemeshow(y, p)
    assert hl["df"] == 8 and sum(r["n"] for r in hl["table"]) == 500
    x2 = sum((r["observed_1"] - r["expected_1"]) ** 2 / r["expected_1"] + (r["observed_0"] - r["expected_0"]) ** 2 / r["expected_0"]
             for r in hl["table"])
    assert hl["chi2"] == pytest.approx(x2) and hl["p"] == pytest.approx(sps.chi2.sf(x2, 8))
    with pytest.raises(CeusError, match="all predicted risks are equal"):
        hosmer_lemeshow(y, np.full(500, 0.3))
    d = decision_curves(y, {"m": p})
    assert set(d["model"]) == {"m", "treat all", "treat none"} and (d[d.model == "treat none"].net_benefit == 0).all()
    row = d[(d.model == "m") & (d.threshold == 0.2)].iloc[0]
    tp, fp = np.sum((p >= 0.2) & (y == 1)), np.sum((p >= 0.2) & (y == 0))
    assert row.net_benefit == pytest.approx(tp / 500 - fp / 500 * 0.25)


def _cohort():
    rng = np.random.default_rng(1)
    n = 80
    label = np.r_[np.zeros(50), np.ones(30)].astype(int)
    split = np.where(np.arange(n) % 4 == 0, "test", "train")
    age = np.round(rng.normal(45 + 3 * label, 8), 0)
    size = np.round(rng.lognormal(2 + 0.4 * label, 0.8), 1)  # skewed: Mann-Whitney
    sex = np.where(rng.random(n) < 0.3 + 0.2 * label, "M", "F")
    margin = np.where(rng.random(n) < 0.1 + 0.1 * label, "irregular", "smooth")
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "label": label, "split": split, "age": age,
                         "size": size, "sex": sex, "margin": margin, "image": "x.png"})


def test_table1_tests_and_p_values():
    df = _cohort()
    t = table1(df)
    assert "image" not in t["Characteristic"].tolist() and "case_id" not in t["Characteristic"].tolist()
    tr = df[df.split == "train"]
    n0, n1 = int((tr.label == 0).sum()), int((tr.label == 1).sum())
    assert list(t.columns)[:6] == ["Characteristic", "Summary", f"Training set negative (n={n0})",
                                   f"Training set positive (n={n1})", "Training set P value", "Training set Test"]
    assert list(t.columns)[6:] == [f"Test set negative (n={50 - n0})", f"Test set positive (n={30 - n1})",
                                   "Test set P value", "Test set Test"]
    tests = t.attrs["tests"]
    for s, name in (("train", "Training set"), ("test", "Test set")):
        d = df[df.split == s]
        a, b = d[d.label == 0], d[d.label == 1]
        # continuous: median [IQR] and the Wilcoxon rank-sum test, whatever the shape (no pre-test; R's
        # exact/normal rule is checked against R's outputs in test_table1.py)
        test, p = wilcoxon_rank_sum(a["size"], b["size"])
        assert tests[f"size / {s}"] == test and test.startswith("Wilcoxon rank-sum")
        assert t.loc[t.Characteristic == "size", f"{name} P value"].item() == (f"{p:.3f}" if p >= 0.001 else "<0.001")
        assert "[" in t.loc[t.Characteristic == "size", f"{name} negative (n={len(a)})"].item()
        test, p = wilcoxon_rank_sum(a["age"], b["age"])
        assert tests[f"age / {s}"] == test == t.loc[t.Characteristic == "age", f"{name} Test"].item()
        assert t.loc[t.Characteristic == "age", f"{name} P value"].item() == (f"{p:.3f}" if p >= 0.001 else "<0.001")
        tab = pd.crosstab(d["margin"], d["label"]).to_numpy()
        exp = sps.contingency.expected_freq(tab)
        want = sps.fisher_exact(tab).pvalue if exp.min() < 5 else sps.chi2_contingency(tab).pvalue
        assert tests[f"margin / {s}"] == ("Fisher's exact" if exp.min() < 5 else "chi-squared, Yates-corrected")
        assert t.loc[t.Characteristic == "margin", f"{name} P value"].item() == f"{want:.3f}"
    # level rows: n (%) within class
    sm = t[t.Characteristic == "  M"].iloc[0]
    d = df[(df.split == "train") & (df.label == 0)]
    k = int((d.sex == "M").sum())
    assert sm[f"Training set negative (n={n0})"] == f"{k} ({100 * k / len(d):.2f})"
    assert tests["sex / train"] in ("chi-squared, Yates-corrected", "Fisher's exact")


def test_table1_rejects_bad_labels():
    df = _cohort()
    df.loc[3, "label"] = 2
    with pytest.raises(CeusError, match=r"data rows \[4\]"):
        table1(df)
