"""Representation probes of pretrained weights against random initialisation: linear and k-NN
classifiers on frozen video features, stratified grouped K-fold CV on the TRAINING split's labels.

Labels are read here, after pretraining, and only here (:func:`probe_labels`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import write_json
from ceusfusion.core.runtime import autocast, resolve_device
from ceusfusion.ingest.cohort import groups_of, read_manifest
from ceusfusion.models.backbones import build_encoder
from ceusfusion.models.pretrain.augment import UltrasoundAugment
from ceusfusion.models.pretrain.frames import FrameBank, build_bank, manifest_videos

log = logging.getLogger(__name__)


def load_pretrained_encoder(weights: str | Path, arch: str) -> nn.Module:
    """The encoder (3-channel input, no head) with the pretrained weights, through ``weights.py``."""
    enc, _, _ = build_encoder(arch, 3, str(weights))
    return enc


@torch.no_grad()
def video_features(encoder: nn.Module, bank: FrameBank, device: torch.device, batch: int = 256) -> np.ndarray:
    """Mean frame feature of each video of the bank (n_videos, dim), frozen encoder in eval mode."""
    encoder = encoder.to(device).eval()
    aug = UltrasoundAugment(int(bank.frames.shape[-1]), device)
    feats = []
    for s in range(0, len(bank), batch):
        with autocast(device):
            feats.append(encoder(aug.plain(bank.frames[s:s + batch])).float().cpu())
    f = torch.cat(feats).numpy()
    return np.stack([f[bank.video == k].mean(0) for k in range(len(bank.videos))])


def probe_labels(cohort: str | Path, splits: tuple = ("train",)) -> pd.DataFrame:
    """case_id, label, group of the training split: the ONLY reading of labels, for the probes."""
    df = read_manifest(cohort)
    if "label" not in df.columns:
        raise CeusError(f"{cohort}: --probe needs a label column")
    if "split" in df.columns:
        df = df[df["split"].fillna("").str.strip().isin(splits)]
    df = df.assign(group=groups_of(df))
    bad = df[~df["label"].astype(str).str.strip().isin(["0", "1", "0.0", "1.0"])]
    if len(bad):
        r = bad.iloc[0]
        raise CeusError(f"{cohort}: case {r['case_id']}, column label: must be 0 or 1 for --probe, got {r['label']!r}")
    return pd.DataFrame({"case_id": df["case_id"].astype(str), "label": df["label"].astype(float).astype(int),
                         "group": df["group"].astype(str)})


def grouped_probe_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0,
                      knn_k: int = 5) -> dict:
    """Linear (logistic regression) and k-NN probes, stratified grouped K-fold CV AUC."""
    k = min(folds, *(len(set(groups[y == c])) for c in (0, 1)))
    if k < 2:
        raise CeusError("--probe needs at least 2 patient groups of each label in the training split")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    res = {}
    models = {"linear": lambda n: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)),
              "knn": lambda n: KNeighborsClassifier(n_neighbors=min(knn_k, n), metric="cosine", weights="distance")}
    for name, make in models.items():
        oof = np.zeros(len(y))
        fold_auc = []
        for tr, va in cv.split(x, y, groups):
            m = make(len(tr))
            m.fit(x[tr], y[tr])
            oof[va] = m.predict_proba(x[va])[:, 1]
            if len(np.unique(y[va])) == 2:
                fold_auc.append(float(roc_auc_score(y[va], oof[va])))
        res[name] = {"oof_auc": float(roc_auc_score(y, oof)), "fold_auc_mean": float(np.mean(fold_auc)) if fold_auc else None,
                     "fold_auc": fold_auc}
    res["folds"] = k
    return res


def probe(cohort: str | Path, weights: str | Path, arch: str, size: int, frames_per_video: int,
          seed: int = 0, device: str = "auto", splits: tuple = ("train",), out_json: str | Path | None = None,
          bank: FrameBank | None = None) -> dict:
    """Representation quality of pretrained weights vs random init, on the training split's labels.

    ``bank``: frames already extracted (by :func:`pretrain`); videos not in the
    cohort's training split (``--unlabeled`` ones) are ignored.
    """
    dev = resolve_device(device)
    if bank is None:
        bank = build_bank(manifest_videos(cohort, splits), size, frames_per_video)
    labels = probe_labels(cohort, splits).set_index("case_id")
    keep = [i for i, v in enumerate(bank.videos) if v in labels.index]
    if len(keep) < 4:
        raise CeusError(f"{cohort}: --probe needs labeled training videos, found {len(keep)}")
    ids = [bank.videos[i] for i in keep]
    y = labels.loc[ids, "label"].to_numpy(int)
    g = labels.loc[ids, "group"].to_numpy(str)
    if len(np.unique(y)) < 2:
        raise CeusError(f"{cohort}: --probe needs both labels among the training videos")
    torch.manual_seed(seed)
    rand_enc, _, _ = build_encoder(arch, 3, "none")
    result = {"weights": str(weights), "arch": arch, "size": size, "n_videos": len(ids), "n_positive": int(y.sum()),
              "unit": "video (mean frame feature of the frozen encoder)", "cv": "stratified grouped K-fold",
              "seed": seed}
    for name, enc in (("pretrained", load_pretrained_encoder(weights, arch)), ("random_init", rand_enc)):
        x = video_features(enc, bank, dev)[keep]
        result[name] = grouped_probe_auc(x, y, g, seed=seed)
        log.info("probe %s: linear AUC %.3f, k-NN AUC %.3f (%d videos)", name, result[name]["linear"]["oof_auc"],
                 result[name]["knn"]["oof_auc"], len(ids))
    if out_json is not None:
        write_json(out_json, result)
    return result
