"""A trained model on disk: its config.json, its fold checkpoints, and the transform it expects.

Later stages (features, explain, export, predict) read trained models only through here, so the
format of ``RUN/models/<name>/`` has one owner.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ceusfusion.core.errors import CeusError
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.core.runtime import load_tensors
from ceusfusion.models.backbones import build_model
from ceusfusion.models.transforms import BatchTransform

MODEL_FILE = "model.safetensors"


def read_config(run, name: str) -> dict:
    """The saved config.json of a trained model."""
    path = RunLayout(run).model(name) / "config.json"
    if not path.is_file():
        raise CeusError(f"{path} not found (train the model first)")
    return json.loads(path.read_text())


def build_from_config(cfg: dict) -> nn.Module:
    """An untrained model with the architecture of a config.json (no weight download)."""
    model, _ = build_model(cfg["arch"], cfg["input_mode"], cfg["frames"], cfg["frame_channels"],
                           weights="none", dropout=cfg.get("dropout", 0.0))
    return model


def load_model_file(path: Path, cfg: dict, device: str | torch.device = "cpu") -> nn.Module:
    """A model of ``cfg``'s architecture with the weights of ``path`` (safetensors), in eval mode."""
    model = build_from_config(cfg)
    tensors, _ = load_tensors(path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CeusError(f"checkpoint {path} does not fit {cfg['arch']} ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval()


def load_fold_model(run, name: str, fold: int, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The kept checkpoint of one fold, in eval mode, with its config."""
    cfg = read_config(run, name)
    path = RunLayout(run).fold(name, fold) / MODEL_FILE
    if not path.is_file():
        raise CeusError(f"{path} not found (fold {fold} of {name} has not finished training)")
    return load_model_file(path, cfg, device), cfg


def transform_for(cfg: dict, device: str | torch.device = "cpu") -> BatchTransform:
    """The evaluation transform a trained model expects (centre crop, the normalisation it recorded)."""
    norm = cfg.get("normalisation")
    stats = (norm["mean"], norm["std"]) if norm else None
    return BatchTransform(cfg["input_mode"], cfg["frames"], cfg["frame_channels"], cfg["crop"], cfg["image_size"],
                          cfg["pretrained"], device, stats=stats)


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
