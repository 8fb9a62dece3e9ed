"""``ceusfusion export``: a finished run as a bundle a new patient's prediction needs, and its verification.

A bundle holds nothing about the training patients: the selected models' fold weights (safetensors)
and configs, the preprocessing and keyframe parameters, the thresholds locked on the training set,
the fitted fusion pipeline, versions and a sha256 of every file (checked before anything is loaded).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import torch

from ceusfusion import __version__
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file, write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.fusion.extract import default_layer
from ceusfusion.fusion.features import is_score_name, read_features
from ceusfusion.models.ensemble import REFIT, test_scoring_of
from ceusfusion.models.registry import MODEL_FILE, build_from_config
from ceusfusion.models.select import read_selection

BUNDLE_VERSION = 1
FUSION_MODEL = "fusion/model.joblib"


def locked_threshold(metrics: dict, name: str) -> float:
    """The Youden threshold fixed on the training set (what evaluate carried to test)."""
    for s in ("test", "train"):
        m = metrics.get("sets", {}).get(s, {}).get("models", {}).get(name)
        if m and (s == "train" or m.get("threshold_source") == "train"):
            t = m.get("threshold")
            if isinstance(t, str) and t in ("Infinity", "-Infinity"):
                return float(t.replace("Infinity", "inf"))  # degenerate Youden optimum: all negative / all positive
            if isinstance(t, (int, float)) and not np.isnan(t):
                return float(t)
    raise CeusError(f"no training-set threshold for {name} in evaluation/metrics.json")


def _copy_models(run: RunLayout, tmp: Path, metrics: dict) -> dict:
    """The selected models' fold weights and configs into the bundle; their bundle.json entries."""
    models = {}
    for modality, name in read_selection(run.root).items():
        src = run.model(name)
        cfg = json.loads((src / "config.json").read_text())
        scoring = test_scoring_of(cfg)
        folds = sorted(int(p.parent.name[4:]) for p in src.glob(f"fold*/{MODEL_FILE}"))
        # a new patient is scored like a test case: by the refitted model, or by every fold model
        for d in ([REFIT] if scoring == "refit" else [f"fold{k}" for k in folds]):
            if not (src / d / MODEL_FILE).is_file():
                raise CeusError(f"{src / d / MODEL_FILE} not found: {name} has not finished training")
            (tmp / "models" / name / d).mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / d / MODEL_FILE, tmp / "models" / name / d / MODEL_FILE)
        shutil.copy2(src / "config.json", tmp / "models" / name / "config.json")
        models[modality] = {"name": name, "folds": folds if scoring == "fold-mean" else [], "test_scoring": scoring,
                            "threshold": locked_threshold(metrics, name), "config": cfg}
    return models


def _feature_layers(run: RunLayout, models: dict) -> dict:
    """Per model, the layer its fused features came from (so predict extracts the same ones)."""
    layers = {}
    for m in models.values():
        fpath = run.features(m["name"])
        if fpath.is_file():
            layer = read_features(fpath)[1].get("layer")
            penultimate = layer in (None, "features") or layer == default_layer(build_from_config(m["config"]))
            layers[m["name"]] = {"layer": layer, "penultimate": penultimate}
    return layers


def _copy_fusion(run: RunLayout, tmp: Path, models: dict, metrics: dict) -> dict | None:
    """The fitted DL_combined pipeline and what it was fitted on, or None when the run has none."""
    fusion_json = run.fusion / "fusion.json"
    if not (fusion_json.is_file() and (run.fusion / "model.joblib").is_file()):
        return None
    fj = json.loads(fusion_json.read_text())
    (tmp / "fusion").mkdir(parents=True, exist_ok=True)
    shutil.copy2(run.fusion / "model.joblib", tmp / FUSION_MODEL)
    name = fj.get("name", "DL_combined")
    feature_inputs = [i for i in fj.get("inputs", []) if i.get("kind") == "features"]
    scores = any(is_score_name(str(i.get("meta", {}).get("name", ""))) for i in feature_inputs)
    cols = fj.get("columns", {})
    return {"name": name, "inputs": "scores" if scores else "features", "threshold": locked_threshold(metrics, name),
            "feature_layers": _feature_layers(run, models),
            "clinical": list(cols.get("numeric", [])) + list(cols.get("categorical", [])),
            "perfusion": any(i.get("kind") == "perfusion" for i in fj.get("inputs", []))}


def export(run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """`ceusfusion export RUN --out BUNDLE`."""
    layout, out = RunLayout(run), Path(out)
    for need in (layout.selection, layout.metrics, layout.keyframes):
        if not need.is_file():
            raise CeusError(f"{need} not found: finish the study (select, evaluate) before exporting")
    if out.exists():
        if not overwrite:
            raise CeusError(f"{out} exists; pass --overwrite to replace it")
        if not (out / "bundle.json").is_file():
            raise CeusError(f"{out} exists and is not a bundle; refusing to replace it")
    metrics = json.loads(layout.metrics.read_text())
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    models = _copy_models(layout, tmp, metrics)
    combined = _copy_fusion(layout, tmp, models, metrics)
    params = json.loads(layout.keyframes.read_text())["params"]
    files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    write_json(tmp / "bundle.json", {"bundle_version": BUNDLE_VERSION, "ceusfusion": __version__, "torch": torch.__version__,
                                     "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     "prepare": params, "models": models, "combined": combined, "files": files,
                                     "thresholds": "Youden-optimal on the training set's out-of-fold predictions"})
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def load_bundle(bundle: Path) -> dict:
    """bundle.json, after checking every listed file against its sha256."""
    meta_path = bundle / "bundle.json"
    if not meta_path.is_file():
        raise CeusError(f"{bundle}: not a ceusfusion bundle (no bundle.json)")
    meta = json.loads(meta_path.read_text())
    for rel, digest in meta["files"].items():
        p = bundle / rel
        if not p.is_file() or sha256_file(p) != digest:
            raise CeusError(f"{p}: missing or changed since export (sha256 mismatch); refusing to load it")
    return meta


def load_fusion_model(bundle: Path, meta: dict):
    """The fitted fusion pipeline of a verified bundle (integrity checked by sha256 in :func:`load_bundle`)."""
    return joblib.load(bundle / FUSION_MODEL)
