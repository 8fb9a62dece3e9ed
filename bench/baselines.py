"""Naive baselines for the real-data benchmarks: raw pixels → PCA(20) → logistic regression.

A deep model that does not beat these has not earned its cost. They read the same prepared
cache as the deep models and use the very same folds (``ceusfusion.models.train.make_folds`` with the
same seed, on the same case order), so every AUC in a benchmark table is out-of-fold on
identical splits. Inputs (grey, side ``size`` px, scaled to [0, 1]):

* ``middle``  the still (for POCUS: the middle keyframe);
* ``frames``  all keyframes concatenated;
* ``meanstd`` per-pixel mean and standard deviation over the keyframes (motion).

The PCA and the logistic regression are fitted inside each training fold only; the external
test set (split=test) is scored once by a model refitted on every training case.
Writes predictions in the contracts.md format (case_id, set, fold, y, prob).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("middle", "frames", "meanstd")


def pixel_matrix(run: Path, kind: str, size: int = 64):
    """(CachedSet, X float32 (N, D)) for one baseline input kind."""
    import torch

    from ceusfusion.models.data import load_cached

    modality = "image" if kind == "middle" else "video"
    data = load_cached(run, modality, size)
    x = data.x.to(torch.float32) / 255.0  # (N, frames*c, S, S)
    if data.frame_channels > 1:  # grey baseline: mean over colour channels
        x = x.view(len(data), data.frames, data.frame_channels, size, size).mean(2)
    if kind == "meanstd":
        x = torch.cat([x.mean(1, keepdim=True), x.std(1, unbiased=False, keepdim=True)], 1)
    return data, x.reshape(len(data), -1).numpy()


def make_pipeline(n_components: int, seed: int):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline as mp
    from sklearn.preprocessing import StandardScaler

    return mp(PCA(n_components=n_components, random_state=seed), StandardScaler(),
              LogisticRegression(max_iter=5000))


def pixel_baseline(run: Path, kind: str, folds: int, seed: int, size: int = 64, n_components: int = 20) -> pd.DataFrame:
    """Out-of-fold (and external-test) probabilities of the pixel baseline ``kind``."""
    from ceusfusion.models.ensemble import make_folds

    if kind not in KINDS:
        raise ValueError(f"unknown baseline {kind!r}; choose {', '.join(KINDS)}")
    data, X = pixel_matrix(run, kind, size)
    y = data.labels
    tr = np.flatnonzero(data.split == "train")
    te = np.flatnonzero(data.split == "test")
    fold = make_folds(data, tr, folds, seed)
    oof = np.zeros(len(tr))
    for k in range(folds):
        fit, val = tr[fold != k], fold == k
        oof[val] = make_pipeline(n_components, seed).fit(X[fit], y[fit]).predict_proba(X[tr[val]])[:, 1]
    rows = [pd.DataFrame({"case_id": [data.case_ids[i] for i in tr], "set": "train", "fold": fold, "y": y[tr],
                          "prob": oof})]
    if len(te):
        p = make_pipeline(n_components, seed).fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
        rows.append(pd.DataFrame({"case_id": [data.case_ids[i] for i in te], "set": "test", "fold": -1, "y": y[te],
                                  "prob": p}))
    return pd.concat(rows, ignore_index=True)


def check_same_folds(pred: pd.DataFrame, folds_csv: Path) -> None:
    """Fail loudly if a baseline's folds differ from a trained model's (folds.csv)."""
    if not folds_csv.is_file():
        return
    f = pd.read_csv(folds_csv, dtype={"case_id": str}).set_index("case_id")["fold"]
    tr = pred[pred["set"] == "train"].set_index("case_id")["fold"]
    if not f.reindex(tr.index).astype(int).equals(tr.astype(int)):
        raise RuntimeError(f"baseline folds differ from {folds_csv}")


def write_baselines(run: Path, kinds, folds: int, seed: int, size: int = 64, prefix: str = "baseline",
                    folds_csv: Path | None = None, names: dict[str, str] | None = None) -> dict[str, Path]:
    """Write RUN/predictions/<prefix>_<name>.csv for each kind (``names`` renames a kind, e.g.
    middle → roi for a still-image set); returns {display name: path}."""
    from ceusfusion.core.fsutil import write_csv
    from ceusfusion.models.train import safe_auc

    out = {}
    for kind in kinds:
        pred = pixel_baseline(run, kind, folds, seed, size)
        if folds_csv is not None:
            check_same_folds(pred, folds_csv)
        label = f"{prefix}_{(names or {}).get(kind, kind)}"
        path = run / "predictions" / f"{label}.csv"
        write_csv(path, pred)
        t = pred[pred["set"] == "train"]
        print(f"  {label}: OOF AUC {safe_auc(t['y'].to_numpy(), t['prob'].to_numpy()):.3f}", flush=True)
        out[label] = path
    return out
