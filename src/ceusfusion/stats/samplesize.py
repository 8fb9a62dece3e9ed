"""Minimum sample size for developing a prediction model with a binary outcome (Riley et al., BMJ 2020).

A transcription of R ``pmsampsize`` 1.1.3 (``type = "b"``): the largest n of
(1) expected uniform shrinkage >= 0.9, (2) optimism in Nagelkerke R2 <= 0.05,
(3) the overall risk estimated within +-0.05. The anticipated Cox-Snell R2 is
given directly, as Nagelkerke R2, or from a C-statistic through pmsampsize's
``cstat2rsq`` simulation, which is reproduced here exactly, R's Mersenne
Twister and inversion normals included, so the result is R's to the digit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtri

from ceusfusion.core.errors import CeusError
from ceusfusion.stats.logistic import fit_logistic


@dataclass(frozen=True)
class SampleSize:
    """pmsampsize's output for a binary outcome; ``results_table`` rows are criteria 1-3 and the final one."""

    sample_size: int
    events: float  # sample_size * prevalence
    EPP: float  # events per candidate predictor parameter (rounded to 2 digits, as R)
    final_shrinkage: float
    parameters: int
    rsquared: float  # the (Cox-Snell) R2 used
    max_r2a: float
    nag_r2: float
    prevalence: float
    cstatistic: float | None
    results_table: tuple[dict, ...]

    @property
    def criteria(self) -> tuple[int, int, int]:
        return tuple(int(r["Samp_size"]) for r in self.results_table[:3])

    def to_dict(self) -> dict:
        return {**asdict(self), "results_table": [dict(r) for r in self.results_table]}


def _r_round(x: float, digits: int) -> float:
    """R (>= 4.0) ``round(x, digits)``: the nearer of floor/ceil(x 10^d) / 10^d in double arithmetic, ties to even."""
    if not math.isfinite(x) or x == 0:
        return x
    if x < 0:
        return -_r_round(-x, digits)
    if math.log10(2) * (0.5 + (math.frexp(x)[1] - 1)) + digits > 15:
        return x
    p10 = 10.0 ** digits
    x10 = p10 * x
    i10 = math.floor(x10)
    xd, xu = i10 / p10, math.ceil(x10) / p10
    du, dd = xu - x, x - xd
    return xu if (du < dd or (du == dd and i10 % 2 == 1)) else xd


def max_r2(prevalence: float) -> float:
    """Largest possible Cox-Snell R2 for an outcome of this prevalence (Riley 2018, eq. 23)."""
    lnl = prevalence * math.log(prevalence) + (1 - prevalence) * math.log(1 - prevalence)
    return 1 - math.exp(2 * lnl)


def _check(parameters, prevalence, shrinkage):
    if isinstance(parameters, bool) or not isinstance(parameters, (int, float, np.integer, np.floating)) \
            or not float(parameters).is_integer() or parameters < 1:
        raise CeusError(f"parameters must be a positive integer (candidate predictor parameters), got {parameters!r}")
    if prevalence is None or not 0 < prevalence < 1:
        raise CeusError(f"prevalence must lie strictly between 0 and 1, got {prevalence!r}")
    if not 0 < shrinkage < 1:
        raise CeusError(f"shrinkage must lie strictly between 0 and 1, got {shrinkage!r}")


def _anticipated_r2(parameters, prevalence, csrsquared, nagrsquared, cstatistic, seed) -> float:
    given = [v is not None for v in (csrsquared, nagrsquared, cstatistic)]
    if sum(given) != 1:
        raise CeusError("give exactly one of csrsquared, nagrsquared or cstatistic (the anticipated model performance)")
    if nagrsquared is not None:
        if not 0 < nagrsquared < 1:
            raise CeusError(f"nagrsquared must lie between 0 and 1, got {nagrsquared}")
        e = parameters * prevalence  # as pmsampsize: E/parameters is the prevalence
        lnl = e * math.log(e / parameters) + (parameters - e) * math.log(1 - e / parameters)
        return _r_round(nagrsquared * (1 - math.exp(2 * lnl / parameters)), 3)
    if csrsquared is not None:
        if not 0 < csrsquared < 1:
            raise CeusError(f"csrsquared must lie between 0 and 1, got {csrsquared}")
        return float(csrsquared)
    if not 0.5 < cstatistic < 1:
        raise CeusError(f"cstatistic must lie between 0.5 and 1, got {cstatistic}")
    return _r_round(cstat2rsq(cstatistic, prevalence, seed), 4)


def _row(n, shrink, parameters, r2, mx, prevalence) -> dict:
    return {"Samp_size": int(n), "Shrinkage": _r_round(shrink, 3), "Parameter": int(parameters), "CS_Rsq": r2,
            "Max_Rsq": _r_round(mx, 3), "Nag_Rsq": _r_round(r2 / mx, 3), "EPP": _r_round(n * prevalence / parameters, 2)}


def pmsampsize_binary(parameters: int, prevalence: float, csrsquared: float | None = None,
                      nagrsquared: float | None = None, cstatistic: float | None = None,
                      shrinkage: float = 0.9, seed: int = 123456) -> SampleSize:
    """``pmsampsize(type = "b", ...)``: the minimum n (and events, EPP) to develop a model with ``parameters``."""
    _check(parameters, prevalence, shrinkage)
    parameters = int(parameters)
    r2a = _anticipated_r2(parameters, prevalence, csrsquared, nagrsquared, cstatistic, seed)
    if shrinkage < r2a:
        raise CeusError("shrinkage is lower than the anticipated R-squared: log(1 - R2/shrinkage) is undefined")
    n1 = math.ceil(parameters / ((shrinkage - 1) * math.log(1 - r2a / shrinkage)))
    e1 = n1 * prevalence
    lnl = e1 * math.log(e1 / n1) + (n1 - e1) * math.log(1 - e1 / n1)
    mx = 1 - math.exp(2 * lnl / n1)
    if mx < r2a:
        raise CeusError(f"the anticipated R-squared {r2a} is larger than the maximum possible ({mx:.4f}) for prevalence {prevalence}")
    s2 = r2a / (r2a + 0.05 * mx)
    n2 = math.ceil(parameters / ((s2 - 1) * math.log(1 - r2a / s2)))
    n3 = math.ceil((1.96 / 0.05) ** 2 * (prevalence * (1 - prevalence)))
    s3 = s2 if s2 > shrinkage else shrinkage
    nfinal = max(n1, n2, n3)
    rows = (_row(n1, shrinkage, parameters, r2a, mx, prevalence), _row(n2, s2, parameters, r2a, mx, prevalence),
            _row(n3, s3, parameters, r2a, mx, prevalence), _row(nfinal, s3, parameters, r2a, mx, prevalence))
    return SampleSize(int(nfinal), nfinal * prevalence, _r_round(nfinal * prevalence / parameters, 2), s3, int(parameters),
                      r2a, mx, r2a / mx, float(prevalence), cstatistic, rows)


def pmsampsize(type: str = "b", **kwargs) -> SampleSize:
    """R-style entry ``pmsampsize(type = "b", csrsquared = ..., parameters = ..., prevalence = ...)``: binary outcomes only."""
    if type != "b":
        raise CeusError(f"pmsampsize: only type = 'b' (binary outcome) is implemented, got {type!r}")
    return pmsampsize_binary(**kwargs)


# ------------------------------------------------------------------ R's random numbers, for cstat2rsq

def _r_mt_state(seed: int) -> np.ndarray:
    """The 624 Mersenne-Twister words R's ``set.seed(seed)`` leaves (initial scrambling by the LCG 69069)."""
    s = np.uint32(seed & 0xFFFFFFFF)
    with np.errstate(over="ignore"):
        for _ in range(50):
            s = np.uint32(69069) * s + np.uint32(1)
        out = np.empty(625, dtype=np.uint32)
        for j in range(625):
            s = np.uint32(69069) * s + np.uint32(1)
            out[j] = s
    return out[1:]  # word 0 is R's position counter (reset to 624)


class RNormR:
    """``rnorm`` after ``set.seed(seed)`` with R's defaults (Mersenne-Twister, Inversion)."""

    def __init__(self, seed: int):
        self.bits = np.random.MT19937()
        self.bits.state = {"bit_generator": "MT19937", "state": {"key": _r_mt_state(seed), "pos": 624}}

    def _unif(self, k: int) -> np.ndarray:
        u = self.bits.random_raw(k).astype(float) * 2.3283064365386963e-10
        i2_32m1 = 2.328306437080797e-10
        u[u <= 0.0] = 0.5 * i2_32m1
        u[(1.0 - u) <= 0.0] = 1.0 - 0.5 * i2_32m1
        return u

    def rnorm(self, n: int, mean: float = 0.0) -> np.ndarray:
        big = 134217728.0  # 2^27: two uniforms per normal
        u = self._unif(2 * n).reshape(n, 2)
        v = np.floor(big * u[:, 0]) + u[:, 1]
        return mean + ndtri(v / big)


def cstat2rsq(cstatistic: float, prevalence: float, seed: int = 123456) -> float:
    """pmsampsize's ``cstat2rsq``: Cox-Snell R2 of a logistic fit to 1e6 simulated linear predictors."""
    n = 1_000_000
    mu = math.sqrt(2) * float(ndtri(cstatistic))
    k0, k1 = int(prevalence * n), int((1 - prevalence) * n)  # R truncates rnorm's and rep's counts
    g = RNormR(seed)
    lp = np.concatenate([g.rnorm(k0), g.rnorm(k1, mu)])
    y = np.concatenate([np.zeros(k0), np.ones(k1)])
    fit = fit_logistic(lp, y, tol=1e-12)
    return float(1 - math.exp(-(fit.null_deviance - fit.deviance) / n))


def cox_snell_r2(y, p) -> float:
    """Cox-Snell R2 of predicted risks p: 1 - exp(-LR/n), LR = deviance(prevalence) - deviance(p).

    From honest (out-of-fold) predictions this is the anticipated R2 of Riley et al.; it can be
    negative when the predictions fit worse than the prevalence alone."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-15, 1 - 1e-15)
    n, m = len(y), float(np.mean(y))
    if m in (0.0, 1.0):
        raise CeusError("Cox-Snell R2 needs both outcome classes")
    ll = np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
    ll0 = n * (m * math.log(m) + (1 - m) * math.log(1 - m))
    return float(1 - math.exp(-2 * (ll - ll0) / n))


def sample_size_adequacy(n: int, n_events: int, parameters: int, csrsquared: float | None = None,
                         cstatistic: float | None = None, shrinkage: float = 0.9) -> dict:
    """Is a cohort of n patients (n_events events) large enough for ``parameters`` candidate predictors?"""
    if n < 2 or not 0 < n_events < n:
        raise CeusError(f"sample-size check needs a cohort with events and non-events (n = {n}, events = {n_events})")
    prev = n_events / n
    ss = pmsampsize_binary(parameters, prev, csrsquared=csrsquared, cstatistic=cstatistic, shrinkage=shrinkage)
    ok = n >= ss.sample_size
    epp = n_events / parameters
    text = (f"this cohort {'is' if ok else 'is not'} large enough for {parameters} candidate predictor parameters "
            f"(minimum {ss.sample_size} patients, {math.ceil(ss.events)} events; it has {n} patients, {n_events} events); "
            f"events per candidate predictor = {epp:.2f}")
    return {"n": int(n), "n_events": int(n_events), "parameters": int(parameters), "adequate": bool(ok),
            "events_per_parameter": epp, "minimum": ss.to_dict(), "sentence": text}
