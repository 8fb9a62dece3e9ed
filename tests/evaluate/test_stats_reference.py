"""ceusfusion.stats against R pROC / rms / ResourceSelection / dcurves reference vectors.

Tolerances follow ../shared/stats-reference/README.md: counts and threshold
sets exact, AUC/DeLong/Z/p/Brier/H-L/net benefit 1e-12, lowess errors 1e-10,
iteratively fitted intercept/slope 1e-6 relative.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from paths import SHARED

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import read_csv_exact
from ceusfusion.stats import (
    auc_ci,
    brier,
    calibration_errors,
    calibration_in_the_large,
    confusion,
    delong_test,
    hosmer_lemeshow,
    logistic_recalibration,
    net_benefit,
    treat_all,
    youden,
)

REF = SHARED / "stats-reference"
SMALL = ["a_small_ties", "b_clinical", "c_separated", "d_constant", "f_single_class", "g_one_positive"]
ALL = SMALL + ["e_large"]

pytestmark = pytest.mark.skipif(not REF.is_dir(), reason="../shared/stats-reference is absent")

ABS = 1e-12


def f(x):
    """JSON number / "NaN" / "Infinity" / null -> float (null -> nan)."""
    return float("nan") if x is None else float(x)


def close(a, b, tol=ABS, rel=0.0):
    a, b = float(a), f(b)
    if math.isnan(b) or math.isnan(a):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(b) or math.isinf(a):
        return a == b
    return abs(a - b) <= tol + rel * abs(b)


_cache: dict = {}


def load(name):
    if name not in _cache:
        df = read_csv_exact(REF / f"{name}.csv")
        ref = json.loads((REF / f"{name}.ref.json").read_text())
        dca = json.loads((REF / f"{name}.dca.json").read_text())
        _cache[name] = (df, ref, dca)
    return _cache[name]


def groups(name):
    df, ref, dca = load(name)
    for g, res in ref["results"].items():
        sub = df if g == "all" else df[df["set"] == g]
        yield g, sub, res, dca["results"][g]


def cases(names):
    out = []
    for name in names:
        df, ref, _ = load(name) if REF.is_dir() else (None, None, None)
        if ref is None:
            return [pytest.param(None, None, None, marks=pytest.mark.skip)]
        for g in ref["results"]:
            for s in ref["input"]["score_columns"]:
                out.append((name, g, s))
    return out


def get(name, g, s):
    df, ref, dca = load(name)
    sub = df if g == "all" else df[df["set"] == g]
    return sub["y"].to_numpy(), sub[s].to_numpy(), ref["results"][g], dca["results"][g]


PARAMS = cases(ALL) if REF.is_dir() else []


@pytest.mark.parametrize("name,g,s", PARAMS)
def test_auc_and_delong_ci(name, g, s):
    y, x, res, _ = get(name, g, s)
    r = res["scores"][s]["auc"]
    if not r["ok"]:
        with pytest.raises(CeusError, match="only one class"):
            auc_ci(y, x)
        return
    a = auc_ci(y, x)
    assert close(a.auc, r["auc"])
    ci = r["ci_delong"]
    if ci["lower"] is None:  # one case: pROC gives NA; we flag it
        assert not a.ci_defined and math.isnan(a.ci[0]) and math.isnan(a.ci[1]) and math.isnan(a.var)
        assert a.note and "undefined" in a.note
        return
    assert a.ci_defined
    assert close(a.ci[0], ci["lower"]) and close(a.ci[1], ci["upper"])
    assert close(a.var, r["var_delong"]) and close(a.se, r["se_delong"])
    assert close(a.ci_unclipped[0], r["ci_delong_unclipped"]["lower"])
    assert close(a.ci_unclipped[1], r["ci_delong_unclipped"]["upper"])


@pytest.mark.parametrize("name,g,s", PARAMS)
def test_youden_threshold_and_metrics(name, g, s):
    y, x, res, _ = get(name, g, s)
    r = res["scores"][s]["youden"]
    if not r["ok"]:
        with pytest.raises(CeusError):
            youden(y, x)
        return
    yd = youden(y, x)
    ref_thr = [f(b["threshold"]) for b in r["best"]]
    assert list(yd.thresholds) == ref_thr  # exact, including ±inf and tie sets
    assert yd.threshold == ref_thr[0]
    assert close(yd.j, r["best"][0]["youden_J"])
    for b in r["best"]:
        c = confusion(y, x, f(b["threshold"]))
        at = b["at_threshold"]
        assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (at["tp"], at["fp"], at["tn"], at["fn"])
        for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
            assert close(c[k], at[k], 0.0), k
        eq = b["equivalent_observed_score_threshold"]
        if eq is not None:
            c2 = confusion(y, x, eq)
            assert (c2["tp"], c2["fp"]) == (c["tp"], c["fp"])


@pytest.mark.parametrize("name,g,s", PARAMS)
def test_calibration(name, g, s):
    y, x, res, _ = get(name, g, s)
    sc = res["scores"][s]
    cal = sc["calibration"]
    assert close(brier(y, x), np.mean((x - y) ** 2))
    if cal["ok"]:
        assert close(brier(y, x), cal["Brier"])
    if res["n_pos"] in (0, res["n"]):
        with pytest.raises(CeusError):
            logistic_recalibration(y, x)
    else:
        rec = logistic_recalibration(y, x)
        if not cal["ok"]:  # m_hard: all p in {0, 1}
            assert math.isnan(rec["slope"]) and "0 or 1" in rec["note"]
        elif abs(cal["Slope"]) > 40:  # perfect separation: lrm.fit stopped anywhere
            assert math.isnan(rec["slope"]) and "separation" in rec["note"]
        else:
            # one case: the likelihood is flat and lrm.fit stops with a score of ~1e-5;
            # ours is the exact MLE (score equations checked below), so 1e-4 there
            rel = 1e-6 if min(res["n_pos"], res["n_neg"]) > 1 else 1e-4
            assert close(rec["intercept"], cal["Intercept"], 1e-9, rel)
            assert close(rec["slope"], cal["Slope"], 1e-9, rel)
            lx = np.log(x / (1 - x))
            resid = y - 1 / (1 + np.exp(-(rec["intercept"] + rec["slope"] * lx)))
            if rec["slope"] != 0.0:
                assert abs(resid.sum()) < 1e-8 and abs((resid * lx).sum()) < 1e-8
            e = calibration_errors(y, x)
            if cal["note"] is None:
                assert close(e["emax"], cal["Emax"], 1e-12)
                assert close(e["eavg"], cal["Eavg"], 1e-12)
                assert close(e["e90"], cal["E90"], 1e-12)
            else:  # constant predictions: rms mislabels; |p - mean(y)| sits under "Eavg"
                assert rec["slope"] == 0.0 and "constant" in rec["note"]
                assert close(e["eavg"], cal["Eavg"], 1e-12) and close(e["emax"], cal["Eavg"], 1e-12)
    citl = sc["calibration_in_the_large"]
    if citl["ok"] and 0 < res["n_pos"] < res["n"]:
        assert close(calibration_in_the_large(y, x), citl["intercept"], 1e-9, 1e-6)
    elif not citl["ok"]:
        with pytest.raises(CeusError):
            calibration_in_the_large(y, x)


@pytest.mark.parametrize("name,g,s", PARAMS)
def test_hosmer_lemeshow(name, g, s):
    y, x, res, _ = get(name, g, s)
    r = res["scores"][s]["hosmer_lemeshow"]
    if not r["ok"]:
        with pytest.raises(CeusError):
            hosmer_lemeshow(y, x)
        return
    hl = hosmer_lemeshow(y, x)
    assert hl["breaks"] == [f(b) for b in r["breaks"]]  # bit-identical
    assert hl["df"] == r["df"] and hl["groups"] == r["groups_nonempty"]
    assert close(hl["chi2"], r["X2"], 1e-12, 1e-13)
    assert close(hl["p"], r["p_upper_tail"])
    if math.isnan(f(r["X2"])):
        assert "empty" in hl["note"]


@pytest.mark.parametrize("name,g,s", PARAMS)
def test_dca_net_benefit(name, g, s):
    y, x, _, d = get(name, g, s)
    nb = net_benefit(y, x)
    assert nb["tp"].tolist() == d["formula_counts"][s]["tp"]
    assert nb["fp"].tolist() == d["formula_counts"][s]["fp"]
    np.testing.assert_allclose(nb["net_benefit"], [f(v) for v in d["net_benefit_formula"][s]], rtol=0, atol=ABS)
    np.testing.assert_allclose(treat_all(y), [f(v) for v in d["net_benefit_formula"]["all"]], rtol=0, atol=ABS)
    if d["dcurves"]["ok"]:
        np.testing.assert_allclose(nb["net_benefit"], d["dcurves"]["models"][s]["net_benefit"], rtol=0, atol=1e-13)


def _pair_params():
    out = []
    for name in ALL:
        _, ref, _ = load(name)
        for g, res in ref["results"].items():
            for i, p in enumerate(res["pairs"]):
                out.append((name, g, i))
    return out


@pytest.mark.parametrize("name,g,i", _pair_params() if REF.is_dir() else [])
def test_paired_delong(name, g, i):
    df, ref, _ = load(name)
    sub = df if g == "all" else df[df["set"] == g]
    p = ref["results"][g]["pairs"][i]
    y, a, b = sub["y"].to_numpy(), sub[p["score1"]].to_numpy(), sub[p["score2"]].to_numpy()
    if not p["ok"]:
        with pytest.raises(CeusError, match="only one class"):
            delong_test(y, a, b)
        return
    t = delong_test(y, a, b)
    assert close(t.auc_a, p["auc1"]) and close(t.auc_b, p["auc2"])
    assert close(t.z, p["Z"], 1e-12, 1e-12)
    assert close(t.p, p["p_value"], 1e-12, 1e-10)
    assert close(t.diff_ci[0], p["diff_ci"]["lower"]) and close(t.diff_ci[1], p["diff_ci"]["upper"])
    if math.isnan(f(p["Z"])):
        assert t.note and "undefined" in t.note


def test_train_threshold_on_test():
    df, ref, _ = load("b_clinical")
    tr, te = df[df["set"] == "train"], df[df["set"] == "test"]
    for s, r in ref["train_threshold_on_test"].items():
        yd = youden(tr["y"], tr[s])
        assert yd.threshold == r["train_threshold"]
        assert list(yd.thresholds) == r["train_thresholds_all"]
        c = confusion(te["y"], te[s], yd.threshold)
        at = r["at_threshold"]
        assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (at["tp"], at["fp"], at["tn"], at["fn"])
        for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
            assert close(c[k], at[k], 0.0)
