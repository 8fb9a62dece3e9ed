"""ROC AUC with DeLong confidence intervals and tests (fast algorithm, Sun & Xu 2014).

DeLong's variance needs the placement of every case among the controls
(V10) and of every control among the cases (V01). Sun & Xu obtain them from
midranks; here the same counts come from two sorts and binary searches
(``searchsorted`` left/right = strictly-less / less-or-equal counts), so ties
count one half exactly and the cost is O(n log n). Conventions follow R's
pROC (direction "<": higher score = case; the CI is clipped to [0, 1]; with
fewer than two cases or controls the variance is undefined and reported as
NaN with a note rather than as a number).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import norm

from ceusfusion.stats._checks import check_binary


@dataclass(frozen=True)
class AUCResult:
    auc: float
    ci: tuple[float, float]  # DeLong CI clipped to [0, 1] like pROC; (nan, nan) when undefined
    var: float
    se: float
    ci_unclipped: tuple[float, float]
    n_pos: int
    n_neg: int
    conf_level: float = 0.95
    ci_defined: bool = True
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DeLongTest:
    auc_a: float
    auc_b: float
    diff: float
    z: float
    p: float
    diff_ci: tuple[float, float]
    var_diff: float
    paired: bool
    conf_level: float = 0.95
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RocCurve:
    """Every pROC operating point: thresholds ascending from -inf to +inf ("score >= t" is positive)."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_pos: int
    n_neg: int
    sensitivity: np.ndarray = field(repr=False)
    specificity: np.ndarray = field(repr=False)


def placements(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """DeLong placements (V10 per case, V01 per control, in input order) and the AUC.

    V10_i = (#controls < x_i + 0.5 #controls == x_i) / n0, and
    V01_j = (#cases > y_j + 0.5 #cases == y_j) / n1. Inputs must be validated.
    Sun & Xu (2014): one sort of all scores; the counts below and equal to each
    score come from cumulative class counts over its tie group (integers, so the
    AUC is exact), then are put back in input order.
    """
    n = len(score)
    order = np.argsort(score)
    s = score[order]
    ys = y[order].astype(np.int64)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    cpos = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(ys, out=cpos[1:])
    n1 = int(cpos[-1])
    n0 = n - n1
    pos_below = cpos[starts]
    pos_tied = cpos[ends] - pos_below
    neg_below = starts - pos_below
    neg_tied = (ends - starts) - pos_tied
    group = np.cumsum(new) - 1
    # per sorted element: a case needs the controls at or below it, a control the cases at or below it
    twice = np.where(ys == 1, (2 * neg_below + neg_tied)[group], (2 * pos_below + pos_tied)[group])
    full = np.empty(n, dtype=np.int64)
    full[order] = twice
    is_pos = y == 1
    twice_less_eq = full[is_pos]
    v10 = twice_less_eq / (2.0 * n0)
    v01 = (2 * n1 - full[~is_pos]) / (2.0 * n1)
    auc = float(twice_less_eq.sum(dtype=np.int64)) / (2.0 * n1 * n0)
    return v10, v01, auc


def _clipped_ci(theta: float, se: float, conf_level: float) -> tuple[tuple[float, float], tuple[float, float]]:
    q = norm.ppf(0.5 + conf_level / 2.0)
    lo, hi = theta - q * se, theta + q * se
    return (min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)), (lo, hi)


def _auc_result(v10, v01, auc, conf_level) -> AUCResult:
    n1, n0 = len(v10), len(v01)
    if n1 < 2 or n0 < 2:
        nan = float("nan")
        who = "case" if n1 < 2 else "control"
        return AUCResult(auc, (nan, nan), nan, nan, (nan, nan), n1, n0, conf_level, False,
                         f"only one {who}: DeLong variance undefined, no CI")
    var = float(np.var(v10, ddof=1) / n1 + np.var(v01, ddof=1) / n0)
    se = float(np.sqrt(var))
    ci, raw = _clipped_ci(auc, se, conf_level)
    note = None
    if var == 0:
        note = "zero variance (all scores equal or perfect separation): CI collapses to the AUC"
    return AUCResult(auc, ci, var, se, raw, n1, n0, conf_level, True, note)


def auc_ci(y, score, conf_level: float = 0.95) -> AUCResult:
    """AUC with its DeLong CI (pROC ``ci.auc(method = "delong")``), from plain arrays."""
    yy, (s,) = check_binary(y, score)
    return _auc_result(*placements(yy, s), conf_level)


def compare_aucs(y, scores: dict, conf_level: float = 0.95) -> tuple[dict, list]:
    """AUC + CI of every score and the paired DeLong test of every pair (placements computed once)."""
    names = tuple(scores)
    yy, ss = check_binary(y, *scores.values(), names=names)
    pl = {n: placements(yy, s) for n, s in zip(names, ss)}
    res = {n: _auc_result(*pl[n], conf_level) for n in names}
    tests = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            tests.append((a, b, _paired(pl[a], pl[b], conf_level)))
    return res, tests


def _z_p(diff: float, var: float) -> tuple[float, float]:
    if np.isnan(var):
        return float("nan"), float("nan")
    if var == 0:
        z = 0.0 if diff == 0 else float(np.copysign(np.inf, diff))  # pROC: 0/0 -> Z = 0
    else:
        z = diff / np.sqrt(var)
    return float(z), float(2.0 * norm.cdf(-abs(z)))


def delong_test(y, score_a, score_b, conf_level: float = 0.95) -> DeLongTest:
    """Paired DeLong test of two scores on the same patients (pROC ``roc.test(paired = TRUE)``).

    Z > 0 means score_a has the larger AUC; diff_ci is the unclipped CI of AUC_a - AUC_b.
    """
    yy, (a, b) = check_binary(y, score_a, score_b, names=("score_a", "score_b"))
    return _paired(placements(yy, a), placements(yy, b), conf_level)


def _paired(pa, pb, conf_level) -> DeLongTest:
    (v10a, v01a, auc_a), (v10b, v01b, auc_b) = pa, pb
    n1, n0 = len(v10a), len(v01a)
    diff = auc_a - auc_b
    if n1 < 2 or n0 < 2:
        var, note = float("nan"), "fewer than two cases or controls: DeLong variance undefined"
    else:
        d10, d01 = v10a - v10b, v01a - v01b  # L S L' = var(V10a - V10b)/n1 + var(V01a - V01b)/n0
        var, note = float(np.var(d10, ddof=1) / n1 + np.var(d01, ddof=1) / n0), None
    return _test(auc_a, auc_b, diff, var, True, conf_level, note)


def delong_test_unpaired(y_a, score_a, y_b, score_b, conf_level: float = 0.95) -> DeLongTest:
    """DeLong test for two AUCs from independent cohorts: Z = diff / sqrt(var_a + var_b)."""
    ra, rb = auc_ci(y_a, score_a, conf_level), auc_ci(y_b, score_b, conf_level)
    note = None if (ra.ci_defined and rb.ci_defined) else "DeLong variance undefined for one cohort"
    return _test(ra.auc, rb.auc, ra.auc - rb.auc, ra.var + rb.var, False, conf_level, note)


def _test(auc_a, auc_b, diff, var, paired, conf_level, note) -> DeLongTest:
    z, p = _z_p(diff, var)
    q = norm.ppf(0.5 + conf_level / 2.0)
    half = q * np.sqrt(var) if not np.isnan(var) else float("nan")
    return DeLongTest(float(auc_a), float(auc_b), float(diff), z, p, (float(diff - half), float(diff + half)),
                      float(var), paired, conf_level, note)


def midpoint_thresholds(values: np.ndarray) -> np.ndarray:
    """pROC's thresholds: -inf, midpoints of consecutive distinct values, +inf.

    A midpoint that rounds onto the lower value is moved to the upper one, so
    ``score >= t`` selects exactly the scores above it.
    """
    u = np.unique(values)
    lo, hi = u[:-1], u[1:]
    with np.errstate(over="ignore"):
        mid = (lo + hi) / 2.0
    bad = ~np.isfinite(mid)
    mid[bad] = lo[bad] / 2.0 + hi[bad] / 2.0
    mid = np.where(mid == lo, hi, mid)
    return np.concatenate([[-np.inf], mid, [np.inf]])


def roc_curve(y, score) -> RocCurve:
    """All operating points at pROC's midpoint thresholds (ascending; sensitivity falls)."""
    yy, (s,) = check_binary(y, score)
    t = midpoint_thresholds(s)
    ps, ns = np.sort(s[yy == 1]), np.sort(s[yy == 0])
    n1, n0 = len(ps), len(ns)
    tp = n1 - np.searchsorted(ps, t, "left")
    fp = n0 - np.searchsorted(ns, t, "left")
    return RocCurve(t, tp, fp, n1, n0, tp / n1, (n0 - fp) / n0)
