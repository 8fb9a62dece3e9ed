"""The head of a frozen backbone (``finetune: frozen``): a logistic regression fitted to convergence.

Why not SGD steps: with the backbone frozen the model is a linear classifier on fixed features, a
convex problem. A few dozen AdamW steps at a fine-tuning learning rate leave it far from its
optimum (POCUS, ImageNet Lite0: pooled out-of-fold AUC 0.59 after 10 epochs), while the
radiomics-style studies this mode reproduces fit a regularised logistic regression on the
pretrained features. So: features of the fold's training cases (centre crop, no augmentation),
standardised, L2 logistic regression with C chosen by grouped inner cross-validation on those cases
only (patients never split, the fold's held-out cases never seen), folded back into the linear head.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from torch import nn

from ceusfusion.core.errors import CeusError
from ceusfusion.models.data import CachedSet
from ceusfusion.models.transforms import BatchTransform

C_GRID = np.logspace(-4, 2, 13)


@torch.no_grad()
def frozen_features(model: nn.Module, data: CachedSet, idx: np.ndarray, tf: BatchTransform,
                    batch_size: int = 64) -> np.ndarray:
    """The frozen network's pooled features (len(idx), D) of the cached cases ``idx``, eval mode."""
    model.eval()
    out = [model.features(tf(data.x[torch.as_tensor(idx[s:s + batch_size])])).double().cpu()
           for s in range(0, len(idx), batch_size)]
    return torch.cat(out).numpy()


def inner_splits(y: np.ndarray, groups: np.ndarray, k: int = 3) -> list:
    """Grouped inner folds that each hold both classes (None when the cases cannot give two such folds)."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        return []
    splits = list(GroupKFold(n_splits=min(k, n_groups)).split(np.zeros(len(y)), y, groups))
    return [s for s in splits if len(np.unique(y[s[1]])) == 2 and len(np.unique(y[s[0]])) == 2]


def fit_probe(model: nn.Module, data: CachedSet, idx: np.ndarray, tf: BatchTransform,
              class_weight: str = "none") -> tuple[torch.Tensor, torch.Tensor, float]:
    """(head weight (1, D), head bias (1,), chosen C) of the L2 logistic regression on frozen features."""
    x, y, groups = frozen_features(model, data, idx, tf), data.labels[idx], data.groups[idx]
    if len(np.unique(y)) < 2:
        raise CeusError(f"finetune 'frozen': the {len(idx)} training cases of a fold hold one class only")
    mu, sd = x.mean(0), x.std(0)
    sd[sd < 1e-12] = 1.0
    z, weights = (x - mu) / sd, "balanced" if class_weight == "balanced" else None
    c = choose_c(z, y, inner_splits(y, groups), weights)
    lr = LogisticRegression(C=c, max_iter=5000, class_weight=weights).fit(z, y)
    w = lr.coef_[0] / sd
    b = float(lr.intercept_[0] - np.sum(lr.coef_[0] * mu / sd))
    return torch.tensor(w[None], dtype=torch.float32), torch.tensor([b], dtype=torch.float32), c


def choose_c(z: np.ndarray, y: np.ndarray, splits: list, weights) -> float:
    """The C of :data:`C_GRID` with the best mean inner-fold AUC (the smallest C on ties); 1.0 without folds."""
    if not splits:
        return 1.0
    scores = [np.mean([roc_auc_score(y[te], LogisticRegression(C=c, max_iter=5000, class_weight=weights)
                                     .fit(z[tr], y[tr]).decision_function(z[te])) for tr, te in splits])
              for c in C_GRID]
    return float(C_GRID[int(np.argmax(scores))])
