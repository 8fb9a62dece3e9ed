"""Calibration: Brier score, logistic recalibration, smooth and binned curves, Hosmer-Lemeshow.

Conventions follow R: ``rms::val.prob`` (intercept and slope of
``logit P(y) = a + b logit(p)``, p of exactly 0 or 1 dropped; Emax/Eavg/E90
from ``lowess(p, y, iter = 0)``) and ``ResourceSelection::hoslem.test`` 0.3-6
(10 groups cut at R's type-7 quantiles, df = non-empty groups - 2). Where the
statistic does not exist (perfect separation, constant predictions, empty
groups) the result says so in ``note`` instead of returning a plausible number.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import statsmodels.api as sm
from scipy.special import logit
from scipy.stats import chi2
from sklearn.calibration import calibration_curve

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import check_binary


def _yp(y, p):
    yy, (pp,) = check_binary(y, p, names=("prob",), both_classes=False)
    bad = np.flatnonzero((pp < 0) | (pp > 1))
    if bad.size:
        raise CeusError(f"predicted probabilities must lie in [0, 1]; rows (0-based) {bad[:10].tolist()} do not")
    return yy.astype(float), pp


def brier(y, p) -> float:
    """Mean squared difference between predicted risk and outcome."""
    yy, pp = _yp(y, p)
    return float(np.mean((pp - yy) ** 2))


def _separated(x, y) -> bool:
    pos, neg = x[y == 1], x[y == 0]
    return pos.min() >= neg.max() or pos.max() <= neg.min()


def logistic_recalibration(y, p) -> dict:
    """Calibration intercept and slope: ``logit P(y=1) = a + b logit(p)`` (rms ``val.prob``)."""
    yy, pp = _yp(y, p)
    keep = (pp > 0) & (pp < 1)
    out = {"intercept": float("nan"), "slope": float("nan"), "n_used": int(keep.sum()),
           "n_dropped": int((~keep).sum()), "note": None}
    if out["n_dropped"]:
        out["note"] = f"{out['n_dropped']} predictions of exactly 0 or 1 dropped from the fit"
    x, yk = logit(pp[keep]), yy[keep]
    if len(x) < 3:
        out["note"] = "fewer than 3 predictions strictly between 0 and 1 (p of exactly 0 or 1 are dropped): recalibration not possible"
        return out
    if yk.min() == yk.max():
        raise CeusError("calibration intercept/slope need both outcome classes")
    if np.all(x == x[0]):
        out.update(intercept=float(logit(yk.mean())), slope=0.0,
                   note="constant predictions: intercept = logit(mean y), slope 0 (rms convention)")
        return out
    if _separated(x, yk):
        out["note"] = "perfect separation: the maximum-likelihood recalibration does not exist"
        return out
    fit = sm.GLM(yk, sm.add_constant(x), family=sm.families.Binomial()).fit(tol=1e-13, maxiter=200)
    out.update(intercept=float(fit.params[0]), slope=float(fit.params[1]))
    return out


def calibration_in_the_large(y, p) -> float:
    """Intercept of ``glm(y ~ 1, offset = logit(p), binomial)``: the slope held at 1."""
    yy, pp = _yp(y, p)
    if np.any((pp == 0) | (pp == 1)):
        raise CeusError("calibration-in-the-large: predictions of exactly 0 or 1 have infinite logit")
    if yy.min() == yy.max():
        raise CeusError("calibration-in-the-large needs both outcome classes")
    fit = sm.GLM(yy, np.ones((len(yy), 1)), family=sm.families.Binomial(), offset=logit(pp)).fit(tol=1e-13, maxiter=200)
    return float(fit.params[0])


def r_lowess(x: np.ndarray, y: np.ndarray, f: float = 2 / 3) -> tuple[np.ndarray, np.ndarray]:
    """R's ``lowess(x, y, f, iter = 0)`` (clowess, delta = 1% of the range): (sorted x, fitted).

    A transcription of R's C routine, because statsmodels' lowess differs from
    it by up to ~2e-10 in Emax and rms' reference numbers come from R.
    """
    o = np.argsort(x, kind="stable")
    x, y = np.asarray(x, float)[o], np.asarray(y, float)[o]
    n = len(x)
    ys = np.empty(n)
    if n < 2:
        return x, y.copy()
    delta = 0.01 * (x[-1] - x[0])
    ns = max(2, min(n, int(f * n + 1e-7)))
    rng = x[-1] - x[0]
    nleft, nright, last, i = 0, ns - 1, -1, 0  # 0-based
    while True:
        if nright < n - 1:
            if x[i] - x[nleft] > x[nright + 1] - x[i]:
                nleft += 1
                nright += 1
                continue
        ys[i] = _lowest(x, y, x[i], nleft, nright, rng, y[i])
        if last < i - 1:
            denom = x[i] - x[last]
            j = np.arange(last + 1, i)
            alpha = (x[j] - x[last]) / denom
            ys[j] = alpha * ys[i] + (1.0 - alpha) * ys[last]
        last = i
        cut = x[last] + delta
        i = last + 1
        while i < n:
            if x[i] > cut:
                break
            if x[i] == x[last]:
                ys[i] = ys[last]
                last = i
            i += 1
        i = max(last + 1, i - 1)
        if last >= n - 1:
            return x, ys


def _lowest(x, y, xs, nleft, nright, rng, fallback):
    """One tricube-weighted local linear fit at xs (R's ``lowest``)."""
    h = max(xs - x[nleft], x[nright] - xs)
    h9 = 0.999 * h
    hi = min(int(np.searchsorted(x, xs + h, "right")) + 1, len(x))
    xw = x[nleft:hi]
    r = np.abs(xw - xs)
    stop = np.flatnonzero((xw > xs) & (r > h9))  # R stops at the first such point
    if stop.size:
        xw, r = xw[:stop[0]], r[:stop[0]]
    nrt = nleft + len(xw) - 1
    w = np.where(r <= h9, np.where(r <= 0.001 * h, 1.0, (1 - (r / h) ** 3) ** 3) if h > 0 else 1.0, 0.0)
    a = w.sum()
    if a <= 0:
        return fallback
    w = w / a
    if h > 0:
        a = np.sum(w * xw)
        b = xs - a
        c = np.sum(w * (xw - a) ** 2)
        if np.sqrt(c) > 0.001 * rng:
            w = w * (b / c * (xw - a) + 1.0)
    return float(np.sum(w * y[nleft:nrt + 1]))


def smooth_curve(y, p) -> tuple[np.ndarray, np.ndarray]:
    """LOWESS calibration curve as R ``lowess(p, y, iter = 0)``: (distinct p, smoothed observed risk)."""
    yy, pp = _yp(y, p)
    if np.all(pp == pp[0]):
        return pp[:1].copy(), np.array([yy.mean()])
    fx, fy = r_lowess(pp, yy)
    ux, inv = np.unique(fx, return_inverse=True)
    mean_y = np.bincount(inv, weights=fy) / np.bincount(inv)  # approx(ties = mean)
    return ux, mean_y


def calibration_errors(y, p) -> dict:
    """Emax, Eavg, E90 of |p - smoothed observed risk| over the observed p (rms ``val.prob``)."""
    yy, pp = _yp(y, p)
    ux, uy = smooth_curve(yy, pp)
    err = np.abs(pp - np.interp(pp, ux, uy))
    return {"emax": float(err.max()), "eavg": float(err.mean()), "e90": float(np.quantile(err, 0.9))}


def binned_curve(y, p, n_bins: int = 10, strategy: str = "quantile") -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted, observed fraction) per bin, from sklearn's ``calibration_curve``."""
    yy, pp = _yp(y, p)
    frac_pos, mean_pred = calibration_curve(yy, pp, n_bins=n_bins, strategy=strategy)
    return mean_pred, frac_pos


def r_quantile7(x, probs) -> list[float]:
    """R's ``quantile(x, probs, type = 7)`` with R's exact arithmetic (bit-identical breaks)."""
    x = np.sort(np.asarray(x, float))
    n = len(x)
    out = []
    for pr in probs:
        index = 1 + (n - 1) * pr
        lo, hi = math.floor(index), math.ceil(index)
        q = x[lo - 1]
        if index > lo and x[hi - 1] != q:
            h = index - lo
            q = (1 - h) * q + h * x[hi - 1]
        out.append(float(q))
    return out


def hosmer_lemeshow(y, p, g: int = 10) -> dict:
    """Hosmer-Lemeshow test as ``ResourceSelection::hoslem.test(y, p, g)`` 0.3-6.

    An empty group gives 0/0 in X2, hence X2 = p = NaN (the reference behaviour),
    flagged in ``note``. ``p`` is the upper tail ``chi2.sf`` (no cancellation).
    """
    yy, pp = _yp(y, p)
    probs = [k * (1.0 / g) for k in range(g + 1)]  # R: seq(0, 1, 1/g)
    breaks = np.array(sorted(set(r_quantile7(pp, probs))))
    if len(breaks) < 2:
        raise CeusError("Hosmer-Lemeshow: all predicted risks are equal, no groups can be formed")
    grp = np.clip(np.searchsorted(breaks, pp, "left"), 1, len(breaks) - 1) - 1  # (b[k-1], b[k]], first closed
    k = len(breaks) - 1
    n = np.bincount(grp, minlength=k)
    o1 = np.bincount(grp, weights=yy, minlength=k)
    e1 = np.bincount(grp, weights=pp, minlength=k)
    o0, e0 = n - o1, n - e1
    with np.errstate(invalid="ignore", divide="ignore"):
        x2 = float(np.sum((o1 - e1) ** 2 / e1) + np.sum((o0 - e0) ** 2 / e0))
    groups = int(np.sum(n > 0))
    if groups < 2:
        raise CeusError("Hosmer-Lemeshow: fewer than 2 non-empty groups (negative df)")
    df = groups - 2
    note = None
    if groups < g:
        note = f"only {groups} of {g} groups non-empty (tied predictions)"
    if np.isnan(x2):
        note = "an empty quantile group (ties) makes X2 undefined"
    if df == 0:
        note = "only 2 non-empty groups: df = 0, no test"
    pval = float(chi2.sf(x2, df)) if df > 0 else float("nan")
    table = [{"n": int(a), "observed_1": float(b), "observed_0": float(c), "expected_1": float(d), "expected_0": float(e)}
             for a, b, c, d, e in zip(n, o1, o0, e1, e0)]
    return {"chi2": x2, "df": df, "p": pval, "groups": groups, "breaks": breaks.tolist(), "table": table, "note": note}


def calibration_summary(y, p) -> dict:
    """Everything of the above except the curves, each failure recorded as a note."""
    out = {"brier": brier(y, p)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rec = logistic_recalibration(y, p)
        except CeusError as exc:
            rec = {"intercept": float("nan"), "slope": float("nan"), "note": str(exc)}
        out.update(calibration_intercept=rec["intercept"], calibration_slope=rec["slope"], recalibration_note=rec["note"])
        try:
            out["calibration_in_the_large"] = calibration_in_the_large(y, p)
        except CeusError:
            out["calibration_in_the_large"] = float("nan")
        out.update(calibration_errors(y, p))
        try:
            hl = hosmer_lemeshow(y, p)
            out["hosmer_lemeshow"] = {k: hl[k] for k in ("chi2", "df", "p", "groups", "note")}
        except CeusError as exc:
            out["hosmer_lemeshow"] = {"chi2": float("nan"), "df": None, "p": float("nan"), "groups": None, "note": str(exc)}
    return out

