"""Optimism-corrected internal validation as ``rms::validate(lrm)`` computes it: Harrell's bootstrap, or
(repeated) cross-validation.

The apparent performance of a model on its own training data is optimistic.
The bootstrap estimates by how much: refit the *whole* modelling procedure on
each resample, score it on that resample (training) and on the original data
(test); optimism = mean(training - test); corrected = apparent - optimism.
``method = "crossvalidation"`` (``cv_validate``) does the same with the
training part of each split as the resample and its held-out part as the test:
valid for procedures that memorise their training rows (random forests,
boosting, a choice among families), where the bootstrap's test rows, two
thirds of them in the resample, are no test.
The indexes and their definitions are ``validate.lrm``'s (rms 6.5): Dxy,
R2 (Nagelkerke), Intercept and Slope of the logistic recalibration of the
linear predictor, Emax (from the corrected intercept and slope), D, U, Q,
B (Brier), g, gp; plus C = (1 + Dxy)/2, the c-index (AUC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import check_binary
from ceusfusion.stats.delong import placements
from ceusfusion.stats.logistic import deviance, fit_logistic, gini_md

INDEXES = ("Dxy", "C", "R2", "Intercept", "Slope", "Emax", "D", "U", "Q", "B", "g", "gp")
COLUMNS = ("index_orig", "training", "test", "optimism", "index_corrected", "n")
PROB_CLIP = 1e-6  # a probability model's 0 or 1 becomes logit(1e-6) or logit(1 - 1e-6) on the LP scale


def discrimination_indexes(y, lp) -> dict:
    """rms ``validate.lrm``'s measure on a sample: the indexes of linear predictor ``lp`` for outcomes ``y``.

    Intercept and Slope come from refitting ``logit P(y) = a + b lp``; B is the Brier score of
    ``plogis(lp)`` itself. A sample with one outcome class gives NaN everywhere."""
    y = np.asarray(y, dtype=float)
    lp = np.asarray(lp, dtype=float)
    n = len(y)
    out = dict.fromkeys(INDEXES, float("nan"))
    out["B"] = float(np.sum((y - expit(lp)) ** 2) / n)
    if y.min() == y.max():
        return out
    auc = placements(y.astype(np.int8), lp)[2]
    out.update(C=auc, Dxy=2.0 * (auc - 0.5))
    if np.ptp(lp) == 0:  # a constant predictor: the recalibration refit has no slope
        return out
    refit = fit_logistic(lp, y, maxit=200, tol=1e-13)
    a, b = float(refit.coef[0]), float(refit.coef[1])
    d = (refit.lr - 1.0) / n
    u = (deviance(y, lp) - refit.deviance - 2.0) / n
    out.update(R2=refit.r2, Intercept=a, Slope=b, D=d, U=u, Q=d - u, g=gini_md(b * lp), gp=gini_md(expit(a + b * lp)))
    return out


def emax(intercept: float, slope: float) -> float:
    """Max |p - plogis(a + b logit p)| over p = 0, 0.0005, ..., 1 (``validate.lrm``'s Emax)."""
    p = np.arange(2001) * 5e-4
    with np.errstate(divide="ignore", invalid="ignore"):
        cal = expit(intercept + slope * np.log(p / (1.0 - p)))
        d = np.abs(p - cal)
    d = d[np.isfinite(d)]
    return float(d.max()) if d.size else float("nan")


@dataclass(frozen=True)
class Validation:
    """The ``rms::validate`` table: one row per index, columns index_orig ... n (as R names them)."""

    index: tuple[str, ...]
    index_orig: np.ndarray
    training: np.ndarray
    test: np.ndarray
    optimism: np.ndarray
    index_corrected: np.ndarray
    n: np.ndarray  # resamples that gave this index in both training and test
    B: int
    n_failed: int  # resamples whose fit failed (rms: "Divergence or singularity")
    seed: int
    grouped: bool
    method: str = "boot"  # rms's name: "boot" or "crossvalidation"
    estimate: str = "optimism"  # corrected = apparent - (training - test); "held_out": corrected = test
    repeat_of: tuple[int, ...] = ()  # crossvalidation: the repeat of every split (fits in split order)
    split_training: np.ndarray | None = None  # crossvalidation: the index on each split's training part (splits x indexes)
    split_test: np.ndarray | None = None  # ... and on its held-out part

    def row(self, name: str) -> dict:
        i = self.index.index(name)
        return {c: (int(getattr(self, c)[i]) if c == "n" else float(getattr(self, c)[i])) for c in COLUMNS}

    def __getitem__(self, name: str) -> dict:
        """One row, also under R's column names (``v["C"]["index.corrected"]``)."""
        r = self.row(name)
        return {**r, "index.orig": r["index_orig"], "index.corrected": r["index_corrected"]}

    @property
    def c_corrected(self) -> float:
        """The optimism-corrected c-index (AUC)."""
        return self.row("C")["index_corrected"]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({c: getattr(self, c) for c in COLUMNS}, index=pd.Index(self.index, name="index"))

    def to_dict(self) -> dict:
        out = {"B": self.B, "n_failed": self.n_failed, "seed": self.seed, "grouped": self.grouped,
               "indexes": {k: self.row(k) for k in self.index}}
        if self.method != "boot":
            out.update(method=self.method, estimate=self.estimate, per_repeat=self.per_repeat())
        return out

    def per_repeat(self, name: str = "C") -> list[dict]:
        """Crossvalidation: one index per repeat of the splits (training, test, optimism, corrected, splits used)."""
        if self.split_training is None:
            return []
        i, orig = self.index.index(name), self.row(name)["index_orig"]
        reps = np.asarray(self.repeat_of)
        out = []
        for r in dict.fromkeys(self.repeat_of):
            tr, te = self.split_training[reps == r, i], self.split_test[reps == r, i]
            ok = np.isfinite(tr) & np.isfinite(te)
            t, v = (float(tr[ok].mean()), float(te[ok].mean())) if ok.any() else (float("nan"),) * 2
            c = v if self.estimate == "held_out" else orig - (t - v)
            out.append({"repeat": int(r), "training": t, "test": v, "optimism": orig - c, "index_corrected": c,
                        "n": int(ok.sum())})
        return out


def _take(X, idx):
    return X.iloc[idx] if hasattr(X, "iloc") else np.asarray(X)[idx]


def _resample(rng, n: int, groups) -> np.ndarray:
    """Row indices of one bootstrap sample: rows, or whole patient groups (rms ``cluster=``)."""
    if groups is None:
        return rng.integers(0, n, n)
    codes, uniq = pd.factorize(pd.Series(groups).astype(str))
    rows = [np.flatnonzero(codes == k) for k in range(len(uniq))]
    pick = rng.integers(0, len(rows), len(rows))
    return np.concatenate([rows[k] for k in pick])


def as_fitter(model) -> Callable:
    """A fitter ``(X, y, groups) -> (X -> linear predictor)`` from a callable or a scikit-learn classifier."""
    if hasattr(model, "fit") and hasattr(model, "predict_proba"):
        from sklearn.base import clone  # only for estimator input; stats works without a model object

        def fit(X, y, groups=None):
            est = clone(model).fit(X, y)
            return lambda Z: logit(np.clip(est.predict_proba(Z)[:, 1], PROB_CLIP, 1 - PROB_CLIP))
        return fit
    if callable(model):
        return model
    raise CeusError("model must be a scikit-learn classifier or a callable (X, y, groups) -> predictor")


def bootstrap_validate(X, y, model, B: int = 200, seed: int = 0, groups=None, progress=None,
                       failures: tuple = (CeusError, ValueError, ArithmeticError, np.linalg.LinAlgError)) -> Validation:
    """Harrell's bootstrap optimism correction of any modelling procedure (``rms::validate``, method "boot").

    model: a scikit-learn classifier (cloned and refitted; its probabilities are put on the logit
    scale, clipped at 1e-6) or a callable ``fit(X, y, groups) -> predict`` where ``predict(X)``
    returns the linear predictor (log-odds). The whole procedure is refitted on each of the ``B``
    seeded resamples; with ``groups``, whole patients are resampled. A resample with one outcome
    class, or whose fit raises one of ``failures``, is skipped and counted in ``n_failed``.
    ``progress(done, B)`` is called after every resample."""
    yy, _ = check_binary(y)
    if B < 1:
        raise CeusError(f"B must be at least 1, got {B}")
    n = len(yy)
    if len(X) != n or (groups is not None and len(groups) != n):
        raise CeusError(f"X has {len(X)} rows, groups {len(groups) if groups is not None else n}, y {n}: they must agree")
    fit = as_fitter(model)
    g = None if groups is None else np.asarray(groups)
    orig = discrimination_indexes(yy, fit(X, yy, g)(X))
    rng = np.random.default_rng(seed)
    train = np.full((B, len(INDEXES)), np.nan)
    test = np.full((B, len(INDEXES)), np.nan)
    failed = 0
    for b in range(B):
        idx = _resample(rng, n, g)
        yb = yy[idx]
        try:
            if yb.min() == yb.max():
                raise CeusError("one outcome class in the resample")
            predict = fit(_take(X, idx), yb, None if g is None else g[idx])
            lp_b, lp_o = predict(_take(X, idx)), predict(X)
            tr, te = discrimination_indexes(yb, lp_b), discrimination_indexes(yy, lp_o)
            train[b], test[b] = [tr[k] for k in INDEXES], [te[k] for k in INDEXES]
        except failures:
            failed += 1
        if progress is not None:
            progress(b + 1, B)
    return _table(orig, train, test, B, failed, seed, g is not None)


def cv_validate(X, y, model, splits, seed: int = 0, groups=None, apparent=None, progress=None,
                estimate: str = "optimism", failures: tuple = (CeusError, ValueError, ArithmeticError, np.linalg.LinAlgError)) -> Validation:
    """``rms::validate(fit, method = "crossvalidation")`` over the given splits, repeated as often as they say.

    ``splits``: ``(repeat, train_rows, test_rows)`` triples of row positions (e.g. repeated grouped
    K-fold; ``seed`` only records how they were drawn). ``model`` as in ``bootstrap_validate``, refitted
    on every training part; ``training`` is the mean index of each fit on its own training part, ``test``
    on its held-out part (rms: ``validate.lrm``'s indexes of each held-out group), optimism = training -
    test, corrected = apparent - optimism. ``apparent``: the fitted model's linear predictor on all of X
    (skips the refit on all rows). A split whose fit raises one of ``failures``, or whose held-out part
    has one class (no C, slope ...), is counted in ``n_failed``. ``progress(done, total, test_indexes)``
    is called after every split."""
    yy, _ = check_binary(y)
    if estimate not in ("optimism", "held_out"):
        raise CeusError(f"estimate must be 'optimism' (rms) or 'held_out', got {estimate!r}")
    splits = [(int(r), np.asarray(a), np.asarray(b)) for r, a, b in splits]
    if not splits:
        raise CeusError("cross-validation needs at least one split")
    fit = as_fitter(model)
    g = None if groups is None else np.asarray(groups)
    lp = apparent if apparent is not None else fit(X, yy, g)(X)
    orig = discrimination_indexes(yy, np.asarray(lp, dtype=float))
    train = np.full((len(splits), len(INDEXES)), np.nan)
    test = np.full((len(splits), len(INDEXES)), np.nan)
    failed = 0
    for s, (_, a, b) in enumerate(splits):
        te = dict.fromkeys(INDEXES, float("nan"))
        try:
            predict = fit(_take(X, a), yy[a], None if g is None else g[a])
            tr, te = discrimination_indexes(yy[a], predict(_take(X, a))), discrimination_indexes(yy[b], predict(_take(X, b)))
            train[s], test[s] = [tr[k] for k in INDEXES], [te[k] for k in INDEXES]
        except failures:
            pass
        failed += int(not np.isfinite(test[s, INDEXES.index("C")]))
        if progress is not None:
            progress(s + 1, len(splits), te)
    v = _table(orig, train, test, len(splits), failed, seed, g is not None, held_out=estimate == "held_out")
    return Validation(**{**v.__dict__, "method": "crossvalidation", "estimate": estimate, "repeat_of": tuple(r for r, _, _ in splits),
                         "split_training": train, "split_test": test})


def _table(orig: dict, train: np.ndarray, test: np.ndarray, B: int, failed: int, seed: int, grouped: bool,
           held_out: bool = False) -> Validation:
    ok = np.isfinite(train) & np.isfinite(test)
    num = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tr = np.where(ok, train, 0.0).sum(axis=0) / num
        te = np.where(ok, test, 0.0).sum(axis=0) / num
    io = np.array([orig[k] for k in INDEXES])
    corr = te.copy() if held_out else io - (tr - te)
    opt = io - corr if held_out else tr - te
    k = INDEXES.index("Emax")
    e = emax(corr[INDEXES.index("Intercept")], corr[INDEXES.index("Slope")])
    # rms prints an apparent Emax of 0 (an lrm is perfectly calibrated on its own rows: intercept 0, slope 1);
    # a flexible family's apparent intercept and slope are not, so its apparent Emax is computed from them
    # (equal to rms's 0 for a logistic model), not shown as 0 beside a slope of 1.42
    apparent = emax(io[INDEXES.index("Intercept")], io[INDEXES.index("Slope")])
    io[k], tr[k], te[k], opt[k], corr[k], num[k] = apparent, 0.0, e, e, e, num[0]
    if B - failed == 0:
        raise CeusError(f"every one of the {B} refits failed (one outcome class or a fit error)")
    return Validation(INDEXES, io, tr, te, opt, corr, num, B, failed, seed, grouped)


def validate_logistic(X, y, B: int = 200, seed: int = 0, groups=None) -> Validation:
    """``rms::validate(lrm(y ~ X), B)``: an ML logistic model refitted on every resample.

    As in rms (``lrm.fit``, maxit 12), a resample whose fit does not converge (separation, a
    singular design) is skipped."""
    def fit(Xb, yb, gb=None):
        f = fit_logistic(Xb, yb, maxit=25)
        if not f.converged:
            raise CeusError("logistic fit did not converge")
        return f.linear_predictor

    return bootstrap_validate(np.asarray(X, dtype=float), y, fit, B=B, seed=seed, groups=groups)
