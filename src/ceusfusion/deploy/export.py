"""``ceusfusion export``: a finished run as a bundle a new patient's prediction needs, and its verification.

A bundle holds the selected models' fold weights (safetensors) and configs, the preprocessing and
keyframe parameters, the thresholds locked on the training set, the fitted fusion pipeline and
versions, and a model card (``card.json``: the cohort's size, prevalence and centres per split, each
model's test-set metrics at its locked threshold, and its training out-of-fold probabilities with their
labels, sorted, without case ids, for ``ceusfusion serve`` to place a new patient among them). It holds
no training table, but two fusion families keep training rows inside the fitted model: KNN its scaled
selected features, the SVM its support vectors. A run with radiomics adds its settings and the Rad / DLR /
DLR + clinical pipelines (``deploy.radiomics_bundle``), skops too.

Tamper evidence, the manifest included. ``bundle.json`` lists a sha256 of every other file; the sha256
of ``bundle.json`` itself is the *bundle id*, printed by export and written to ``bundle.json.sha256``
(``sha256sum -c`` format). :func:`load_bundle` refuses, in one line naming the file, a manifest that
does not match that sidecar or the id the user pins (``expect_sha256``, ``predict --expect-sha256``),
a listed file that is missing or changed, a file that is not listed, a symlink, a path that leaves
the bundle (absolute, ``..``, through a symlink; model names are plain names) and a malformed
manifest. The sidecar only catches careless edits: whoever can rewrite a bundle can rewrite it too.
Only a pinned id, passed on another channel than the bundle, proves the bundle is the one exported.

The fusion model is never unpickled: ``fusion/model.skops`` (``skops.io``). Why skops:

- It rebuilds the same scikit-learn objects from JSON and ``.npy`` arrays (``np.load`` without
  pickle), creating only allowed types, so every family (lr, svm, knn, rf, et, xgb, lgbm, mlp, with
  our LassoSelector and GroupedPlattSVC) gives bit-identical probabilities, and a new family costs one
  allowlist line. The allowlist is ours (:data:`TRUSTED_TYPES`), checked on the file's schema before
  skops builds anything: skops' default list (all of scikit-learn, numpy's ufuncs) is wider than a
  bundle needs, and functions, methods, partials and reduce calls are refused outright.
- ONNX has no converter for LassoSelector or the grouped-Platt SVM, and onnxruntime computes in float32:
  the probabilities would differ from the run's by far more than 1e-9.
- Coefficients as our own JSON means re-implementing eight families' predict (tree traversal,
  libsvm's kernel sums, the xgboost/lightgbm boosters), kept equal to 1e-9 across library versions.

What skops cannot check is the content of an allowed type: native code indexes some arrays without
bounds checks. After loading, trees and SVMs are checked and neighbour trees are rebuilt from their
data (:func:`check_native`). The xgboost/lightgbm model parsers are trusted. To be sure, pin the id.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from ceusfusion import __version__
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import check_not_input, sha256_file, write_bytes, write_json, write_text
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.deploy.bundle_paths import inside_bundle
from ceusfusion.deploy.radiomics_bundle import export_radiomics, fusion_reads, radiomics_card, radiomics_files
from ceusfusion.deploy.fusion_model import (  # noqa: F401 (the bundle API: predict, serve, tests)
    MAX_MODEL_BYTES,
    TRUSTED_LOADERS,
    TRUSTED_TYPES,
    first_line,
    check_native,
    read_fusion_model,
    write_fusion_model,
)
from ceusfusion.evaluate.predictions import load_predictions
from ceusfusion.fusion.features import is_score_name, read_features
from ceusfusion.ingest.cohort import read_manifest
from ceusfusion.ingest.cache import read_index
from ceusfusion.ingest.prepare import PrepareParams, roi_source_counts
from ceusfusion.models.ensemble import REFIT
from ceusfusion.models.registry import CONFIG_FILE, MODEL_FILE, ModelRecord, build_from_config, read_config
from ceusfusion.segment.link import cv_rows, overlap_with_test, read_link

BUNDLE_VERSION = 2  # 1: fusion/model.joblib (a pickle); refused
MANIFEST = "bundle.json"
SIDECAR = "bundle.json.sha256"
FUSION_MODEL = "fusion/model.skops"
FUSION_FORMAT = "skops"
CARD = "card.json"  # the model card (cohort, test metrics, training out-of-fold probabilities); absent in older bundles
RESEARCH_ONLY = ("A research model: not a medical device, not validated for clinical use; "
                 "a prediction must not guide any patient's care.")
CARD_METRICS = ("n", "n_pos", "auc", "auc_ci", "threshold", "sensitivity", "sensitivity_ci", "specificity",
                "specificity_ci", "ppv", "npv", "accuracy", "scoring")
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # one path component, never '..'
SHA256 = re.compile(r"[0-9a-f]{64}")



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


@dataclass(frozen=True)
class BundledModel:
    """One ``models.<modality>`` entry of bundle.json, typed: what predict, the batch and the page read of it."""

    modality: str
    name: str
    folds: list[int]  # the fold models that score a new patient (empty under refit)
    test_scoring: str  # refit | fold-mean
    threshold: float  # locked on the training set
    record: ModelRecord  # the model's config.json

    @classmethod
    def from_entry(cls, modality: str, m: dict) -> "BundledModel":
        """An entry of a manifest :func:`load_bundle` checked (bundles before test_scoring was recorded: fold-mean)."""
        return cls(modality=modality, name=m["name"], folds=list(m["folds"]), test_scoring=m.get("test_scoring", "fold-mean"),
                   threshold=float(m["threshold"]), record=ModelRecord.from_dict(m["config"], f"{MANIFEST} models.{modality}"))

    @property
    def ids(self) -> list:
        """The model ids that score a new patient, in the order of :attr:`files`."""
        return [REFIT] if self.test_scoring == "refit" else list(self.folds)

    @property
    def files(self) -> list[str]:
        """The weight files (bundle-relative) predict loads: the refit, or every fold."""
        dirs = [REFIT] if self.test_scoring == "refit" else [f"fold{k}" for k in self.folds]
        return [f"models/{self.name}/{d}/{MODEL_FILE}" for d in dirs]


def bundled_models(meta: dict) -> dict[str, BundledModel]:
    """{modality: its bundled model} of a verified manifest."""
    return {modality: BundledModel.from_entry(modality, m) for modality, m in meta["models"].items()}


def prepare_params(meta: dict) -> PrepareParams:
    """The preprocessing the bundle's models were trained on (bundle.json ``prepare``)."""
    return PrepareParams(**{k: (tuple(v) if k == "crop" and v is not None else v) for k, v in meta["prepare"].items()})


def _copy_models(run: RunLayout, tmp: Path, metrics: dict) -> dict:
    """The selected models' fold weights and configs into the bundle; their bundle.json entries."""
    # here: models.select draws figures (matplotlib), which predict, reading a bundle, never needs
    from ceusfusion.models.select import read_selection

    models = {}
    for modality, name in read_selection(run.root).items():
        if not MODEL_NAME.fullmatch(name):
            raise CeusError(f"{run.selection}: model name {name!r} is not a plain name")
        src = run.model(name)
        rec = read_config(run.root, name)
        scoring = rec.test_scoring
        folds = sorted(int(p.parent.name[4:]) for p in src.glob(f"fold*/{MODEL_FILE}"))
        # a new patient is scored like a test case: by the refitted model, or by every fold model
        for d in ([REFIT] if scoring == "refit" else [f"fold{k}" for k in folds]):
            if not (src / d / MODEL_FILE).is_file():
                raise CeusError(f"{src / d / MODEL_FILE} not found: {name} has not finished training")
            (tmp / "models" / name / d).mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / d / MODEL_FILE, tmp / "models" / name / d / MODEL_FILE)
        shutil.copy2(src / CONFIG_FILE, tmp / "models" / name / CONFIG_FILE)
        models[modality] = {"name": name, "folds": folds if scoring == "fold-mean" else [], "test_scoring": scoring,
                            "threshold": locked_threshold(metrics, name), "config": rec.raw}
    return models


def _feature_layers(run: RunLayout, models: dict) -> dict:
    """Per model, the layer its fused features came from (so predict extracts the same ones)."""
    # here: fusion.extract (torch.fx, torchvision's tracer) only at export; predict imports it when it extracts
    from ceusfusion.fusion.extract import default_layer

    layers = {}
    for m in models.values():
        fpath = run.features(m["name"])
        if fpath.is_file():
            layer = read_features(fpath)[1].get("layer")
            rec = ModelRecord.from_dict(m["config"])
            penultimate = layer in (None, "features") or layer == default_layer(build_from_config(rec))
            layers[m["name"]] = {"layer": layer, "penultimate": penultimate}
    return layers


def _copy_fusion(run: RunLayout, tmp: Path, models: dict, metrics: dict) -> dict | None:
    """The fitted DL_combined pipeline (as skops) and what it was fitted on, or None when the run has none."""
    fusion_json, joblib_file = run.fusion / "fusion.json", run.fusion / "model.joblib"
    if not (fusion_json.is_file() and joblib_file.is_file()):
        return None
    import joblib  # here: only export reads the run's pickle

    fj = json.loads(fusion_json.read_text())
    # The run's own output, written by `fuse` for this user: trusted here, the only unpickling.
    # The bundle gets skops, which predict reads without running code.
    write_fusion_model(joblib.load(joblib_file), tmp / FUSION_MODEL)
    name = fj.get("name", "DL_combined")
    feature_inputs = [i for i in fj.get("inputs", []) if i.get("kind") == "features"]
    scores = any(is_score_name(str(i.get("meta", {}).get("name", ""))) for i in feature_inputs)
    cols = fj.get("columns", {})
    return {"name": name, "inputs": "scores" if scores else "features", "threshold": locked_threshold(metrics, name),
            "model": FUSION_MODEL, "format": FUSION_FORMAT, "feature_layers": _feature_layers(run, models),
            "clinical": list(cols.get("numeric", [])) + list(cols.get("categorical", [])),
            "perfusion": any(i.get("kind") == "perfusion" for i in fj.get("inputs", [])),
            "radiomics": fusion_reads(fj)["radiomics"]}


def _check_target(out: Path, overwrite: bool) -> None:
    """``--overwrite`` replaces only a real folder that is a bundle; never through a symlink."""
    if out.is_symlink():
        raise CeusError(f"{out} is a symlink; refusing to write a bundle through it")
    if out.exists():
        if not overwrite:
            raise CeusError(f"{out} exists; pass --overwrite to replace it")
        if not out.is_dir() or (out / MANIFEST).is_symlink() or not (out / MANIFEST).is_file():
            raise CeusError(f"{out} exists and is not a bundle; refusing to replace it")
        only_bundle_files(out)


def only_bundle_files(out: Path) -> None:
    """``--overwrite`` deletes the old folder: only when every file in it is one its bundle.json lists (a user's
    notes.txt beside a bundle.json is not the tool's to delete)."""
    try:
        files = json.loads((out / MANIFEST).read_bytes()).get("files")
    except (ValueError, AttributeError):
        files = None
    if not isinstance(files, dict):
        raise CeusError(f"{out / MANIFEST}: not a ceusfusion bundle manifest; refusing to replace {out}")
    try:
        _check_listed_only(out, files)
    except CeusError as e:
        raise CeusError(f"refusing to replace {out}: {e}") from None


def _new_temp_folder(out: Path) -> Path:
    """A fresh, uniquely named folder beside ``out`` (mkdtemp: never an existing path or a planted symlink)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; a bundle folder gets the usual permissions
    return tmp


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished bundle onto ``out``; an old bundle is first moved into a fresh folder, then removed."""
    if not out.exists():
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    out.rename(old / out.name)
    tmp.rename(out)
    shutil.rmtree(old)


def _cohort_summary(layout: RunLayout) -> dict | None:
    """Per split: patients, positives, prevalence and patients per centre (no row of the cohort itself)."""
    if not layout.cohort.is_file():
        return None
    df = read_manifest(layout.cohort)
    if "label" not in df.columns:
        return None
    splits = df["split"].fillna("train") if "split" in df.columns else pd.Series("train", index=df.index)
    out = {}
    for split in sorted(set(splits)):
        part = df[splits == split]
        y = pd.to_numeric(part["label"], errors="coerce")
        n, n_pos = int(y.notna().sum()), int((y == 1).sum())
        centres = part["center"].fillna("not recorded").value_counts().sort_index() if "center" in part.columns else None
        out[str(split)] = {"n": n, "n_pos": n_pos, "prevalence": n_pos / n if n else None,
                           "centres": None if centres is None else {str(k): int(v) for k, v in centres.items()}}
    return out


def _model_card(layout: RunLayout, name: str, modality: str, metrics: dict) -> dict:
    """One model's test-set metrics at the locked threshold, its cross-validated AUC, and its training
    out-of-fold probabilities with their labels (sorted: no row order that could point back to a patient)."""
    sets = metrics.get("sets", {})
    test = sets.get("test", {}).get("models", {}).get(name)
    train = sets.get("train", {}).get("models", {}).get(name)
    oof = None
    path = layout.predictions(name)
    if path.is_file():
        df = load_predictions([path])
        df = df[df["set"] == "train"].sort_values(["y", "prob"])
        oof = {"y": df["y"].astype(int).tolist(), "prob": df["prob"].astype(float).round(6).tolist(),
               "scoring": sorted(set(df["scoring"]))}
    return {"modality": modality,
            "test": {k: test.get(k) for k in CARD_METRICS} if test else None,
            "train_cv": {k: train.get(k) for k in ("n", "n_pos", "auc", "auc_ci")} if train else None,
            "train_oof": oof}


def _write_card(layout: RunLayout, tmp: Path, models: dict, combined: dict | None, metrics: dict,
                radiomics: dict | None = None) -> None:
    """card.json: what the models were trained on and how they did, for the people who use them."""
    named = {m["name"]: modality for modality, m in models.items()}
    if combined:
        named[combined["name"]] = "combined"
    named.update({m["name"]: "radiomics" for m in (radiomics or {}).get("models", [])})
    # where the ROIs came from (manual / predicted mask, box, whole frame), per split
    rois = roi_source_counts(read_index(layout.root)) if layout.prepared_index.is_file() else {}
    write_json(tmp / CARD, finite({"card_version": 1, "intended_use": RESEARCH_ONLY, "cohort": _cohort_summary(layout),
                                   "roi_sources": rois, "segmenters": segmenter_card(layout),
                                   "outcome": metrics.get("outcome"),
                                   "threshold_rule": metrics.get("threshold_rule"), "ci_method": metrics.get("ci_method"),
                                   "radiomics": radiomics_card(layout, tmp, radiomics),
                                   "models": {n: _model_card(layout, n, mod, metrics) for n, mod in named.items()}}))


def segmenter_card(layout: RunLayout) -> list[dict]:
    """The segmenters behind the run's predicted masks (segment.link): the model folder's name (no path of the
    disk), what trained it, its cross-validated Dice, and the test-split cases whose mask trained it (computed)."""
    link = read_link(layout.root)
    if link is None:
        return []
    cohort = read_manifest(layout.cohort)
    out = []
    for f in link.segmenters:
        o = overlap_with_test(f, cohort) if not f.problem else None
        out.append({"model": Path(f.model).name if f.model else None, "record_sha256": f.record_sha256,
                    "encoder": f.encoder, "pictures": len(f.pictures), "trained_cases": len(f.trained_on),
                    "trained_patients": f.n_patients(), "cv": cv_rows(f), "problem": f.problem_in_words(),
                    "test_cases_in_training": None if o is None else o.cases,
                    "test_patients_in_training": None if o is None else [list(p) for p in o.patients]})
    return out


def finite(obj):
    """``obj`` with every NaN or infinite float as None: strict JSON, which a browser's JSON.parse reads."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _fill(layout: RunLayout, tmp: Path, metrics: dict) -> None:
    """Models, fusion model, model card, bundle.json (every other file's sha256) and its sidecar, into ``tmp``."""
    models = _copy_models(layout, tmp, metrics)
    combined = _copy_fusion(layout, tmp, models, metrics)
    radiomics = export_radiomics(layout, tmp, [m["name"] for m in models.values()], lambda n: locked_threshold(metrics, n),
                                 lambda: _feature_layers(layout, models), bool(combined and combined["radiomics"]))
    _write_card(layout, tmp, models, combined, metrics, radiomics)
    params = json.loads(layout.keyframes.read_text())["params"]
    files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    write_json(tmp / MANIFEST, {"bundle_version": BUNDLE_VERSION, "ceusfusion": __version__, "torch": torch.__version__,
                                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "prepare": params, "models": models, "combined": combined, "radiomics": radiomics,
                                "card": CARD, "files": files,
                                "thresholds": "Youden-optimal on the training set's out-of-fold predictions"})
    write_text(tmp / SIDECAR, f"{sha256_file(tmp / MANIFEST)}  {MANIFEST}\n")


def export(run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """`ceusfusion export RUN --out BUNDLE`; :func:`bundle_id` of the result is what users pin."""
    layout, out = RunLayout(run), Path(out)
    for need in (layout.selection, layout.metrics, layout.keyframes):
        if not need.is_file():
            raise CeusError(f"{need} not found: finish the study (select, evaluate) before exporting")
    check_not_input(out, [*layout.stage_files, *layout.stage_folders])  # RUN/bundle is fine, RUN or RUN/models not
    _check_target(out, overwrite)
    metrics = json.loads(layout.metrics.read_text())
    tmp = _new_temp_folder(out)
    try:
        _fill(layout, tmp, metrics)
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # our own folder (gone once renamed); rmtree never follows a symlink
    return out


# --------------------------------------------------------------------------- verification


def bundle_id(bundle: str | Path) -> str:
    """The bundle id: sha256 of bundle.json's bytes (what `sha256sum bundle.json` prints)."""
    return sha256_file(Path(bundle) / MANIFEST)


def _read_manifest(bundle: Path) -> tuple[Path, bytes]:
    """bundle.json's bytes, read once: the same bytes are hashed and parsed."""
    path = bundle / MANIFEST
    if path.is_symlink():
        raise CeusError(f"{path}: a symlink; refusing the bundle")
    if not path.is_file():
        raise CeusError(f"{bundle}: not a ceusfusion bundle (no {MANIFEST})")
    return path, path.read_bytes()


def _check_pin(path: Path, digest: str, expect_sha256: str | None) -> None:
    """The manifest against the id the user pinned, else against the sidecar export wrote."""
    if expect_sha256 is not None:
        want = str(expect_sha256).strip().lower()
        if not SHA256.fullmatch(want):
            raise CeusError(f"--expect-sha256 {expect_sha256!r}: not a sha256 (64 hexadecimal digits)")
        if digest != want:
            raise CeusError(f"{path}: sha256 {digest} is not the pinned {want}; refusing the bundle")
        return
    side = path.with_name(SIDECAR)
    if side.is_symlink() or not side.is_file():
        raise CeusError(f"{side}: missing; refusing the bundle (pass --expect-sha256 with the id export printed)")
    recorded = side.read_text(errors="replace").split()[:1]
    if recorded != [digest]:
        raise CeusError(f"{path}: changed since export (its sha256 {digest} is not the one in {SIDECAR}); "
                        "refusing the bundle")


class _Strict(BaseModel):
    """A bundle.json object: each listed key present with its JSON type (no coercion: "0.5" is no threshold,
    true is no number), other keys kept (a newer exporter may add some)."""

    model_config = ConfigDict(strict=True, extra="allow")


def _not_nan(v: float) -> float:
    if math.isnan(v):
        raise ValueError("NaN")
    return v


Threshold = Annotated[float, AfterValidator(_not_nan)]  # +-inf allowed: a degenerate Youden optimum


class FeatureLayer(_Strict):
    layer: str | None
    penultimate: bool


class ModelEntry(_Strict):
    """``models.<modality>``; read through :class:`BundledModel`."""

    name: str
    folds: list[int]
    test_scoring: str
    threshold: Threshold
    config: dict


class CombinedEntry(_Strict):
    """``combined``: the fused model, its inputs and the layers its deep features came from."""

    name: str
    threshold: Threshold
    inputs: str
    model: str
    format: str
    feature_layers: dict[str, FeatureLayer]
    clinical: list
    perfusion: bool


class RadiomicsModelEntry(_Strict):
    """``radiomics.models[i]``: a comparison model (Rad, DLR, DLR + clinical) and what it reads."""

    name: str
    model: str
    format: str
    threshold: Threshold
    deep: list[str]
    inputs: str
    clinical: list[str]
    radiomics: bool


class RadiomicsEntry(_Strict):
    """``radiomics``: the settings file (``deploy.radiomics_bundle``), the deep features' layers, the models."""

    settings: str
    feature_layers: dict[str, FeatureLayer]
    models: list[RadiomicsModelEntry]


class Manifest(_Strict):
    """bundle.json (version :data:`BUNDLE_VERSION`), the typed shape :func:`load_bundle` checks before trusting it."""

    bundle_version: int
    prepare: dict
    models: dict[str, ModelEntry]
    files: dict[str, str]
    combined: CombinedEntry | None
    card: str | None = None  # bundles exported before model cards have none
    radiomics: RadiomicsEntry | None = None  # bundles without radiomics (or exported before it) have none


def _manifest_error(path: Path, exc: ValidationError) -> CeusError:
    """The first problem of a malformed manifest, one line naming the key (``models.image.threshold``)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if not str(p).endswith("]")) or "the top level"
    if err["type"] == "missing":
        return CeusError(f"{path}: malformed {MANIFEST}: {where} is missing")
    if err["type"] in ("model_type", "dict_type") and where == "the top level":
        return CeusError(f"{path}: malformed {MANIFEST}: the top level is not an object")
    return CeusError(f"{path}: malformed {MANIFEST}: {where} has the wrong type ({type(err['input']).__name__})")


def _parse_manifest(path: Path, raw: bytes) -> dict:
    """bundle.json as a dict of the expected shape, or one CeusError naming the file."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CeusError(f"{path}: not valid JSON ({first_line(exc)}); refusing the bundle") from None
    version = meta.get("bundle_version") if isinstance(meta, dict) else None
    if isinstance(version, int) and version != BUNDLE_VERSION:
        old = " (a pickled fusion model, never loaded now): export the run again" if version == 1 else ""
        raise CeusError(f"{path}: bundle_version {version} is not {BUNDLE_VERSION}{old}")
    try:
        Manifest.model_validate(meta)
    except ValidationError as exc:
        raise _manifest_error(path, exc) from None
    try:
        prepare_params(meta)
    except (CeusError, TypeError, ValueError) as exc:
        raise CeusError(f"{path}: malformed {MANIFEST}: prepare ({first_line(exc)})") from None
    return meta


def _check_files(bundle: Path, path: Path, files: dict) -> None:
    """Every listed file inside the bundle and unchanged."""
    for rel, digest in files.items():
        p = inside_bundle(bundle, rel, path)
        if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
            raise CeusError(f"{path}: malformed {MANIFEST}: files[{rel!r}] is not a sha256")
        if not p.is_file() or sha256_file(p) != digest:
            raise CeusError(f"{p}: missing or changed since export (sha256 mismatch); refusing to load it")


def _check_listed_only(bundle: Path, files: dict) -> None:
    """No file the manifest does not list (a dropped-in model.joblib, say), no symlink anywhere."""
    allowed = set(files) | {MANIFEST, SIDECAR}
    for dirpath, dirnames, filenames in os.walk(bundle):
        for entry in dirnames + filenames:
            p = Path(dirpath) / entry
            if p.is_symlink():
                raise CeusError(f"{p}: a symlink in the bundle; refusing the bundle")
            if entry in filenames and p.relative_to(bundle).as_posix() not in allowed:
                raise CeusError(f"{p}: not listed in {MANIFEST}; a bundle holds only the files it lists")


def _check_models(path: Path, meta: dict) -> None:
    """Model names are plain names; every file predict will load is a listed (so verified) file."""
    needed = []
    for modality, m in meta["models"].items():
        where = f"models.{modality}"
        if not MODEL_NAME.fullmatch(m["name"]):
            raise CeusError(f"{path}: {where}.name {m['name']!r} is not a plain model name; refusing the bundle")
        if m["test_scoring"] not in ("refit", "fold-mean"):
            raise CeusError(f"{path}: {where}.test_scoring {m['test_scoring']!r} is not refit or fold-mean")
        if m["test_scoring"] == "fold-mean" and (not m["folds"] or m["folds"] != list(range(len(m["folds"])))):
            raise CeusError(f"{path}: {where}.folds {m['folds']!r} is not 0, 1, ..., k-1")
        needed += BundledModel.from_entry(modality, m).files
    comb = meta["combined"]
    if comb is not None:
        if comb["format"] != FUSION_FORMAT:
            raise CeusError(f"{path}: combined.format {comb['format']!r}: only {FUSION_FORMAT} is loaded (never a pickle)")
        needed.append(comb["model"])
    if "card" in meta:
        needed.append(meta["card"])
    needed += radiomics_files(path, meta.get("radiomics"))
    for rel in needed:
        if rel not in meta["files"]:
            raise CeusError(f"{path}: {rel} is not listed in files; refusing the bundle")


def load_bundle(bundle: str | Path, expect_sha256: str | None = None) -> dict:
    """bundle.json (plus ``bundle_sha256``, its id), after checking the manifest against the pinned id
    (or its sidecar), its shape, and every file of the bundle against it."""
    bundle = Path(bundle)
    path, raw = _read_manifest(bundle)
    digest = hashlib.sha256(raw).hexdigest()
    _check_pin(path, digest, expect_sha256)
    meta = _parse_manifest(path, raw)
    _check_files(bundle, path, meta["files"])
    _check_listed_only(bundle, meta["files"])
    _check_models(path, meta)
    return dict(meta, bundle_sha256=digest, pinned=expect_sha256 is not None)


def bundle_file(bundle: Path, meta: dict, rel: str) -> Path:
    """The path of a file :func:`load_bundle` verified; anything else (unlisted, outside) is refused."""
    if rel not in meta.get("files", {}):
        raise CeusError(f"{Path(bundle) / MANIFEST}: {rel} is not listed in files; refusing to load it")
    return inside_bundle(Path(bundle), rel, Path(bundle) / MANIFEST)


def load_card(bundle: str | Path, meta: dict) -> dict | None:
    """The model card of a verified bundle, or None for a bundle exported before cards (or without one);
    its bytes hashed again as they are read, like the fusion model."""
    rel = meta.get("card")
    if rel is None:
        return None
    path, data = verified_bytes(Path(bundle), meta, rel)
    try:
        card = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CeusError(f"{path}: not valid JSON ({first_line(exc)})") from None
    if not isinstance(card, dict):
        raise CeusError(f"{path}: a model card is a JSON object")
    return card


# --------------------------------------------------------------------------- the fusion model, without pickle


def load_fusion_model(bundle: Path, meta: dict):
    """The fitted fusion pipeline of a verified bundle: the listed skops file, its bytes hashed once more
    as they are read (no window between check and use), never unpickled."""
    return load_skops_model(bundle, meta, meta["combined"]["model"])


def load_skops_model(bundle: Path, meta: dict, rel: str):
    """A listed skops model of a verified bundle (the fusion model, a radiomics comparison model): audited against
    the allowlist and built without pickle from the bytes that were hashed."""
    return read_fusion_model(*verified_bytes(Path(bundle), meta, rel))


def verified_bytes(bundle: Path, meta: dict, rel: str) -> tuple[Path, bytes]:
    """(path, bytes) of a listed file, its bytes hashed again as they are read (no window between check and use)."""
    path = bundle_file(bundle, meta, rel)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["files"][rel]:
        raise CeusError(f"{path}: changed since export (sha256 mismatch); refusing to load it")
    return path, data
