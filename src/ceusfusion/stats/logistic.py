"""Maximum-likelihood logistic regression and rms' likelihood indexes, on plain arrays.

One small Newton-Raphson fitter (with step halving) serves the nomogram, the
bootstrap validation and the recalibration refits of ``rms::validate``: the
same numbers as ``rms::lrm`` at convergence, without a formula interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from ceusfusion.core.errors import CeusError


@dataclass(frozen=True)
class LogisticFit:
    """``logit P(y = 1) = coef[0] + X @ coef[1:]``; deviances are -2 log L (model and intercept-only)."""

    coef: np.ndarray
    deviance: float
    null_deviance: float
    n: int
    converged: bool
    iterations: int

    @property
    def intercept(self) -> float:
        return float(self.coef[0])

    @property
    def lr(self) -> float:
        """Model likelihood-ratio chi-square (rms ``Model L.R.``)."""
        return float(self.null_deviance - self.deviance)

    @property
    def r2_coxsnell(self) -> float:
        return float(1.0 - np.exp(-self.lr / self.n))

    @property
    def r2(self) -> float:
        """Nagelkerke R2, as rms ``lrm`` reports it."""
        return float((1.0 - np.exp(-self.lr / self.n)) / (1.0 - np.exp(-self.null_deviance / self.n)))

    def linear_predictor(self, X) -> np.ndarray:
        X = design(X, len(self.coef) - 1)
        return self.coef[0] + X @ self.coef[1:]


def design(X, p: int | None = None) -> np.ndarray:
    """X as a float (n, p) matrix (a vector is one column)."""
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise CeusError(f"predictors must be a 2-D array, got shape {X.shape}")
    if p is not None and X.shape[1] != p:
        raise CeusError(f"predictors have {X.shape[1]} columns; the model has {p}")
    if not np.all(np.isfinite(X)):
        raise CeusError("predictors contain missing or non-finite values")
    return X


def deviance(y: np.ndarray, lp: np.ndarray) -> float:
    """-2 log likelihood of 0/1 outcomes y under linear predictor lp (overflow-safe)."""
    return float(2.0 * np.sum(np.logaddexp(0.0, lp) - y * lp))


def null_deviance(y: np.ndarray) -> float:
    n, n1 = len(y), float(np.sum(y))
    if n1 in (0.0, float(n)):
        return 0.0
    return float(-2.0 * (n1 * np.log(n1 / n) + (n - n1) * np.log(1.0 - n1 / n)))


def fit_logistic(X, y, maxit: int = 100, tol: float = 1e-11) -> LogisticFit:
    """Newton-Raphson ML fit with an intercept; ``converged`` is False on separation or a singular design."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    Z = np.column_stack([np.ones(n), design(X) if X is not None else np.zeros((n, 0))])
    if Z.shape[0] != n:
        raise CeusError(f"predictors have {Z.shape[0]} rows, y has {n}")
    n1 = y.sum()
    if n1 == 0 or n1 == n:
        raise CeusError("logistic regression needs both outcome classes")
    beta = np.zeros(Z.shape[1])
    beta[0] = np.log(n1 / (n - n1))
    dev = deviance(y, Z @ beta)
    converged, it = False, 0
    for it in range(1, maxit + 1):
        p = expit(Z @ beta)
        w = p * (1.0 - p)
        try:
            step = np.linalg.solve((Z * w[:, None]).T @ Z, Z.T @ (y - p))
        except np.linalg.LinAlgError:
            break
        new, new_dev = _halve(Z, y, beta, step, dev)
        done = np.max(np.abs(new - beta)) <= tol * (1.0 + np.max(np.abs(new))) or abs(dev - new_dev) <= 1e-14 * (1 + dev)
        beta, dev = new, new_dev
        if done:
            converged = True
            break
    if not np.all(np.isfinite(beta)) or np.max(np.abs(Z @ beta)) > 30:  # fitted risks of 0 or 1: (quasi-)separation
        converged = False
    return LogisticFit(beta, dev, null_deviance(y), n, converged, it)


def _halve(Z, y, beta, step, dev) -> tuple[np.ndarray, float]:
    """The Newton step, halved until the deviance does not increase (at most 30 times)."""
    for _ in range(30):
        new = beta + step
        new_dev = deviance(y, Z @ new)
        if np.isfinite(new_dev) and new_dev <= dev + 1e-12 * (1 + abs(dev)):
            return new, new_dev
        step = step / 2.0
    return beta + step, deviance(y, Z @ (beta + step))


def gini_md(x) -> float:
    """Gini's mean difference (Hmisc ``GiniMd``): mean |x_i - x_j| over pairs; NaN for n < 2."""
    x = np.sort(np.asarray(x, dtype=float))
    n = len(x)
    if n < 2:
        return float("nan")
    w = 4.0 * (np.arange(1, n + 1) - (n - 1) / 2.0) / n / (n - 1)
    return float(np.sum(w * np.sort(x - x.mean())))
