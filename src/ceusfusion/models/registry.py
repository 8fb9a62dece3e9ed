"""A trained model on disk: its config.json, its fold checkpoints, and the transform it expects.

Later stages (features, explain, export, predict, safeguards, the report) read trained models only
through here, so the format of ``RUN/models/<name>/`` has one owner: :class:`ModelRecord` is config.json
typed, with the defaults of the models trained before a key was recorded (:data:`LEGACY_DEFAULTS`)
filled in one place; :func:`read_config` and the bundle's model entries build it; no other module reads
a config.json key by name (``tests/test_architecture.py`` checks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ceusfusion.core.errors import CeusError
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.core.runtime import load_tensors
from ceusfusion.models.backbones import build_model
from ceusfusion.models.ensemble import scoring_models
from ceusfusion.models.transforms import BatchTransform

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# what a config.json without the key was trained with (the defaults before the key was recorded)
LEGACY_DEFAULTS = {"select": "best", "test_scoring": "fold-mean", "class_weight": "balanced"}
# keys an older (or hand-written) config.json may lack, and what their absence meant
OPTIONAL = {"dropout": 0.0, "normalisation": None, "size": None, "weights": None, "prepare_fingerprint": None}
REQUIRED = ("name", "modality", "arch", "input_mode", "frames", "frame_channels", "image_size", "crop", "folds",
            "pretrained")


@dataclass(frozen=True)
class ModelRecord:
    """A trained model's config.json, typed: what every later stage needs to rebuild and score it.

    ``raw`` is the file as written (train's settings plus what the data fixed), kept for the bundle and the
    resume check; everything else is read through the fields below.
    """

    name: str
    modality: str
    arch: str
    input_mode: str
    frames: int
    frame_channels: int
    image_size: int  # the side of the cached arrays the model was trained on
    crop: int  # the side of its input
    folds: int
    pretrained: bool
    test_scoring: str  # refit | fold-mean (models.ensemble.scoring_models)
    select: str
    class_weight: str
    dropout: float
    size: int | None  # train --size: the arrays resized to this side first
    weights: str | None
    normalisation: tuple[list[float], list[float]] | None  # per-channel (mean, std) of the input
    prepare_fingerprint: str | None  # of the prepare parameters its arrays were made with (None: not recorded)
    raw: dict

    @classmethod
    def from_dict(cls, cfg: dict, where: str = CONFIG_FILE) -> "ModelRecord":
        """The record of a config.json's contents; a file missing a key every trained model has is refused."""
        if not isinstance(cfg, dict):
            raise CeusError(f"{where}: not a trained model's config (a JSON object expected)")
        missing = [k for k in REQUIRED if k not in cfg]
        if missing:
            raise CeusError(f"{where}: not a trained model's config (missing {', '.join(missing)})")
        v = {**OPTIONAL, **LEGACY_DEFAULTS, **cfg}
        norm = v["normalisation"]
        return cls(name=str(v["name"]), modality=str(v["modality"]), arch=str(v["arch"]),
                   input_mode=str(v["input_mode"]), frames=int(v["frames"]), frame_channels=int(v["frame_channels"]),
                   image_size=int(v["image_size"]), crop=int(v["crop"]), folds=int(v["folds"]),
                   pretrained=bool(v["pretrained"]), test_scoring=str(v["test_scoring"]), select=str(v["select"]),
                   class_weight=str(v["class_weight"]), dropout=float(v["dropout"]),
                   size=None if v["size"] is None else int(v["size"]),
                   weights=None if v["weights"] is None else str(v["weights"]),
                   normalisation=(norm["mean"], norm["std"]) if norm else None,
                   prepare_fingerprint=v["prepare_fingerprint"], raw=dict(cfg))

    def check_prepared(self, fingerprint: str, where) -> None:
        """Refuse arrays prepared with other parameters than the model was trained on (a prepare rerun with another
        margin or size after training); a model trained before the fingerprint was recorded is not checked."""
        if self.prepare_fingerprint and fingerprint and fingerprint != self.prepare_fingerprint:
            raise CeusError(f"{where}: prepared again with other parameters since {self.name} was trained on it "
                            f"(prepare fingerprint {fingerprint[:12]}, the model's {self.prepare_fingerprint[:12]}); "
                            "train the model again, or prepare with the parameters it was trained on")

    @property
    def prior_corrected(self) -> bool:
        """Whether a class-weighted loss came with the -log(n0/n1) output correction: recorded since the key
        ``class_weight`` was; a model trained before was weighted and not corrected."""
        return "class_weight" in self.raw

    @property
    def scoring_models(self) -> list:
        """The model ids that score a case no fold model saw (``[REFIT]`` or the fold numbers)."""
        return scoring_models(self.folds, self.test_scoring)


def config_path(run, name: str) -> Path:
    """RUN/models/<name>/config.json."""
    return RunLayout(run).model_config(name)


def read_config(run, name: str) -> ModelRecord:
    """The saved config.json of a trained model, as its record."""
    path = config_path(run, name)
    if not path.is_file():
        raise CeusError(f"{path} not found (train the model first)")
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise CeusError(f"{path}: not valid JSON ({(str(exc).splitlines() or [''])[0]})") from None
    return ModelRecord.from_dict(raw, str(path))


def build_from_config(rec: ModelRecord) -> nn.Module:
    """An untrained model with the architecture of a config.json (no weight download)."""
    model, _ = build_model(rec.arch, rec.input_mode, rec.frames, rec.frame_channels, weights="none",
                           dropout=rec.dropout)
    return model


def load_model_file(path: Path, rec: ModelRecord, device: str | torch.device = "cpu") -> nn.Module:
    """A model of ``rec``'s architecture with the weights of ``path`` (safetensors), in eval mode."""
    model = build_from_config(rec)
    tensors, _ = load_tensors(path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CeusError(f"checkpoint {path} does not fit {rec.arch} ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval()


def load_fold_model(run, name: str, fold: int, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelRecord]:
    """The kept checkpoint of one fold, in eval mode, with its config."""
    cfg = read_config(run, name)
    path = RunLayout(run).fold(name, fold) / MODEL_FILE
    if not path.is_file():
        raise CeusError(f"{path} not found (fold {fold} of {name} has not finished training)")
    return load_model_file(path, cfg, device), cfg


def transform_for(rec: ModelRecord, device: str | torch.device = "cpu") -> BatchTransform:
    """The evaluation transform a trained model expects (centre crop, the normalisation it recorded)."""
    return BatchTransform(rec.input_mode, rec.frames, rec.frame_channels, rec.crop, rec.image_size,
                          rec.pretrained, device, stats=rec.normalisation)


def parse_model_path(path: str | Path) -> tuple[Path, str]:
    """RUN/models/NAME -> (RUN, NAME), checking it is a trained model directory."""
    path = Path(path)
    if not path.is_dir():
        raise CeusError(f"--model {path}: not a folder (expected RUN/models/NAME)")
    if not (path / CONFIG_FILE).is_file():
        raise CeusError(f"--model {path}: no config.json there (expected a trained model folder RUN/models/NAME)")
    if path.resolve().parent.name != "models":
        raise CeusError(f"--model {path}: the model folder must sit in RUN/models/ (to find RUN/prepared/)")
    return path.resolve().parent.parent, path.name
