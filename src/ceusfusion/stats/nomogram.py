"""Nomogram of a logistic model: the points table of ``rms::nomogram`` and the axes of its figure.

rms (6.5) scores each predictor's contribution ``beta * x`` on its axis
values relative to that axis' minimum, scaled so that the predictor with the
widest range spans ``maxscale`` (100) points. Total points map back to the
linear predictor (``lp = Intercept + points / scale``) and to the risk.
Axis values follow ``datadist``: a numeric predictor with at most 10
distinct values shows those values, otherwise ``pretty(range(x), 10)``; a
categorical one shows its levels (the first, sorted, is the reference).
R's ``pretty`` is transcribed below so that the axes (and hence the points)
agree with rms to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import as_outcome
from ceusfusion.stats.logistic import LogisticFit, fit_logistic

DBL_EPS = np.finfo(float).eps
DBL_MIN = np.finfo(float).tiny


def _pretty_unit(lo: float, up: float, ndiv: int, min_n: int, shrink: float, h: float, h5: float, f_min: float):
    """R's C routine ``R_pretty`` (R 4.2, eps.correct = 0, bounds = TRUE): (lo, up, ndiv)."""
    dx = up - lo
    if dx == 0 and up == 0:
        cell, i_small = 1.0, True
    else:
        cell = max(abs(lo), abs(up))
        u = 1 + (1 / (1 + h) if h5 >= 1.5 * h + 0.5 else 1.5 / (1 + h5))
        u *= max(1, ndiv) * DBL_EPS
        i_small = dx < cell * u * 3
    if i_small:
        if cell > 10:
            cell = 9 + cell / 10
        cell *= shrink
        if min_n > 1:
            cell /= min_n
    else:
        cell = dx
        if ndiv > 1:
            cell /= ndiv
    cell = max(cell, f_min * DBL_MIN)
    base = 10.0 ** math.floor(math.log10(cell))
    unit = base
    if 2 * base - cell < h * (cell - unit):
        unit = 2 * base
        if 5 * base - cell < h5 * (cell - unit):
            unit = 5 * base
            if 10 * base - cell < h * (cell - unit):
                unit = 10 * base
    ns = math.floor(lo / unit + 1e-10)
    nu = math.ceil(up / unit - 1e-10)
    while ns * unit > lo + 1e-10 * unit:
        ns -= 1
    while nu * unit < up - 1e-10 * unit:
        nu += 1
    k = int(0.5 + nu - ns)
    if k < min_n:
        k = min_n - k
        if ns >= 0:
            nu += k // 2
            ns -= k // 2 + k % 2
        else:
            ns -= k // 2
            nu += k // 2 + k % 2
        ndiv = min_n
    else:
        ndiv = k
    return min(lo, ns * unit), max(up, nu * unit), ndiv


def r_seq_length(a: float, b: float, n: int) -> np.ndarray:
    """R ``seq.int(a, b, length.out = n)`` (its C arithmetic: the halves are filled from each end)."""
    out = np.empty(n)
    if n > 0:
        out[0] = a
    if n > 1:
        out[-1] = b
    if n > 2:
        by = (b - a) / (n - 1)
        i = np.arange(1, n - 1)
        out[1:-1] = np.where(i < n // 2, a + i * by, b - (n - 1 - i) * by)
    return out


def r_pretty(x, n: int = 5, min_n: int | None = None, shrink_sml: float = 0.75, high_u_bias: float = 1.5,
             u5_bias: float | None = None, f_min: float = 2.0 ** -20) -> np.ndarray:
    """R's ``pretty(x, n)``: about n+1 equally spaced round values covering range(x)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return x
    min_n = n // 3 if min_n is None else min_n
    u5 = 0.5 + 1.5 * high_u_bias if u5_bias is None else u5_bias
    lo, up, ndiv = _pretty_unit(float(x.min()), float(x.max()), n, min_n, shrink_sml, high_u_bias, u5, f_min)
    s = r_seq_length(lo, up, ndiv + 1)
    if ndiv:
        delta = (up - lo) / ndiv
        s[np.abs(s) < 1e-14 * delta] = 0.0
    return s


@dataclass(frozen=True)
class NomogramAxis:
    """One predictor's axis: its values, their contribution ``beta x`` and their points."""

    name: str
    values: tuple
    xbeta: np.ndarray
    points: np.ndarray
    discrete: bool
    terms: tuple[str, ...] = ()  # the model's columns: (name,) for a numeric predictor, "name=level" per non-reference level


@dataclass(frozen=True)
class Nomogram:
    """What ``rms::nomogram(fit, fun = plogis)`` computes (its ``set`` and ``info``)."""

    axes: tuple[NomogramAxis, ...]
    total_points: np.ndarray  # the "Total Points" axis
    lp_at: np.ndarray  # linear-predictor axis values ...
    lp_points: np.ndarray  # ... and their position in total points
    fun_at: np.ndarray  # risk axis values ...
    fun_points: np.ndarray  # ... and their position in total points
    scale: float  # points per unit of the linear predictor (rms ``sc``)
    intercept: float  # lp at 0 total points (rms ``Intercept``: beta0 + sum of each axis' minimum)
    maxscale: float
    coefficients: dict = field(default_factory=dict)  # model term -> coefficient ("Intercept" first)
    fit: LogisticFit | None = None

    def points_table(self) -> pd.DataFrame:
        """variable, value, points: the predictor axes, then total points -> risk."""
        rows = [{"variable": a.name, "value": v, "points": float(p)} for a in self.axes for v, p in zip(a.values, a.points)]
        rows += [{"variable": "Risk", "value": float(v), "points": float(p)} for v, p in zip(self.fun_at, self.fun_points)]
        return pd.DataFrame(rows, columns=["variable", "value", "points"])

    def risk(self, total_points) -> np.ndarray:
        """Predicted risk for total points."""
        return expit(self.intercept + np.asarray(total_points, dtype=float) / self.scale)

    def linear_predictor(self, X) -> np.ndarray:
        """The fitted model's linear predictor for new rows (a DataFrame or dict with every predictor)."""
        df = pd.DataFrame(X).reset_index(drop=True)
        lp = np.full(len(df), self.coefficients["Intercept"])
        for a in self.axes:
            if a.name not in df:
                raise CeusError(f"nomogram: predictor {a.name!r} missing from the rows to predict")
            if a.terms == (a.name,):
                lp = lp + self.coefficients[a.name] * pd.to_numeric(df[a.name], errors="raise").to_numpy(float)
                continue
            s = df[a.name].astype(str).to_numpy()
            unseen = sorted(set(s) - set(map(str, a.values)))
            if unseen:
                raise CeusError(f"nomogram: predictor {a.name!r} has level(s) {unseen} not seen when the model was fitted")
            lp = lp + np.array([self.coefficients.get(f"{a.name}={v}", 0.0) for v in s])
        return lp

    def predict(self, X) -> np.ndarray:
        """Predicted risk for new rows."""
        return expit(self.linear_predictor(X))

    def to_dict(self) -> dict:
        return {"axes": [{"name": a.name, "values": list(a.values), "points": a.points.tolist(), "xbeta": a.xbeta.tolist(),
                          "discrete": a.discrete, "terms": list(a.terms)} for a in self.axes],
                "total_points": self.total_points.tolist(), "lp_at": self.lp_at.tolist(), "lp_points": self.lp_points.tolist(),
                "fun_at": self.fun_at.tolist(), "fun_points": self.fun_points.tolist(), "scale": self.scale,
                "intercept": self.intercept, "maxscale": self.maxscale, "coefficients": self.coefficients}


def _terms(df: pd.DataFrame, n_unique: int):
    """Design columns and axis values per predictor, as R's model matrix and ``datadist`` make them."""
    cols, names, specs = [], [], []
    for c in df.columns:
        x = df[c]
        if x.isna().any():
            raise CeusError(f"nomogram: predictor {c!r} has missing values")
        if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
            v = x.to_numpy(dtype=float)
            u = np.unique(v)
            if len(u) < 2:
                raise CeusError(f"nomogram: predictor {c!r} is constant")
            at = u if len(u) <= n_unique else r_pretty(v, 10)
            cols.append(v)
            names.append(str(c))
            specs.append((str(c), tuple(float(a) for a in at), False if len(u) > n_unique else True, [str(c)]))
        else:
            levels = sorted(x.astype(str).unique())
            if len(levels) < 2:
                raise CeusError(f"nomogram: predictor {c!r} has one level only")
            s = x.astype(str).to_numpy()
            terms = [f"{c}={lv}" for lv in levels[1:]]
            cols += [(s == lv).astype(float) for lv in levels[1:]]
            names += terms
            specs.append((str(c), tuple(levels), True, terms))
    return np.column_stack(cols), names, specs


def _xbeta(spec, beta: dict) -> np.ndarray:
    name, values, _, terms = spec
    if terms == [name]:  # numeric: beta * x
        return beta[name] * np.asarray(values, dtype=float)
    return np.array([0.0] + [beta[t] for t in terms])  # categorical: the reference level contributes 0


def nomogram(X, y, fun_at=None, maxscale: float = 100.0, nint: int = 10, n_unique: int = 10) -> Nomogram:
    """Fit ``lrm(y ~ .)`` on the columns of X (a DataFrame or dict) and build ``rms::nomogram(fit, fun = plogis)``.

    Numeric columns enter linearly; other columns are categorical (dummy-coded, first sorted level
    the reference). ``fun_at``: risks to mark on the risk axis (default R's ``pretty`` over the range)."""
    df = pd.DataFrame(X).reset_index(drop=True)
    yy = as_outcome(y)
    if len(df) != len(yy) or df.shape[1] == 0:
        raise CeusError(f"nomogram: {df.shape[1]} predictors for {len(df)} rows and {len(yy)} outcomes")
    Z, names, specs = _terms(df, n_unique)
    fit = fit_logistic(Z, yy)
    if not fit.converged:
        raise CeusError("nomogram: the logistic model did not converge (perfect separation or collinear predictors)")
    beta = dict(zip(names, fit.coef[1:].tolist()))
    return build_nomogram(fit.intercept, beta, specs, fit.coef[0] + Z @ fit.coef[1:], fun_at, maxscale, nint, fit)


def build_nomogram(intercept: float, beta: dict, specs, lp, fun_at=None, maxscale: float = 100.0, nint: int = 10,
                   fit: LogisticFit | None = None) -> Nomogram:
    """The nomogram of given coefficients; ``specs`` = (name, axis values, discrete, model terms) per predictor,
    ``lp`` the linear predictors of the fitting data (for the lp axis)."""
    xb = [_xbeta(s, beta) for s in specs]
    lo = np.array([v.min() for v in xb])
    rng = np.array([v.max() for v in xb]) - lo
    if not np.max(rng) > 0:
        raise CeusError("nomogram: every coefficient is zero; there is nothing to draw")
    sc = maxscale / np.max(rng)
    icpt = intercept + float(lo.sum())
    axes = tuple(NomogramAxis(s[0], s[1], v, (v - m) * sc, s[2], tuple(s[3])) for s, v, m in zip(specs, xb, lo))
    lp_at = r_pretty([np.min(lp), np.max(lp)], nint)
    sum_max = maxscale if len(specs) == 1 else max(maxscale, sc * float(np.max(lp_at - icpt)))
    total = r_pretty([0.0, sum_max], nint)
    fat = r_pretty(expit(np.array([lp_at.min(), lp_at.max()])), nint) if fun_at is None else np.asarray(fun_at, float)
    xseq = np.linspace(lp_at.min(), lp_at.max(), 1000)
    fu, inv = np.unique(expit(xseq), return_inverse=True)
    xs = np.bincount(inv, weights=xseq) / np.bincount(inv)  # approx(ties = mean)
    w = np.interp(fat, fu, xs, left=np.nan, right=np.nan)
    keep = ~np.isnan(w)
    coefs = {"Intercept": float(intercept), **{k: float(v) for k, v in beta.items()}}
    return Nomogram(axes, total, lp_at, (lp_at - icpt) * sc, fat[keep], (w[keep] - icpt) * sc, float(sc), icpt,
                    float(maxscale), coefs, fit)
