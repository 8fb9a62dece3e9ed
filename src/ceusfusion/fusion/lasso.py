"""LASSO feature selection whose penalty is chosen by inner CV inside ``fit``, and the grouped inner folds."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.svm import l1_min_c
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ceusfusion.core.errors import CeusError


def groups_per_class(y, groups) -> int:
    """Patients (distinct groups) of the smaller class: the most folds a grouped split can stratify."""
    y, groups = np.asarray(y).astype(int), np.asarray(groups)
    return int(min(len(np.unique(groups[y == c])) for c in (0, 1)))


def inner_folds(n_splits: int, y, groups, random_state: int, what: str):
    """The seeded splitter of an inner CV: StratifiedGroupKFold on the patient groups, ``n_splits``
    reduced to the patients of the smaller class (a fold needs one of each); without groups (a
    selector used on its own) StratifiedKFold reduced to the cases of the smaller class."""
    y = np.asarray(y).astype(int)
    if groups is None:
        k = int(min(n_splits, np.bincount(y, minlength=2).min()))
    else:
        k = min(n_splits, groups_per_class(y, groups))
    if k < 2:
        unit = "cases" if groups is None else "patients (groups)"
        raise CeusError(f"{what} needs at least 2 {unit} of each class in the training part of a fold")
    kind = StratifiedKFold if groups is None else StratifiedGroupKFold
    return kind(n_splits=k, shuffle=True, random_state=random_state)


def rank_auc(y, score) -> float:
    """ROC AUC of 0/1 labels (both classes present) from mid-ranks (Mann–Whitney): ties count one half.

    ``roc_auc_score``'s value (equal to 1e-12) without its input checks, which cost about a quarter of a
    LASSO fit (the inner CV scores every C of the grid on every fold: ~100 calls per fit)."""
    pos = np.asarray(y) == 1
    n1 = int(pos.sum())
    n0 = pos.size - n1
    return float((rankdata(score)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


class LassoSelector(SelectorMixin, BaseEstimator):
    """L1-logistic feature selection; the penalty C is chosen by inner CV (AUC) inside ``fit``.

    Because C is picked in ``fit``, cloning this step into every outer fold
    re-chooses the penalty from that fold's training rows only. ``fit(X, y,
    groups)`` splits that inner CV by patient (StratifiedGroupKFold): two
    near-identical nodules of one patient on both sides of a split would make
    a weak penalty look good. ``one_se`` takes the most penalised C whose mean
    AUC is within one standard error of the best. If no feature survives, the
    ``fallback_k`` features with the largest absolute coefficient at the
    least-penalised C are kept (``fallback_`` is then True) so a pipeline
    never breaks.
    """

    def __init__(self, n_cs: int = 20, c_span: float = 3.0, cv: int = 5, one_se: bool = False,
                 fallback_k: int = 10, random_state: int = 0, max_iter: int = 1000, tol: float = 1e-4,
                 store_path: bool = False):
        self.n_cs = n_cs
        self.c_span = c_span
        self.cv = cv
        self.one_se = one_se
        self.fallback_k = fallback_k
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.store_path = store_path

    def _lr(self, C: float) -> LogisticRegression:
        # Needs scikit-learn>=1.8: before it, l1_ratio=1.0 without penalty="l1" is ignored (L2 penalty).
        return LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", max_iter=self.max_iter, tol=self.tol,
                                  random_state=self.random_state)

    def _cv_scores(self, X, y, Cs, groups) -> np.ndarray:
        """AUC per (inner fold, C); a fold with one class on a side scores NaN (grouped folds can do that)."""
        splitter = inner_folds(self.cv, y, groups, self.random_state, "LASSO selection")
        scores = np.full((splitter.get_n_splits(), len(Cs)), 0.5)
        for f, (tr, va) in enumerate(splitter.split(X, y, groups)):
            if len(np.unique(y[tr])) < 2 or len(np.unique(y[va])) < 2:
                scores[f] = np.nan
                continue
            for i, C in enumerate(Cs):
                m = self._lr(C).fit(X[tr], y[tr])
                if np.any(m.coef_):
                    scores[f, i] = rank_auc(y[va], m.decision_function(X[va]))
        if np.isnan(scores).all():
            raise CeusError("LASSO selection: no inner fold has both classes on both sides")
        return scores

    def fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y)
        y = np.asarray(y).astype(int)
        # The grid starts at the smallest C with any non-zero coefficient
        # (everything is zero there) and spans c_span decades above it.
        c0 = l1_min_c(X, y, loss="log") if np.ptp(X, axis=0).any() else 1.0
        Cs = c0 * np.logspace(0, self.c_span, self.n_cs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores = self._cv_scores(X, y, Cs, None if groups is None else np.asarray(groups))
            ok = ~np.isnan(scores[:, 0])
            mean = scores[ok].mean(axis=0)
            se = scores[ok].std(axis=0, ddof=1) / np.sqrt(ok.sum()) if ok.sum() > 1 else np.zeros(len(Cs))
            i_best = int(np.argmax(mean))
            i_1se = int(np.flatnonzero(mean >= mean[i_best] - se[i_best])[0])
            i_use = i_1se if self.one_se else i_best
            coef = self._lr(Cs[i_use]).fit(X, y).coef_.ravel()
            support = coef != 0
            fallback = not support.any()
            if fallback:
                coef = self._lr(Cs[-1]).fit(X, y).coef_.ravel()
                order = np.argsort(-np.abs(coef), kind="stable")[: max(1, min(self.fallback_k, X.shape[1]))]
                support = np.zeros(X.shape[1], dtype=bool)
                support[order] = True
        self.Cs_, self.cv_scores_, self.cv_mean_, self.cv_se_ = Cs, scores, mean, se
        self.C_best_, self.C_1se_, self.C_ = float(Cs[i_best]), float(Cs[i_1se]), float(Cs[i_use])
        self.coef_, self.support_, self.fallback_ = coef, support, bool(fallback)
        self.grouped_ = groups is not None
        self.path_ = None
        if self.store_path:
            self.compute_path(X, y)
        return self

    def compute_path(self, X, y) -> LassoSelector:
        """Coefficients at every C of the grid (``path_``, for the figure); the selection is unchanged.

        Separate from ``fit`` so that the final model, fitted inside the grid search, gets its path
        without being fitted again."""
        check_is_fitted(self, "Cs_")
        X, y = check_array(X), np.asarray(y).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.path_ = np.array([self._lr(C).fit(X, y).coef_.ravel() for C in self.Cs_])
        return self

    def _get_support_mask(self):
        check_is_fitted(self, "support_")
        return self.support_
