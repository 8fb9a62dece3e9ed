"""The classifier families compared by the fusion stage: one registry entry per family.

Each entry gives the family's display name, a seeded single-threaded estimator
and a small hyperparameter grid (``fast``: one or two points, for tests).
Adding a family is adding one entry to ``REGISTRY``. A family whose estimator
runs a CV of its own (the SVM's Platt scaling) says so with ``takes_groups``:
the fusion pipeline then passes it the patient groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted, validate_data

from ceusfusion.core.errors import CeusError
from ceusfusion.fusion.lasso import inner_folds


@dataclass(frozen=True)
class Family:
    key: str  # as given to --classifiers
    name: str  # as shown in tables and figures
    make: Callable[[int, bool], BaseEstimator]  # (seed, fast) -> unfitted estimator
    grid: Callable[[bool, int], dict]  # (fast, n_train) -> GridSearchCV parameter grid
    takes_groups: bool = False  # fit(X, y, groups=...): the estimator runs an inner CV of its own


def _n_trees(fast: bool) -> int:
    return 50 if fast else 300


def platt_sigmoid(d: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt's (1999) fit of P(y=1 | d) = 1 / (1 + exp(a d + b)) with his smoothed targets
    (those of scikit-learn's ``method="sigmoid"``); L-BFGS from a = 0 and the prior's b."""
    d, y = np.asarray(d, dtype=float), np.asarray(y).astype(int)
    n1 = int(y.sum())
    n0 = len(y) - n1
    t = np.where(y == 1, (n1 + 1) / (n1 + 2), 1 / (n0 + 2))

    def loss(ab):
        z = ab[0] * d + ab[1]
        r = t - expit(-z)  # d loss / d z
        return float(np.sum(t * np.logaddexp(0, z) + (1 - t) * np.logaddexp(0, -z))), np.array([r @ d, r.sum()])

    res = minimize(loss, np.array([0.0, np.log((n0 + 1) / (n1 + 1))]), jac=True, method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


class GroupedPlattSVC(ClassifierMixin, BaseEstimator):
    """An RBF SVC with Platt scaling fitted on out-of-fold decision values of patient-grouped folds.

    What ``CalibratedClassifierCV(SVC(), method="sigmoid", ensemble=False)`` does (one SVC on all
    rows; the sigmoid on cross-validated decision values), except that ``fit(X, y, groups)`` splits
    the calibration folds by patient (seeded StratifiedGroupKFold, folds reduced to the patients of
    the smaller class). Why not CalibratedClassifierCV: without metadata routing it cannot hand
    groups to its splitter, so a patient's twin nodule would sit on the other side of a calibration
    fold and make the SVC look surer than it is; routing would have to be switched on
    (``sklearn.config_context`` plus ``set_fit_request`` on every step) around every fit of the
    pipeline, its grid search and the saved model. Without groups every row is its own patient.
    """

    def __init__(self, C: float = 1.0, gamma="scale", calibration_folds: int = 3, random_state: int = 0):
        self.C = C
        self.gamma = gamma
        self.calibration_folds = calibration_folds
        self.random_state = random_state

    def _svc(self) -> SVC:
        return SVC(C=self.C, gamma=self.gamma, random_state=self.random_state)

    def fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y)
        self.classes_, y = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise CeusError("the SVM family needs both classes in its training rows")
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        splitter = inner_folds(self.calibration_folds, y, groups, self.random_state, "SVM Platt scaling")
        d = np.zeros(len(y))
        for tr, va in splitter.split(X, y, groups):
            if len(np.unique(y[tr])) < 2:
                raise CeusError("SVM Platt scaling: a calibration fold's training part has one class only")
            d[va] = self._svc().fit(X[tr], y[tr]).decision_function(X[va])
        self.a_, self.b_ = platt_sigmoid(d, y)
        self.svc_ = self._svc().fit(X, y)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "svc_")
        return self.svc_.decision_function(validate_data(self, X, reset=False))

    def predict_proba(self, X) -> np.ndarray:
        p = expit(-(self.a_ * self.decision_function(X) + self.b_))
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def _svm(seed: int, fast: bool) -> BaseEstimator:
    return GroupedPlattSVC(random_state=seed)


def _knn_grid(fast: bool, n_train: int) -> dict:
    ks = [k for k in ([5, 11] if fast else [5, 11, 21]) if k <= n_train] or [max(1, n_train)]
    return {"n_neighbors": ks, "weights": ["uniform", "distance"] if not fast else ["uniform"]}


def _tree_grid(fast: bool, n_train: int) -> dict:
    return {"max_depth": [None, 3] if fast else [None, 3, 6], "min_samples_leaf": [1] if fast else [1, 5]}


def _xgb(seed: int, fast: bool) -> BaseEstimator:
    # Imported here: xgboost is heavy to import and only needed when this family is asked for.
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=50 if fast else 200, subsample=0.8, colsample_bytree=0.8, tree_method="hist",
                         eval_metric="logloss", n_jobs=1, random_state=seed, verbosity=0)


def _lgbm(seed: int, fast: bool) -> BaseEstimator:
    # Imported here: lightgbm is heavy to import and only needed when this family is asked for.
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=50 if fast else 200, min_child_samples=5, subsample=0.8, subsample_freq=1,
                          colsample_bytree=0.8, n_jobs=1, random_state=seed, deterministic=True,
                          force_row_wise=True, verbose=-1)


REGISTRY: dict[str, Family] = {f.key: f for f in (
    Family("lr", "LogisticRegression",
           lambda seed, fast: LogisticRegression(max_iter=2000),
           lambda fast, n: {"C": [0.1, 1.0] if fast else [0.01, 0.1, 1.0, 10.0]}),
    Family("svm", "SVM", _svm,
           lambda fast, n: {"C": [1.0] if fast else [0.1, 1.0, 10.0], "gamma": ["scale"]}, takes_groups=True),
    Family("knn", "KNN", lambda seed, fast: KNeighborsClassifier(), _knn_grid),
    Family("rf", "RandomForest",
           lambda seed, fast: RandomForestClassifier(n_estimators=_n_trees(fast), random_state=seed, n_jobs=1),
           _tree_grid),
    Family("et", "ExtraTrees",
           lambda seed, fast: ExtraTreesClassifier(n_estimators=_n_trees(fast), random_state=seed, n_jobs=1),
           _tree_grid),
    Family("xgb", "XGBoost", _xgb,
           lambda fast, n: {"max_depth": [2] if fast else [2, 3], "learning_rate": [0.1] if fast else [0.03, 0.1]}),
    Family("lgbm", "LightGBM", _lgbm,
           lambda fast, n: {"num_leaves": [4] if fast else [4, 8], "learning_rate": [0.1] if fast else [0.03, 0.1]}),
    Family("mlp", "MLP",
           lambda seed, fast: MLPClassifier(max_iter=1000, early_stopping=False, random_state=seed),
           lambda fast, n: {"hidden_layer_sizes": [(16,)] if fast else [(16,), (64,)],
                            "alpha": [1e-2] if fast else [1e-3, 1e-1]}),
)}

FAMILIES: tuple[str, ...] = tuple(REGISTRY)
FAMILY_NAMES: dict[str, str] = {k: f.name for k, f in REGISTRY.items()}


def get_family(key: str) -> Family:
    """The registry entry of one family; an unknown key is one clear error."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise CeusError(f"unknown classifier family {key!r}; choose from {', '.join(FAMILIES)}") from None


def parse_families(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'lr,svm' → ('lr', 'svm'); rejects unknown names in one line."""
    items = text.split(",") if isinstance(text, str) else list(text)
    fams = tuple(dict.fromkeys(s.strip().lower() for s in items if s.strip()))
    bad = [f for f in fams if f not in REGISTRY]
    if bad or not fams:
        raise CeusError(f"unknown classifier famil{'ies' if len(bad) > 1 else 'y'} {', '.join(bad) or '(none)'}; "
                        f"choose from {','.join(FAMILIES)}")
    return fams
