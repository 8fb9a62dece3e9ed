"""THE fold plan, and the one way a case is scored by the fold models.

The package's central guarantee lives here and nowhere else: a training case is scored by the fold
model that held it out (its out-of-fold value), and a case no fold model saw (a test case, a new
patient) by one model of the same kind: under ``test_scoring: refit`` (the default) one model
refitted on every training case (:data:`REFIT`) for a fold's number of optimiser steps on a fold's LR
schedule (``models.train.refit_plan``: not a fold's epoch count, which on k/(k-1) times the cases
would be k/(k-1) times the steps), under ``fold-mean`` the mean of the fold models. Probabilities (train), deep features (features), Grad-CAM maps
(explain) and a new patient's prediction (predict) all go through :func:`over_folds`, so they cannot
disagree about which model scored which case.

Why refit is the default: a mean of k models is a shrunken score. On the synthetic cohort the fold
mean compressed the test logits' spread to about 0.7 of one model's, and every threshold, scaler and
classifier fitted on the (single-model) out-of-fold rows then met inputs on another scale. A refitted
single model keeps test rows on the training rows' scale, by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.models.data import CachedSet

UNSEEN = -1  # fold number of a case no fold model trained or validated on
REFIT = "full"  # the model refitted on every training case (RUN/models/<name>/full/)
TEST_SCORINGS = ("refit", "fold-mean")


def scoring_models(k: int, test_scoring: str) -> list:
    """The model ids that score unseen cases: ``[REFIT]``, or the k fold numbers."""
    if test_scoring not in TEST_SCORINGS:
        raise CeusError(f"test scoring {test_scoring!r} is not one of {', '.join(TEST_SCORINGS)}")
    return [REFIT] if test_scoring == "refit" else list(range(k))


def model_number(model: int | str, k: int) -> int:
    """A model id as a number (fold k for :data:`REFIT`): for seeds and sorting."""
    return k if model == REFIT else int(model)


@dataclass(frozen=True)
class FoldPlan:
    """Which fold holds out each training case (``RUN/models/<name>/folds.csv``)."""

    k: int
    fold_of: dict  # case_id -> fold
    test_scoring: str = "fold-mean"  # how unseen cases are scored (see scoring_models)

    @classmethod
    def read(cls, run, name: str, k: int, test_scoring: str = "fold-mean") -> "FoldPlan":
        path = RunLayout(run).model_folds(name)
        if not path.is_file():
            raise CeusError(f"{path} not found (train the model first)")
        folds = pd.read_csv(path, dtype={"case_id": str})
        if not {"case_id", "fold"} <= set(folds.columns):
            raise CeusError(f"{path}: expected columns case_id, fold")
        bad = folds[~folds["fold"].isin(range(k))]
        if len(bad):
            raise CaseError(str(bad["case_id"].iloc[0]), str(path), f"fold {bad['fold'].iloc[0]} is not in 0..{k - 1}")
        return cls(k, dict(zip(folds["case_id"], folds["fold"].astype(int))), test_scoring)

    def folds_for(self, case_id: str, split: str) -> list:
        """The models that score this case: its own fold model for a training case, else the scoring models."""
        if split == "train" and case_id in self.fold_of:
            return [self.fold_of[case_id]]
        return scoring_models(self.k, self.test_scoring)

    def assign(self, case_ids, splits, source: str = "folds.csv") -> np.ndarray:
        """Fold per case (:data:`UNSEEN` for test cases), with the checks that keep scores out-of-fold."""
        fold = np.full(len(case_ids), UNSEEN, dtype=np.int64)
        for i, (cid, split) in enumerate(zip(case_ids, splits)):
            if split == "train":
                if cid not in self.fold_of:
                    raise CaseError(cid, source, "training case has no fold (was the cache prepared again after training?)")
                fold[i] = self.fold_of[cid]
            elif split != "test":
                raise CaseError(cid, "prepared/index.csv", f"split must be train or test, got {split!r}")
            elif cid in self.fold_of:
                raise CaseError(cid, source, "test case appears in the training folds")
        return fold


def make_folds(data: CachedSet, train_idx: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number per training case: stratified by label, grouped by patient group."""
    labels, groups = data.labels[train_idx], data.groups[train_idx]
    for cls in (0, 1):
        n = len(set(groups[labels == cls]))
        if n < k:
            raise CeusError(f"only {n} training group(s) with label {cls}: too few for {k} folds (use --folds {max(2, n)})")
    from sklearn.model_selection import StratifiedGroupKFold  # here: scikit-learn costs ~1 s to import, and predict never makes folds

    fold = np.full(len(labels), -1)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, va) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
        fold[va] = f
    return fold


def over_folds(assign: np.ndarray, k: int, fn: Callable[[int | str, np.ndarray], np.ndarray],
               test_scoring: str = "fold-mean") -> np.ndarray:
    """Score cases the way the package promises, calling ``fn(model, positions)`` once per model.

    ``assign[i]`` is case i's fold, or :data:`UNSEEN`. A case with a fold gets that fold model's
    value. An unseen case gets the :data:`REFIT` model's value (``test_scoring="refit"``), or the mean
    over the ``k`` fold models (accumulated in float64, fold by fold). A fold model sees its own cases
    first, then (fold-mean) the unseen ones. Returns (n, ...) float64.
    """
    assign = np.asarray(assign)
    shared = np.flatnonzero(assign == UNSEEN)
    refit = scoring_models(k, test_scoring) == [REFIT]
    out = None

    def put(rows: np.ndarray, z: np.ndarray, weight: float | None) -> None:
        nonlocal out
        if out is None:
            out = np.zeros((len(assign),) + z.shape[1:], dtype=np.float64)
        if weight is None:
            out[rows] = z
        else:
            out[rows] += z.astype(np.float64) * weight

    for f in range(k):
        own = np.flatnonzero(assign == f)
        rows = own if refit else np.concatenate([own, shared]).astype(np.int64)
        if not len(rows):
            continue
        z = np.asarray(fn(f, rows.astype(np.int64)))
        put(own, z[:len(own)], None)
        if not refit:
            put(shared, z[len(own):], 1.0 / k)
    if refit and len(shared):
        put(shared, np.asarray(fn(REFIT, shared.astype(np.int64))), None)
    return np.zeros((len(assign),), dtype=np.float64) if out is None else out
