"""Deep features of a trained model for the fusion stage (``RUN/features/<name>.parquet``).

Why out-of-fold: a fold model has memorised its own training cases, so their
features would look more separable than those of new patients and the fusion
classifier would learn from that. Each training case therefore gets the
features of the one fold model that held it out (``folds.csv``); test cases,
seen by no fold model, are scored exactly as the test probabilities of ``train``
are (``models.ensemble.over_folds``): under ``test_scoring: refit`` (the default)
by the one model refitted on every training case (``full/``), under ``fold-mean``
by the mean of the fold models' features.

How: by default every model's own ``features()`` method, the vector that feeds the head
(global-pooled penultimate features; attention-pooled for ``temporal`` models). Any other
``--layer`` node of a ``single``/``stack`` model goes through torchvision's
``create_feature_extractor``, its (B, C, H, W) output global-average pooled. Symbolic tracing is
kept for that option only: some backbones cannot be traced (timm's TF "same" padding branches on
the input size, the temporal model on its shape).

Speed: the cache is loaded once for all models, each model sees only the cases
it must embed (a fold model its held-out fold, plus the test set under
``fold-mean``; the refitted model the test set), batches are
cropped and normalised in torch, and everything runs under ``inference_mode``
(``bench/features_throughput.py`` compares with a bare forward loop).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.fx import symbolic_trace
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import claim
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.core.runtime import resolve_device
from ceusfusion.fusion.features import GROUP_COLUMN, SCORE_COLUMN, feature_columns, score_logit, score_name, write_features
from ceusfusion.ingest.cache import read_index
from ceusfusion.ingest.cohort import groups_of
from ceusfusion.models.backbones import TemporalNet
from ceusfusion.models.data import CachedSet, load_cached
from ceusfusion.models.ensemble import UNSEEN, FoldPlan, over_folds
from ceusfusion.models.registry import ModelRecord, load_fold_model, parse_model_path, read_config, transform_for
from ceusfusion.models.transforms import BatchTransform

META_KEY = b"ceusfusion"
HEAD_INPUT = "dropout"  # CeusNet: encoder -> dropout -> head; the node feeding ``dropout`` is the pooled vector


@dataclass
class Extractor:
    """A callable (B, C, H, W) float -> (B, D) features, and where the features come from."""

    module: nn.Module
    layer: str
    method: str  # "create_feature_extractor" or "features"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "features":
            return self.module.features(x)
        return _pool(self.module(x)[self.layer], self.layer)


def _pool(out: torch.Tensor, layer: str) -> torch.Tensor:
    """Global average pooling of a node output to (B, D)."""
    if out.ndim == 2:
        return out
    if out.ndim == 4:  # (B, C, H, W)
        return out.mean(dim=(2, 3))
    if out.ndim == 3:  # (B, L, C) tokens
        return out.mean(dim=1)
    raise CeusError(f"layer {layer!r} gives a {out.ndim}-D output; choose a layer with a 2-D or 4-D output")


def default_layer(model: nn.Module) -> str:
    """The penultimate node: the one feeding the head (``features`` for temporal models)."""
    if isinstance(model, TemporalNet):
        return "features"
    for node in symbolic_trace(model).graph.nodes:
        if node.op == "call_module" and node.target == HEAD_INPUT:
            return _node_name(node.args[0])
    raise CeusError(f"{type(model).__name__} has no '{HEAD_INPUT}' module before its head; pass --layer")


def _node_name(node) -> str:
    """torchvision's node naming: the module path for module calls."""
    return str(node.target) if node.op == "call_module" else node.name


def make_extractor(model: nn.Module, layer: str | None = None) -> Extractor:
    """Feature extractor of an eval-mode model at ``layer`` (default: the penultimate pooled vector)."""
    model.eval()
    if layer in (None, "features"):
        return Extractor(model, "features", "features")
    if isinstance(model, TemporalNet):
        raise CeusError(f"--layer {layer!r}: temporal models cannot be traced by create_feature_extractor; "
                        "only their attention-pooled 'features' are available")
    nodes = get_graph_node_names(model)[1]
    if not any(n == layer or n.startswith(layer + ".") for n in nodes):  # a module name means its last node
        near = difflib.get_close_matches(layer, nodes, n=4, cutoff=0.5) or nodes[-6:]
        raise CeusError(f"--layer {layer!r} is not a node of this model; close ones: {', '.join(near)}")
    fx = create_feature_extractor(model, return_nodes={layer: layer})
    return Extractor(fx.eval(), layer, "create_feature_extractor")


def extract(ex: Extractor, data: CachedSet, tf: BatchTransform, idx: np.ndarray | None = None,
            batch_size: int = 64) -> np.ndarray:
    """Features (len(idx), D) float32 of the cached cases ``idx`` (default: all), evaluation transform."""
    idx = np.arange(len(data)) if idx is None else np.asarray(idx, dtype=np.int64)
    if batch_size < 1:
        raise CeusError("--batch-size must be at least 1")
    out = []
    with torch.inference_mode():
        for s in range(0, len(idx), batch_size):
            x = tf(data.x[torch.from_numpy(idx[s:s + batch_size])])
            out.append(ex(x).float().cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def _check_cache(run: Path, name: str, rec: ModelRecord, data: CachedSet) -> None:
    if data.size != rec.image_size or data.frames != rec.frames or data.frame_channels != rec.frame_channels:
        raise CeusError(f"{run}/prepared no longer matches {name} (cache {data.frames}x{data.frame_channels}x{data.size} px, "
                        f"model {rec.frames}x{rec.frame_channels}x{rec.image_size} px); prepare or train again")


def extract_features(run, name: str, layer: str | None = None, batch_size: int = 64,
                     device: str = "auto") -> tuple[pd.DataFrame, dict]:
    """Out-of-fold training features and test features (the refitted model's, or the fold mean under
    ``test_scoring: fold-mean``) of a trained model, with its metadata."""
    run = Path(run)
    rec = read_config(run, name)
    k = rec.folds
    dev = resolve_device(device)
    data = load_cached(run, rec.modality, rec.size)
    rec.check_prepared(data.prepare_fingerprint, RunLayout(run).prepared)
    _check_cache(run, name, rec, data)
    fold = FoldPlan.read(run, name, k).assign(data.case_ids, data.split, str(RunLayout(run).model_folds(name)))
    if dev.type == "cuda":
        data.x = data.x.to(dev)
    tf = transform_for(rec, dev)
    used: list[Extractor] = []

    def fold_features(f: int | str, pos: np.ndarray) -> np.ndarray:
        used.append(make_extractor(load_fold_model(run, name, f, dev)[0], layer))
        return extract(used[-1], data, tf, pos, batch_size)

    feats = over_folds(fold, k, fold_features, rec.test_scoring)
    dim = int(feats.shape[1])
    cols = {"case_id": list(data.case_ids), "set": np.where(fold == UNSEEN, "test", "train"),
            "y": data.labels.astype(np.int64), GROUP_COLUMN: data.groups.astype(str)}  # the prepared index's
    fcols = pd.DataFrame(feats.astype(np.float32), columns=feature_columns(dim))
    df = pd.concat([pd.DataFrame(cols), fcols], axis=1)
    meta = {"name": name, "arch": rec.arch, "modality": rec.modality, "input_mode": rec.input_mode,
            "layer": used[-1].layer, "extractor": used[-1].method, "feature_dim": dim, "folds": k,
            "crop": rec.crop, "image_size": rec.image_size, "weights": rec.weights,
            "n_train": int((fold >= 0).sum()), "n_test": int((fold == UNSEEN).sum()),
            "train_rows": "out-of-fold (fold model that held the case out)", "test_rows": ("one model refitted on all training cases" if rec.test_scoring == "refit"
                          else f"mean over {k} fold models")}
    meta["groups"] = "prepared index"  # where the group column comes from
    return df, meta


def features(model: str | Path, out: str | Path | None = None, layer: str | None = None, batch_size: int = 64,
             device: str = "auto", force: bool = False) -> tuple[Path, dict]:
    """``ceusfusion features``: RUN/models/NAME -> out (default RUN/features/NAME.parquet); never over a file
    ceusfusion did not write (unless ``force``), never inside the model or the prepared cache it reads."""
    run, name = parse_model_path(model)
    layout = RunLayout(run)
    path = Path(out) if out else layout.features(name)
    claim(path.parent, files=[path], force=force, inputs=[layout.model(name), layout.prepared])
    df, meta = extract_features(run, name, layer, batch_size, device)
    return write_features(path, df, meta), meta


def index_groups(run, case_ids) -> np.ndarray:
    """The patient group of each case from RUN/prepared/index.csv (empty: the case_id), in the given order."""
    idx = read_index(run)
    groups = pd.Series(groups_of(idx).to_numpy(), index=idx["case_id"].astype(str))
    ids = pd.Index(case_ids).astype(str)
    missing = ids[~ids.isin(groups.index)]
    if len(missing):
        raise CeusError(f"{RunLayout(run).prepared_index} has no row for {len(missing)} case(s) with predictions: "
                        f"{', '.join(sorted(missing)[:5])}; prepare and train again")
    return groups.loc[ids].to_numpy(dtype=str)


def score_features(run, name: str) -> Path:
    """RUN/features/NAME.score.parquet: one column, the model's out-of-fold logit (test rows: the
    logit of the test probability in RUN/predictions/NAME.csv, from the refitted model, or the mean
    of the fold models' probabilities under ``fold-mean``). For score-level ("late") fusion: unlike
    penultimate features, a score means the same thing whichever fold model produced it. The
    patient group comes from the prepared index, as for deep features."""
    layout = RunLayout(run)
    path = layout.predictions(name)
    if not path.is_file():
        raise CeusError(f"{path} not found (train {name} first)")
    pred = pd.read_csv(path, dtype={"case_id": str})
    df = pd.DataFrame({"case_id": pred["case_id"], "set": pred["set"], "y": pred["y"].astype(int),
                       GROUP_COLUMN: index_groups(run, pred["case_id"]),
                       SCORE_COLUMN: score_logit(pred["prob"].to_numpy())})
    return write_features(layout.score_features(name), df,
                          {"name": score_name(name), "source": "out-of-fold logit", "feature_dim": 1,
                           "groups": "prepared index"})
