"""The classifier families compared by the fusion stage: one registry entry per family.

Each entry gives the family's display name, a seeded single-threaded estimator
and a small hyperparameter grid (``fast``: one or two points, for tests).
Adding a family is adding one entry to ``REGISTRY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

from ceusfusion.core.errors import CeusError


@dataclass(frozen=True)
class Family:
    key: str  # as given to --classifiers
    name: str  # as shown in tables and figures
    make: Callable[[int, bool], BaseEstimator]  # (seed, fast) -> unfitted estimator
    grid: Callable[[bool, int], dict]  # (fast, n_train) -> GridSearchCV parameter grid


def _n_trees(fast: bool) -> int:
    return 50 if fast else 300


def _svm(seed: int, fast: bool) -> BaseEstimator:
    # Platt scaling on seeded inner folds, one SVC refitted on all rows (SVC(probability=True) is deprecated).
    return CalibratedClassifierCV(SVC(random_state=seed), method="sigmoid", ensemble=False,
                                  cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=seed))


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
           lambda fast, n: {"estimator__C": [1.0] if fast else [0.1, 1.0, 10.0], "estimator__gamma": ["scale"]}),
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
