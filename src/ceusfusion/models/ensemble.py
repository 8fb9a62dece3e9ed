"""THE fold plan, and the one way a case is scored by the fold models.

The package's central guarantee lives here and nowhere else: a training case is scored by the fold
model that held it out (its out-of-fold value), and a case no fold model saw (a test case, a new
patient) by the mean of the fold models. Probabilities (train), deep features (features), Grad-CAM
maps (explain) and a new patient's prediction (predict) all go through :func:`over_folds`, so they
cannot disagree about which model scored which case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.models.data import CachedSet

UNSEEN = -1  # fold number of a case no fold model trained or validated on


@dataclass(frozen=True)
class FoldPlan:
    """Which fold holds out each training case (``RUN/models/<name>/folds.csv``)."""

    k: int
    fold_of: dict  # case_id -> fold

    @classmethod
    def read(cls, run, name: str, k: int) -> "FoldPlan":
        path = RunLayout(run).model(name) / "folds.csv"
        if not path.is_file():
            raise CeusError(f"{path} not found (train the model first)")
        folds = pd.read_csv(path, dtype={"case_id": str})
        if not {"case_id", "fold"} <= set(folds.columns):
            raise CeusError(f"{path}: expected columns case_id, fold")
        bad = folds[~folds["fold"].isin(range(k))]
        if len(bad):
            raise CaseError(str(bad["case_id"].iloc[0]), str(path), f"fold {bad['fold'].iloc[0]} is not in 0..{k - 1}")
        return cls(k, dict(zip(folds["case_id"], folds["fold"].astype(int))))

    def folds_for(self, case_id: str, split: str) -> list[int]:
        """The fold models that score this case: its own for a training case, all for any other."""
        if split == "train" and case_id in self.fold_of:
            return [self.fold_of[case_id]]
        return list(range(self.k))

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
    fold = np.full(len(labels), -1)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, va) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
        fold[va] = f
    return fold


def over_folds(assign: np.ndarray, k: int, fn: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
    """Score cases the way the package promises, calling ``fn(fold, positions)`` once per fold model.

    ``assign[i]`` is case i's fold, or :data:`UNSEEN`. A case with a fold gets that fold model's
    value; an unseen case the mean over the ``k`` fold models (accumulated in float64, fold by fold).
    Each fold model sees its own cases first, then the unseen ones. Returns (n, ...) float64.
    """
    assign = np.asarray(assign)
    shared = np.flatnonzero(assign == UNSEEN)
    out = None
    for f in range(k):
        own = np.flatnonzero(assign == f)
        if not len(own) and not len(shared):
            continue
        z = np.asarray(fn(f, np.concatenate([own, shared]).astype(np.int64)))
        if out is None:
            out = np.zeros((len(assign),) + z.shape[1:], dtype=np.float64)
        out[own] = z[:len(own)]
        out[shared] += z[len(own):].astype(np.float64) / k
    return np.zeros((len(assign),), dtype=np.float64) if out is None else out
