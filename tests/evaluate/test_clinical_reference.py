"""The clinical statistics against R (Hmisc, rms, pmsampsize, metafor, pROC) and dcurves reference values.

The references are committed (CI has no R): ``data/reference_clinical.json`` from
``data/reference_clinical.R`` and ``data/nia_reference.json`` from ``data/reference_nia.py``; each file's
header says how to regenerate it. Tolerances: counts exact; closed-form statistics (NRI, IDI, SE, p,
Q, I2, net interventions avoided, sample sizes, pretty) 1e-12; z 1e-12 relative; the nomogram (an
iterative ML fit) 1e-6; the bootstrap within Monte-Carlo error (0.01 on the corrected c-index), its
apparent indexes 1e-6.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from paths import ROOT, SHARED

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import read_csv_exact
from ceusfusion.stats import (
    heterogeneity,
    improve_prob,
    net_interventions_avoided,
    nomogram,
    nri,
    pmsampsize,
    pmsampsize_binary,
    r_pretty,
    subgroup_auc,
    validate_logistic,
)

DATA = ROOT / "tests" / "evaluate" / "data"
REF = json.loads((DATA / "reference_clinical.json").read_text())
NIA = json.loads((DATA / "nia_reference.json").read_text())
KEYS = ["n", "na", "nb", "pup.ev", "pup.ne", "pdown.ev", "pdown.ne", "nri", "se.nri", "z.nri", "p.nri", "nri.ev", "se.nri.ev",
        "z.nri.ev", "p.nri.ev", "nri.ne", "se.nri.ne", "z.nri.ne", "p.nri.ne", "improveSens", "improveSpec", "idi", "se.idi",
        "z.idi", "p.idi"]


def f(x):
    """JSON number / "NaN" / "Infinity" / null -> float (null, R's NA, -> nan)."""
    return float("nan") if x is None else float(x)


def close(a, b, tol=1e-12, rel=0.0) -> bool:
    a, b = float(a), f(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol + rel * abs(b)


def check_improve(r, ref: dict) -> None:
    for k in KEYS:
        assert close(r[k], ref[k], rel=1e-12 if k.startswith("z") else 0.0), (k, r[k], ref[k])


def _case_id(c):
    return c["name"]


@pytest.mark.parametrize("case", REF["reclassification"], ids=_case_id)
def test_improve_prob_continuous_and_categorical(case):
    y, x1, x2 = np.array(case["y"]), np.array(case["x1"], float), np.array(case["x2"], float)
    if "error" in case["continuous"]:
        with pytest.raises(CeusError, match="two values: 0 and 1|must be probabilities"):
            improve_prob(y, x1, x2)
        return
    r = improve_prob(y, x1, x2)
    check_improve(r, case["continuous"])
    for plain, rname in (("nri_events", "nri_ev"), ("nri_nonevents", "nri_ne"), ("se", "se_nri"), ("p", "p_nri"), ("z", "z_nri")):
        assert close(getattr(r, plain), getattr(r, rname))
    for cc in case["categorical"]:
        check_improve(nri(y, x1, x2, cuts=cc["cuts"]), cc["result"])
        check_improve(nri(y, x1, x2, cuts=cc["cuts"], right=True), cc["result_right"])  # R cut(right = TRUE)


@pytest.mark.skipif(not (SHARED / "stats-reference").is_dir(), reason="../shared/stats-reference is absent")
@pytest.mark.parametrize("case", REF["reclassification_shared"], ids=lambda c: f"{c['file']}-{c['group']}-{c['x1']}-{c['x2']}")
def test_improve_prob_on_shared_reference_data(case):
    df = read_csv_exact(SHARED / "stats-reference" / case["file"])
    if case["group"] != "all":
        df = df[df["set"] == case["group"]]
    y, x1, x2 = df["y"].to_numpy(), df[case["x1"]].to_numpy(), df[case["x2"]].to_numpy()
    if "error" in case["continuous"]:
        with pytest.raises(CeusError, match="two values"):
            improve_prob(y, x1, x2)
        return
    check_improve(improve_prob(y, x1, x2), case["continuous"])
    check_improve(nri(y, x1, x2, cuts=(0.1, 0.2, 0.3)), case["categorical_0.1_0.2_0.3"])


@pytest.mark.parametrize("case", NIA["cases"], ids=_case_id)
def test_net_interventions_avoided_matches_dcurves(case):
    t = np.array(NIA["thresholds"])
    for m, s in case["scores"].items():
        got = net_interventions_avoided(case["y"], s, t, nper=100)
        if "error" in case:  # dcurves divides by the number of positives; the formula is still defined
            assert np.all(np.isfinite(got["net_intervention_avoided"]))
            continue
        ref = case["models"][m]
        np.testing.assert_allclose(got["net_benefit"], [f(v) for v in ref["net_benefit"]], rtol=0, atol=1e-13)
        np.testing.assert_allclose(got["net_intervention_avoided"], [f(v) for v in ref["net_intervention_avoided"]],
                                   rtol=0, atol=1e-11)


def _shared_dca_cases():
    ref = SHARED / "stats-reference"
    if not ref.is_dir():
        return []
    out = []
    for p in sorted(ref.glob("*.dca.json")):
        d = json.loads(p.read_text())
        for g, res in d["results"].items():
            if res["dcurves"]["ok"]:
                out += [(p.name.replace(".dca.json", ""), g, m) for m in d["input"]["score_columns"]]
    return out


@pytest.mark.parametrize("name,g,m", _shared_dca_cases())
def test_net_interventions_avoided_on_shared_dcurves_reference(name, g, m):
    ref = SHARED / "stats-reference"
    df = read_csv_exact(ref / f"{name}.csv")
    d = json.loads((ref / f"{name}.dca.json").read_text())
    sub = df if g == "all" else df[df["set"] == g]
    got = net_interventions_avoided(sub["y"].to_numpy(), sub[m].to_numpy(), np.array(d["thresholds"]), nper=1)
    want = [f(v) for v in d["results"][g]["dcurves"]["models"][m]["net_intervention_avoided"]]
    np.testing.assert_allclose(got["net_intervention_avoided"], want, rtol=0, atol=1e-11)


@pytest.mark.parametrize("case", REF["nomograms"], ids=_case_id)
def test_nomogram_points_match_rms(case):
    data = {k: v for k, v in case["data"].items() if k != "y"}
    nm = nomogram(pd.DataFrame(data), case["data"]["y"], fun_at=case["fun_at"])
    for k, v in case["coefficients"].items():
        assert abs(nm.coefficients[k] - v) < 1e-6 * max(1, abs(v)), k
    assert [a.name for a in nm.axes] == [a["name"] for a in case["axes"]]
    for a, ra in zip(nm.axes, case["axes"]):
        assert list(a.values) == ra["values"]
        np.testing.assert_allclose(a.points, ra["points"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.xbeta, ra["Xbeta"], rtol=0, atol=1e-6)
    for ours, theirs in (("total_points", "total_points"), ("lp_at", "lp_at"), ("lp_points", "lp_points"),
                         ("fun_at", "fun_at_out"), ("fun_points", "fun_points")):
        np.testing.assert_allclose(getattr(nm, ours), case[theirs], rtol=0, atol=1e-6, err_msg=ours)
    assert abs(nm.scale - case["sc"]) < 1e-6 and abs(nm.intercept - case["Intercept"]) < 1e-6


def test_nomogram_predicts_its_own_fit():
    case = REF["nomograms"][1]
    df = pd.DataFrame({k: v for k, v in case["data"].items() if k != "y"})
    nm = nomogram(df, case["data"]["y"])
    lp = nm.linear_predictor(df)
    total = sum(np.interp(df[a.name], a.values, a.points) if a.terms == (a.name,) else
                np.array([dict(zip(a.values, a.points))[v] for v in df[a.name]]) for a in nm.axes)
    np.testing.assert_allclose(nm.intercept + total / nm.scale, lp, atol=1e-9)  # points add up to the model


@pytest.mark.parametrize("case", REF["samplesize"], ids=lambda c: json.dumps(c["args"], sort_keys=True))
def test_pmsampsize_binary_matches_r(case):
    ref = case["result"]
    if "error" in ref:
        with pytest.raises(CeusError):
            pmsampsize_binary(**case["args"])
        return
    r = pmsampsize_binary(**case["args"])
    assert r.sample_size == ref["sample_size"]
    for k in ("events", "EPP", "final_shrinkage", "rsquared", "max_r2a", "nag_r2"):
        assert close(getattr(r, k), ref[k]), k
    for row, rrow in zip(r.results_table, ref["results_table"].values()):
        assert {k: row[k] for k in rrow} == pytest.approx(rrow, abs=1e-12)


def test_pmsampsize_worked_examples_of_riley_et_al():
    """Riley et al. (Stat Med 2019 part II; BMJ 2020): the Chagas diagnostic model, 24 parameters,
    prevalence 0.174, Cox-Snell R2 0.288 -> criteria 623 / 662 / 221, so 662 patients, EPP 4.8."""
    r = pmsampsize_binary(24, 0.174, csrsquared=0.288)
    assert r.criteria == (623, 662, 221) and r.sample_size == 662 and r.EPP == 4.8
    assert math.ceil(r.events) == 116
    assert pmsampsize_binary(24, 0.174, csrsquared=0.55).criteria == (255, 532, 221)
    assert pmsampsize_binary(36, 0.174, csrsquared=0.288).sample_size == 992
    assert pmsampsize_binary(24, 0.25, csrsquared=0.288).criteria == (623, 590, 289)
    assert pmsampsize(type="b", csrsquared=0.288, parameters=24.0, prevalence=0.174).sample_size == 662  # R's call
    with pytest.raises(CeusError, match="binary"):
        pmsampsize(type="s", csrsquared=0.288, parameters=24, prevalence=0.174)


@pytest.mark.parametrize("case", REF["centres"], ids=_case_id)
def test_subgroup_auc_and_heterogeneity_match_proc_and_metafor(case):
    r = subgroup_auc(case["y"], case["score"], case["strata"])
    for s in r["strata"]:
        ref = case["per_stratum"][s["stratum"]]
        assert s["n"] == ref["n"] and s["n_pos"] == ref["n_pos"]
        if "error" in ref:
            assert s["auc"] is None and s["stratum"] in r["excluded"]
            continue
        assert close(s["auc"], ref["auc"]) and close(s["var"], ref["var"])
    h, hr = r["heterogeneity"], case["heterogeneity"]
    if hr is None:
        assert h is None and r["note"]
        return
    assert sorted(set(s["stratum"] for s in r["strata"]) - set(r["excluded"])) == hr["strata"]
    for k in ("QE", "QEp", "tau2", "I2", "estimate_fe", "se_fe", "estimate_re", "se_re"):
        assert close(h[k], hr[k], tol=1e-10), k
    assert h["df"] == hr["df"]


def test_heterogeneity_rejects_unusable_variances():
    with pytest.raises(CeusError, match="at least 2"):
        heterogeneity([0.7], [0.01])
    with pytest.raises(CeusError, match="> 0"):
        heterogeneity([0.7, 0.8], [0.01, 0.0])


def test_r_pretty_matches_r():
    for c in REF["pretty"]:
        got = r_pretty([c["lo"], c["hi"]], c["n"])
        want = np.array(c["pretty"], float)
        assert got.shape == want.shape, (c, got, want)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("case", REF["validation"], ids=_case_id)
def test_bootstrap_validation_matches_rms_validate(case):
    X, y = np.column_stack(case["X"]), np.array(case["y"])
    v = validate_logistic(X, y, B=300, seed=1)
    ref = case["validate"]
    for k, row in ref.items():
        assert close(v[k]["index_orig"], row["index.orig"], tol=1e-6), k  # the apparent indexes: deterministic
    c_ours = v["C"]["index_corrected"]
    c_rms = 0.5 * (1 + row_value(ref, "Dxy"))
    assert abs(c_ours - c_rms) < 0.01  # Monte-Carlo error of B = 300 and R's B = 2000
    assert abs(v["Slope"]["index_corrected"] - row_value(ref, "Slope")) < 0.06
    assert abs(v["B"]["index_corrected"] - row_value(ref, "B")) < 0.005
    assert v.B == 300 and v["Dxy"]["n"] + v.n_failed == 300


def row_value(ref: dict, k: str) -> float:
    return f(ref[k]["index.corrected"])
