"""Clustered (patient-level) AUC and proportions, issue 23 item 6: several nodules of one patient are not
independent rows.

References: (1) with one row per patient Obuchowski's variance and paired test are DeLong's, checked
against this package's DeLong (pROC to 1e-12) and against pROC's own numbers in ../shared/stats-reference;
(2) a hand-computed example, and an independent brute-force transcription of Obuchowski (1997, Biometrics
53:567-578, eqs. for S10, S01, S11 and her covariance) as written, pair by pair, in the Cleveland Clinic
``funcs_clusteredROC.R`` / DIDSR ``doAUCcluster.R`` (whose help reproduces her Table 3 footer values);
(3) the failure of the issue: the same patients entered as two nodules each must not narrow the CI.
"""

from __future__ import annotations

import math
from fractions import Fraction as F

import numpy as np
import pytest
from paths import SHARED

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import read_csv_exact
from ceusfusion.stats import (
    auc_ci,
    cluster_bootstrap_ci,
    clustered_auc_ci,
    clustered_auc_test,
    clustered_auc_test_unpaired,
    clustered_metrics_at,
    clustered_proportion,
    delong_test,
    delong_test_unpaired,
    metrics_at,
    wilson_ci,
    wilson_interval,
)

REF = SHARED / "stats-reference"


def _data(seed: int, n: int = 80, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    a = rng.normal(0.8 * y, 1.0)
    b = a + rng.normal(0, 1.0, n)
    if ties:
        a, b = np.round(a, 0), np.round(b, 0)
    return y, a, b


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True), (3, False)])
def test_one_row_per_patient_is_delong(seed, ties):
    y, a, b = _data(seed, ties=ties)
    groups = [f"p{i}" for i in range(len(y))]
    d, c = auc_ci(y, a), clustered_auc_ci(y, a, groups)
    assert c.auc == d.auc and c.n_groups == len(y)
    assert abs(c.var - d.var) <= 1e-10 and abs(c.ci[0] - d.ci[0]) <= 1e-10 and abs(c.ci[1] - d.ci[1]) <= 1e-10
    t, u = delong_test(y, a, b), clustered_auc_test(y, a, b, groups)
    assert abs(u.var_diff - t.var_diff) <= 1e-10 and abs(u.z - t.z) <= 1e-10 and abs(u.p - t.p) <= 1e-10
    assert abs(u.diff_ci[0] - t.diff_ci[0]) <= 1e-10 and u.paired
    t2 = delong_test_unpaired(y[:40], a[:40], y[40:], b[40:])
    u2 = clustered_auc_test_unpaired(y[:40], a[:40], groups[:40], y[40:], b[40:], groups[40:])
    assert abs(u2.z - t2.z) <= 1e-10 and abs(u2.p - t2.p) <= 1e-10 and not u2.paired


@pytest.mark.skipif(not REF.is_dir(), reason="../shared/stats-reference is absent")
def test_one_row_per_patient_matches_proc_reference():
    """pROC var(roc, method = "delong") on the committed reference data, through Obuchowski's formulas."""
    import json  # only this test reads the reference JSON

    df = read_csv_exact(REF / "b_clinical.csv")
    ref = json.loads((REF / "b_clinical.ref.json").read_text())
    checked = 0
    for g, res in ref["results"].items():
        sub = df if g == "all" else df[df["set"] == g]
        for s, r in res["scores"].items():
            if not r["auc"]["ok"] or r["auc"]["ci_delong"]["lower"] is None:
                continue
            c = clustered_auc_ci(sub["y"].to_numpy(), sub[s].to_numpy(), np.arange(len(sub)))
            assert abs(c.var - r["auc"]["var_delong"]) <= 1e-12 and abs(c.ci[0] - r["auc"]["ci_delong"]["lower"]) <= 1e-12
            checked += 1
    assert checked >= 2


def test_hand_computed_example():
    """Four patients. P1: case 0.9, control 0.3; P2: case 0.4, control 0.5; P3: case 0.7; P4: controls 0.1, 0.6.

    V10 (share of the 4 controls below each case): 1, 1/2, 1; V01 (share of the 3 cases above each control):
    1, 2/3, 1, 2/3; A = 10/12 = 5/6. Centred patient sums x_i = V10_i - m_i A = 1/6, -1/3, 1/6, 0 and
    z_i = V01_i - n_i A = 1/6, -1/6, 0, 0. I10 = I01 = 3, I = 4, M = 3, N = 4:
    S10 = 3/(2*3) * 6/36 = 1/12, S01 = 3/(2*4) * 2/36 = 1/48, S11 = 4/3 * 3/36 = 1/9,
    var = S10/M + S01/N + 2 S11/(MN) = 1/36 + 1/192 + 1/54 = 89/1728 (DeLong, ignoring patients: 1/27 = 64/1728).
    """
    y = [1, 0, 1, 0, 1, 0, 0]
    s = [0.9, 0.3, 0.4, 0.5, 0.7, 0.1, 0.6]
    g = ["P1", "P1", "P2", "P2", "P3", "P4", "P4"]
    c = clustered_auc_ci(y, s, g)
    assert c.auc == pytest.approx(5 / 6, abs=1e-15)
    assert c.var == pytest.approx(float(F(89, 1728)), abs=1e-15)
    assert auc_ci(y, s).var == pytest.approx(float(F(1, 27)), abs=1e-15)
    assert (c.n_groups, c.groups_pos, c.groups_neg, c.n_pos, c.n_neg) == (4, 3, 3, 3, 4)


def _brute_force(y, a, b, g):
    """Obuchowski (1997) term by term, with explicit loops over clusters and pairs (no placements reused)."""
    y, g = np.asarray(y), np.asarray(g)
    psi = lambda x, z: 1.0 if x > z else (0.5 if x == z else 0.0)  # noqa: E731
    ids = list(dict.fromkeys(g.tolist()))
    out = {}
    for name, s in (("a", a), ("b", b)):
        X, Y = s[y == 1], s[y == 0]
        M, N = len(X), len(Y)
        auc = sum(psi(x, z) for x in X for z in Y) / (M * N)
        xs, zs = [], []
        for i in ids:
            xi, zi = s[(g == i) & (y == 1)], s[(g == i) & (y == 0)]
            xs.append(sum(sum(psi(x, z) for z in Y) / N for x in xi) - len(xi) * auc)
            zs.append(sum(sum(psi(x, z) for x in X) / M for z in zi) - len(zi) * auc)
        out[name] = (auc, np.array(xs), np.array(zs))
    m = np.array([np.sum((g == i) & (y == 1)) for i in ids])
    n = np.array([np.sum((g == i) & (y == 0)) for i in ids])
    I10, I01, I, M, N = (m > 0).sum(), (n > 0).sum(), len(ids), m.sum(), n.sum()

    def cov(p, q):
        (_, xp, zp), (_, xq, zq) = out[p], out[q]
        s10 = I10 / ((I10 - 1) * M) * np.sum(xp * xq)
        s01 = I01 / ((I01 - 1) * N) * np.sum(zp * zq)
        return s10 / M + s01 / N + (I / (I - 1) * np.sum(xp * zq) + I / (I - 1) * np.sum(xq * zp)) / (M * N)

    return out["a"][0], out["b"][0], cov("a", "a"), cov("b", "b"), cov("a", "b")


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_obuchowski_with_ties_and_mixed_clusters(seed):
    rng = np.random.default_rng(seed)
    size = rng.integers(1, 4, 30)  # 1-3 nodules per patient, each nodule its own outcome
    g = np.repeat([f"pt{i}" for i in range(30)], size)
    u = np.repeat(rng.normal(0, 1, 30), size)  # patient effect: nodules of one patient are alike
    y = (rng.random(len(g)) < 0.4).astype(int)
    a = np.round(u + y + rng.normal(0, 1, len(g)), 1)
    b = np.round(u + 0.5 * y + rng.normal(0, 1, len(g)), 1)
    auc_a, auc_b, va, vb, cab = _brute_force(y, a, b, g)
    ca, cb = clustered_auc_ci(y, a, g), clustered_auc_ci(y, b, g)
    t = clustered_auc_test(y, a, b, g)
    assert ca.auc == pytest.approx(auc_a, abs=1e-12) and cb.auc == pytest.approx(auc_b, abs=1e-12)
    assert ca.var == pytest.approx(va, abs=1e-12) and cb.var == pytest.approx(vb, abs=1e-12)
    assert t.var_diff == pytest.approx(va + vb - 2 * cab, abs=1e-12)
    assert t.z == pytest.approx((auc_a - auc_b) / math.sqrt(va + vb - 2 * cab), rel=1e-10)


def _duplicated(n=60, seed=4):
    """The issue's failure: the same patients entered as two nodules each (same outcome, almost the same score)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(int)
    s = rng.normal(0.55 * y, 1.0)
    yy, ss = np.repeat(y, 2), np.repeat(s, 2)
    return y, s, yy, ss, np.repeat(np.arange(n), 2)


def test_duplicating_every_patient_does_not_narrow_the_auc_ci():
    y, s, yy, ss, g = _duplicated()
    w = lambda ci: ci[1] - ci[0]  # noqa: E731
    original, naive, clustered = auc_ci(y, s), auc_ci(yy, ss), clustered_auc_ci(yy, ss, g)
    assert clustered.auc == original.auc
    assert w(clustered.ci) == pytest.approx(w(original.ci), abs=1e-12)  # exactly the same patients, the same CI
    assert w(naive.ci) < 0.75 * w(original.ci)  # what DeLong on rows does: about 1/sqrt(2) as wide
    # with a little nodule-to-nodule noise the clustered width stays within a few percent of the original
    ss2 = ss + np.random.default_rng(5).normal(0, 0.05, len(ss))
    assert w(clustered_auc_ci(yy, ss2, g).ci) == pytest.approx(w(original.ci), rel=0.05)


def test_duplicating_every_patient_does_not_narrow_the_proportion_cis():
    y, s, yy, ss, g = _duplicated()
    thr = 0.2
    base, naive, clu = metrics_at(y, s, thr), metrics_at(yy, ss, thr), clustered_metrics_at(yy, ss, thr, g)
    for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
        wb, wn, wc = (np.diff(m[f"{k}_ci"])[0] for m in (base, naive, clu))
        assert clu[k] == base[k]
        assert wc == pytest.approx(wb, rel=0.05), k  # n_eff = n - 1 patients instead of n
        assert wn < 0.8 * wb, k
    assert clu["n_groups"] == 60 and set(clu["design_effect"]) == {"sensitivity", "specificity", "ppv", "npv", "accuracy"}
    # the cluster bootstrap: doubling every patient's counts resamples the same patients, the same ratios
    counts = np.stack([(s >= thr) & (y == 1), (s >= thr) & (y == 0), (s < thr) & (y == 0), (s < thr) & (y == 1)], 1)
    counts = counts.astype(float)
    assert cluster_bootstrap_ci(counts, 500, 7) == cluster_bootstrap_ci(2 * counts, 500, 7)
    labels = np.array([f"p{i:03d}" for i in g])  # sorted like the rows of counts
    boot = clustered_metrics_at(yy, ss, thr, labels, ci="bootstrap", n_boot=500, seed=7)
    assert boot["sensitivity_ci"] == list(cluster_bootstrap_ci(counts, 500, 7)["sensitivity"])


def test_wilson_and_design_effect():
    assert wilson_interval(7 / 20, 20) == pytest.approx(wilson_ci(7, 20), abs=1e-14)
    assert wilson_interval(0.0, 12) == pytest.approx(wilson_ci(0, 12), abs=1e-14)
    # every patient concordant (two nodules, same result): deff close to 2, the interval of about n/2 patients
    r = clustered_proportion([2, 2, 0, 2, 0, 0, 2, 2, 0, 2], [2] * 10)
    assert r["p"] == 0.6 and r["deff"] == pytest.approx(2 * 10 / 9) and r["n_eff"] == pytest.approx(9.0)
    assert r["ci"] == pytest.approx(wilson_interval(0.6, 9.0))
    # every patient discordant: deff would be 0, held at 1 (never narrower than row-level Wilson)
    r = clustered_proportion([1] * 10, [2] * 10)
    assert r["deff"] == 1.0 and r["ci"] == pytest.approx(wilson_ci(10, 20))
    # all successes: no design effect; the effective size is the number of patients
    r = clustered_proportion([2, 2, 2], [2, 2, 2])
    assert math.isnan(r["deff"]) and r["n_eff"] == 3 and r["ci"] == pytest.approx(wilson_ci(3, 3))


def test_undefined_and_bad_input():
    c = clustered_auc_ci([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2], ["a", "a", "b", "c"])  # all cases in one patient
    assert not c.ci_defined and math.isnan(c.var) and "fewer than two patients" in c.note
    with pytest.raises(CeusError, match="missing group"):
        clustered_auc_ci([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2], ["a", None, "b", "c"])
    with pytest.raises(CeusError, match="groups has shape"):
        clustered_auc_ci([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2], ["a", "b"])
    with pytest.raises(CeusError, match="only one class"):
        clustered_auc_ci([1, 1], [0.9, 0.1], ["a", "b"])


def test_clustered_variance_tracks_the_sampling_variance():
    """Monte Carlo: patients with 1-3 strongly correlated nodules. Obuchowski's variance averages close to the
    AUC's true sampling variance; DeLong on rows underestimates it by far (ratios about 1.0 and 0.45 over seeds 11-14)."""
    rng = np.random.default_rng(11)
    aucs, v_obu, v_del = [], [], []
    for _ in range(400):
        size = rng.integers(1, 4, 50)
        g = np.repeat(np.arange(50), size)
        yp = rng.random(50) < 0.4  # one outcome per patient: the nodules share it
        y = np.repeat(yp, size).astype(int)
        s = np.repeat(rng.normal(0.8 * yp, 1.0), size) + rng.normal(0, 0.3, len(g))
        c, d = clustered_auc_ci(y, s, g), auc_ci(y, s)
        aucs.append(c.auc), v_obu.append(c.var), v_del.append(d.var)
    true = np.var(aucs, ddof=1)
    assert 0.8 < np.mean(v_obu) / true < 1.25
    assert np.mean(v_del) / true < 0.7
