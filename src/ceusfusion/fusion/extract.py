"""Deep features of a trained model for the fusion stage (``RUN/features/<name>.parquet``).

Why out-of-fold: a fold model has memorised its own training cases, so their
features would look more separable than those of new patients and the fusion
classifier would learn from that. Each training case therefore gets the
features of the one fold model that held it out (``folds.csv``); test cases,
seen by no fold model, get the mean over the fold models, exactly as the test
probabilities of ``train`` do.

How: ``single``/``stack`` models go through torchvision's
``create_feature_extractor``, by default at the node that feeds the head (the
global-pooled penultimate vector), or at any ``--layer`` node, whose (B, C, H, W)
output is then global-average pooled. ``temporal`` models cannot be traced
symbolically (their forward branches on the input shape), so they use their own
``features()`` method: the attention-pooled penultimate vector.

Speed: the cache is loaded once for all fold models, each fold model sees only
the cases it must embed (its held-out fold plus the test set), batches are
cropped and normalised in torch, and everything runs under ``inference_mode``
(``bench/features_throughput.py`` compares with a bare forward loop).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ceusfusion.models.data import BatchTransform, CachedSet, load_cached
from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import atomic_path
from ceusfusion.models.backbones import TemporalNet
from ceusfusion.models.train import load_fold_model, resolve_device, model_dir, read_config, transform_for

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
    from torch.fx import symbolic_trace

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
    if isinstance(model, TemporalNet):
        if layer not in (None, "features"):
            raise CeusError(f"--layer {layer!r}: temporal models cannot be traced by create_feature_extractor; "
                            "only their attention-pooled 'features' are available")
        return Extractor(model, "features", "features")
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    nodes = get_graph_node_names(model)[1]
    if layer is None:
        layer = default_layer(model)
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


def parse_model_path(path: str | Path) -> tuple[Path, str]:
    """RUN/models/NAME -> (RUN, NAME), checking it is a trained model directory."""
    path = Path(path)
    if not path.is_dir():
        raise CeusError(f"--model {path}: not a folder (expected RUN/models/NAME)")
    if not (path / "config.json").is_file():
        raise CeusError(f"--model {path}: no config.json there (expected a trained model folder RUN/models/NAME)")
    if path.resolve().parent.name != "models":
        raise CeusError(f"--model {path}: the model folder must sit in RUN/models/ (to find RUN/prepared/)")
    return path.resolve().parent.parent, path.name


def _fold_table(run: Path, name: str, data: CachedSet, k: int) -> np.ndarray:
    """Fold per cached case (-1 for test cases), from folds.csv, with the checks that keep it out-of-fold."""
    path = model_dir(run, name) / "folds.csv"
    if not path.is_file():
        raise CeusError(f"{path} not found (train the model first)")
    folds = pd.read_csv(path, dtype={"case_id": str})
    if not {"case_id", "fold"} <= set(folds.columns):
        raise CeusError(f"{path}: expected columns case_id, fold")
    bad = folds[~folds["fold"].isin(range(k))]
    if len(bad):
        raise CaseError(str(bad["case_id"].iloc[0]), str(path), f"fold {bad['fold'].iloc[0]} is not in 0..{k - 1}")
    of = dict(zip(folds["case_id"], folds["fold"].astype(int)))
    fold = np.full(len(data), -1, dtype=np.int64)
    for i, (cid, split) in enumerate(zip(data.case_ids, data.split)):
        if split == "train":
            if cid not in of:
                raise CaseError(cid, str(path), "training case has no fold (was the cache prepared again after training?)")
            fold[i] = of[cid]
        elif split != "test":
            raise CaseError(cid, "prepared/index.csv", f"split must be train or test, got {split!r}")
        elif cid in of:
            raise CaseError(cid, str(path), "test case appears in the training folds")
    return fold


def extract_features(run, name: str, layer: str | None = None, batch_size: int = 64,
                     device: str = "auto") -> tuple[pd.DataFrame, dict]:
    """Out-of-fold training features and fold-mean test features of a trained model, with its metadata."""
    run = Path(run)
    cfg = read_config(run, name)
    k = int(cfg["folds"])
    dev = resolve_device(device)
    data = load_cached(run, cfg["modality"], cfg.get("size"))
    if data.size != cfg["image_size"] or data.frames != cfg["frames"] or data.frame_channels != cfg["frame_channels"]:
        raise CeusError(f"{run}/prepared no longer matches {name} (cache {data.frames}x{data.frame_channels}x{data.size} px, "
                        f"model {cfg['frames']}x{cfg['frame_channels']}x{cfg['image_size']} px); prepare or train again")
    fold = _fold_table(run, name, data, k)
    if dev.type == "cuda":
        data.x = data.x.to(dev)
    tf = transform_for(cfg, dev)
    test = np.flatnonzero(fold == -1)
    feats = None
    used = None
    for f in range(k):
        model, _ = load_fold_model(run, name, f, dev)
        ex = make_extractor(model, layer)
        used = ex
        mine = np.flatnonzero(fold == f)
        z = extract(ex, data, tf, np.concatenate([mine, test]), batch_size)
        if feats is None:
            feats = np.zeros((len(data), z.shape[1]), dtype=np.float64)
        feats[mine] = z[:len(mine)]
        feats[test] += z[len(mine):].astype(np.float64) / k
    dim = int(feats.shape[1])
    cols = {"case_id": list(data.case_ids), "set": np.where(fold == -1, "test", "train"),
            "y": data.labels.astype(np.int64)}
    fcols = pd.DataFrame(feats.astype(np.float32), columns=[f"f{j:04d}" for j in range(dim)])
    df = pd.concat([pd.DataFrame(cols), fcols], axis=1)
    meta = {"name": name, "arch": cfg["arch"], "modality": cfg["modality"], "input_mode": cfg["input_mode"],
            "layer": used.layer, "extractor": used.method, "feature_dim": dim, "folds": k,
            "crop": cfg["crop"], "image_size": cfg["image_size"], "weights": cfg.get("weights"),
            "n_train": int((fold >= 0).sum()), "n_test": int(len(test)),
            "train_rows": "out-of-fold (fold model that held the case out)", "test_rows": f"mean over {k} fold models"}
    return df, meta


def write_features(path, df: pd.DataFrame, meta: dict) -> Path:
    """Write the features table as parquet (atomically), metadata as JSON under ``ceusfusion``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def features(model: str | Path, out: str | Path | None = None, layer: str | None = None, batch_size: int = 64,
             device: str = "auto") -> tuple[Path, dict]:
    """``ceusfusion features``: RUN/models/NAME -> out (default RUN/features/NAME.parquet)."""
    run, name = parse_model_path(model)
    df, meta = extract_features(run, name, layer, batch_size, device)
    path = write_features(Path(out) if out else run / "features" / f"{name}.parquet", df, meta)
    return path, meta


def read_features(path) -> tuple[pd.DataFrame, dict]:
    """The table and metadata of a features parquet (for tests and later stages)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table.to_pandas(), json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))


def score_features(run, name: str) -> Path:
    """RUN/features/NAME.score.parquet: one column, the model's out-of-fold logit (test rows: the
    logit of the fold-mean probability). For score-level ("late") fusion: unlike penultimate
    features, a score means the same thing whichever fold model produced it."""
    run = Path(run)
    path = run / "predictions" / f"{name}.csv"
    if not path.is_file():
        raise CeusError(f"{path} not found (train {name} first)")
    pred = pd.read_csv(path, dtype={"case_id": str})
    p = pred["prob"].clip(1e-6, 1 - 1e-6)
    df = pd.DataFrame({"case_id": pred["case_id"], "set": pred["set"], "y": pred["y"].astype(int),
                       "f0000": np.log(p / (1 - p)).astype(np.float32)})
    return write_features(run / "features" / f"{name}.score.parquet", df,
                          {"name": f"{name}_score", "source": "out-of-fold logit", "feature_dim": 1})
