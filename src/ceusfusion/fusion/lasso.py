"""LASSO feature selection whose penalty is chosen by inner CV inside ``fit``."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import l1_min_c
from sklearn.utils.validation import check_is_fitted, validate_data

from ceusfusion.core.errors import CeusError


class LassoSelector(SelectorMixin, BaseEstimator):
    """L1-logistic feature selection; the penalty C is chosen by inner CV (AUC) inside ``fit``.

    Because C is picked in ``fit``, cloning this step into every outer fold
    re-chooses the penalty from that fold's training rows only. ``one_se``
    takes the most penalised C whose mean AUC is within one standard error of
    the best. If no feature survives, the ``fallback_k`` features with the
    largest absolute coefficient at the least-penalised C are kept
    (``fallback_`` is then True) so a pipeline never breaks.
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

    def fit(self, X, y):
        X, y = validate_data(self, X, y)
        y = np.asarray(y).astype(int)
        # The grid starts at the smallest C with any non-zero coefficient
        # (everything is zero there) and spans c_span decades above it.
        c0 = l1_min_c(X, y, loss="log") if np.ptp(X, axis=0).any() else 1.0
        Cs = c0 * np.logspace(0, self.c_span, self.n_cs)
        k = int(min(self.cv, np.bincount(y, minlength=2).min()))
        if k < 2:
            raise CeusError("LASSO selection needs at least 2 cases of each class in the training part of a fold")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.random_state)
        scores = np.full((k, len(Cs)), 0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for f, (tr, va) in enumerate(splitter.split(X, y)):
                for i, C in enumerate(Cs):
                    m = self._lr(C).fit(X[tr], y[tr])
                    if np.any(m.coef_):
                        scores[f, i] = roc_auc_score(y[va], m.decision_function(X[va]))
            mean = scores.mean(axis=0)
            se = scores.std(axis=0, ddof=1) / np.sqrt(k)
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
            self.path_ = np.array([self._lr(C).fit(X, y).coef_.ravel() for C in Cs]) if self.store_path else None
        self.Cs_, self.cv_scores_, self.cv_mean_, self.cv_se_ = Cs, scores, mean, se
        self.C_best_, self.C_1se_, self.C_ = float(Cs[i_best]), float(Cs[i_1se]), float(Cs[i_use])
        self.coef_, self.support_, self.fallback_ = coef, support, bool(fallback)
        return self

    def _get_support_mask(self):
        check_is_fitted(self, "support_")
        return self.support_
