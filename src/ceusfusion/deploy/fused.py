"""A bundle's fused models for one patient: DL_combined and the radiomics comparison models (Rad, DLR,
DLR + clinical), each given the very columns its pipeline was fitted on.

A fused pipeline names its columns (``feature_names_in_``): a deep model's features or score
(``<model>__f0000``...), radiomics (``radiomics__<feature>``), clinical covariates (``clin__<name>``),
perfusion (``perf__<name>``). The patient's row is built from what predict has: the bundled deep models'
features (as the fused model reads them today), the patient's radiomics computed from the patient's ROI
with the bundle's settings (``radiomics.roi`` and ``radiomics.extract``, the code path of the
``radiomics`` stage: a training case gets the values the stage wrote), and the covariates the user gave.
A column the patient lacks makes that model unavailable with one line naming what is missing (a missing
covariate, shape features without a drawn mask: never zeros, never an imputed value); the other models
are still scored. MIRP and ITK are imported only for a bundle with radiomics.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.deploy.export import first_line, verified_bytes
from ceusfusion.fusion.features import SCORE_COLUMN, joined_column, score_logit, score_name

CLINICAL, RADIOMICS, PERFUSION = "clin__", "radiomics__", "perf__"  # fusion.inputs' and radiomics' column prefixes


@dataclass(frozen=True)
class FusedModel:
    """One fused model of a verified manifest: DL_combined (``combined``) or a ``radiomics.models`` entry."""

    name: str
    model: str  # the bundle-relative skops file
    threshold: float
    deep: tuple[str, ...]  # the bundled deep models it reads
    inputs: str  # scores | features
    radiomics: bool
    combined: bool  # DL_combined: the command line's fusion worker may hold it

    @classmethod
    def all_of(cls, meta: dict) -> list["FusedModel"]:
        """DL_combined (reading every bundled deep model), then the comparison models, as bundle.json lists them."""
        out = []
        comb = meta.get("combined")
        if comb:
            out.append(cls(comb["name"], comb["model"], float(comb["threshold"]),
                           tuple(m["name"] for m in meta["models"].values()), comb["inputs"],
                           bool(comb.get("radiomics", False)), True))
        for m in (meta.get("radiomics") or {}).get("models", []):
            out.append(cls(m["name"], m["model"], float(m["threshold"]), tuple(m["deep"]), m["inputs"], m["radiomics"], False))
        return out


def feature_layer(meta: dict, name: str) -> dict | None:
    """The layer deep model ``name``'s fused features come from (export recorded it per model), or None when no
    fused model reads its features."""
    if not any(f.inputs == "features" and name in f.deep for f in FusedModel.all_of(meta)):
        return None
    for block in (meta.get("combined"), meta.get("radiomics")):
        layers = (block or {}).get("feature_layers") or {}
        if name in layers:
            return layers[name]
    return {"layer": None, "penultimate": True}


# --------------------------------------------------------------------------- the patient's radiomics


@dataclass(frozen=True)
class RadiomicsSettings:
    """radiomics/settings.json of a verified bundle: the stage's settings and the feature columns the models read."""

    config: object  # radiomics.settings.RadiomicsConfig
    features: tuple[str, ...]

    @property
    def modalities(self) -> list[str]:
        """The pictures the features come from: the still (``img_``), the CEUS keyframes (``kf_``)."""
        return [m for m, p in (("image", "img_"), ("video", "kf_")) if any(f.startswith(p) for f in self.features)]


def load_radiomics_settings(bundle: Path, meta: dict) -> RadiomicsSettings | None:
    """The bundle's radiomics settings (hashed as they are read), or None for a bundle without radiomics."""
    block = meta.get("radiomics")
    if not block:
        return None
    # here: pydantic's RadiomicsConfig only for a bundle with radiomics (its package imports nothing heavy)
    from ceusfusion.radiomics.settings import RadiomicsConfig

    path, data = verified_bytes(bundle, meta, block["settings"])
    try:
        rec = json.loads(data.decode("utf-8"))
        return RadiomicsSettings(RadiomicsConfig(**rec["settings"]), tuple(str(f) for f in rec["features"]))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, CeusError) as exc:
        raise CeusError(f"{path}: not radiomics settings ({first_line(exc)}); refusing the bundle") from None


def patient_radiomics(rs: RadiomicsSettings, files: dict, entries: dict, boxes=()) -> dict[str, float]:
    """The patient's radiomics columns (``radiomics__<feature>``) from the patient's files and what prepare chose
    (``entries``: the keyframes.json entries of the still and the video), as the stage computes a case's; a mask
    drawn as a box (``boxes``: 'image_mask', 'video_mask') is a box, so it gives no shape features. CeusError
    naming the problem when no feature can be computed (an ROI of one pixel, say)."""
    # here: MIRP, ITK and scikit-image are seconds of import, only for a bundle with radiomics
    from ceusfusion.radiomics.extract import case_features
    from ceusfusion.radiomics.roi import case_rois  # here: as above

    row = {c: (str(files[c]) if files.get(c) and c not in boxes else None)
           for c in ("image", "image_mask", "video", "video_mask")}
    row = {c: v for c, v in row.items() if c.split("_")[0] in rs.modalities}
    if not any(row.get(m) for m in rs.modalities):
        raise CeusError(f"no {' or '.join(rs.modalities)} given to compute radiomics from")
    try:
        rois = case_rois(row, entries, rs.config.keyframes, rs.config.spacing_mm)
        values, _ = case_features(rois, rs.config)
    except CeusError:
        raise
    except Exception as exc:  # a hostile ROI the library chokes on: one line, the patient's other models go on
        raise CeusError(f"unexpected {type(exc).__name__}: {first_line(exc)[:200]}") from None
    return {joined_column(RADIOMICS.removesuffix("__"), k): float(v) for k, v in values.items()}


@dataclass
class PatientExtras:
    """What the fused models read besides the deep models: the radiomics columns (or why there are none) and the
    clinical covariates as the user gave them."""

    radiomics: dict[str, float] | None = None
    radiomics_problem: str | None = None
    clinical: dict[str, object] = field(default_factory=dict)


def patient_extras(rs: RadiomicsSettings | None, files: dict, entries: dict, clinical: dict | None = None,
                   boxes=()) -> PatientExtras:
    """The patient's radiomics (when the bundle has settings) and covariates; a radiomics problem is kept, not
    raised, so the models that do not read radiomics are still scored."""
    extras = PatientExtras(clinical=dict(clinical or {}))
    if rs is not None:
        try:
            extras.radiomics = patient_radiomics(rs, files, entries, boxes)
        except CeusError as exc:
            extras.radiomics_problem = first_line(exc)
    return extras


# --------------------------------------------------------------------------- the row a fused model reads


class Unavailable(Exception):
    """A fused model cannot score this patient: ``reason`` in one line; ``failed``: the patient's inputs are at
    fault (a radiomics problem, a missing covariate or shape feature), not merely a picture not given."""

    def __init__(self, reason: str, failed: bool):
        super().__init__(reason)
        self.reason, self.failed = reason, failed


def deep_columns(fm: FusedModel, result: dict, feats: dict) -> dict[str, float]:
    """The deep columns of the bundled models this fused model reads: the logit of each probability (late fusion),
    else the features file's float32 values as float64."""
    out: dict[str, float] = {}
    for name in fm.deep:
        if fm.inputs == "scores":
            if result["models"].get(name, {}).get("available"):
                out[joined_column(score_name(name), SCORE_COLUMN)] = float(score_logit(result["models"][name]["prob"]))
        elif name in feats:
            vec = np.asarray(feats[name]).astype(np.float32).astype(np.float64)
            out.update(zip((joined_column(name, f"f{i:04d}") for i in range(len(vec))), vec.tolist()))
    return out


def _categorical(pipe) -> set[str]:
    """The columns the pipeline one-hot encodes (its ``cat`` part; fusion.pipeline.make_front)."""
    front = pipe.steps[0][1] if hasattr(pipe, "steps") else None
    return {c for name, _, cols in getattr(front, "transformers_", []) if name == "cat" for c in cols}


def _covariate(name: str, value, categorical: bool):
    """One covariate as the fusion read it from the cohort: a number, or a category's text; None when not given."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        return None
    if categorical:
        return str(value).strip()
    try:
        v = float(str(value).strip())
    except ValueError:
        raise Unavailable(f"clinical covariate {name}: {str(value)[:40]!r} is not a number", True) from None
    if not math.isfinite(v):
        raise Unavailable(f"clinical covariate {name}: {value!r} is not a finite number", True)
    return v


def _missing(cols: list[str], have: dict, extras: PatientExtras, result: dict) -> None:
    """Unavailable naming what the patient lacks, the first kind first: a deep model, radiomics, covariates."""
    lacking = [c for c in cols if c not in have]
    if not lacking:
        return
    deep = sorted({c.split("__")[0].removesuffix("_score") for c in lacking if not c.startswith((CLINICAL, RADIOMICS, PERFUSION))})
    if deep:
        why = [f"{d} ({result['models'].get(d, {}).get('reason', 'not scored')})" for d in deep]
        raise Unavailable(f"needs {', '.join(why)}", False)
    if any(c.startswith(PERFUSION) for c in lacking):
        raise Unavailable("the fused model reads perfusion parameters, which predict does not compute", False)
    rad = [c.removeprefix(RADIOMICS) for c in lacking if c.startswith(RADIOMICS)]
    if rad and extras.radiomics is None:
        raise Unavailable(f"radiomics: {extras.radiomics_problem or 'not computed'}", True)
    if rad:
        raise Unavailable(f"needs {' and '.join(_radiomics_lacking(rad))}", True)
    clin = [c.removeprefix(CLINICAL) for c in lacking]
    raise Unavailable(f"needs the clinical covariate(s) {', '.join(clin)} (predict --clinical NAME=VALUE, or the "
                      "manifest's column)", True)


def _radiomics_lacking(rad: list[str]) -> list[str]:
    """What the lacking radiomics columns need, in words: a picture not given, or a drawn mask for shape."""
    out = []
    for prefix, picture in (("img_", "the still"), ("kf_", "the CEUS video")):
        cols = [c for c in rad if c.startswith(prefix)]
        if any("shape2d_" not in c for c in cols):
            out.append(f"the radiomics of {picture} (give {picture})")
        elif cols:
            out.append(f"shape features of {picture}, which need a drawn nodule mask (a box or the whole frame "
                       "has no outline)")
    return out or [f"radiomics feature(s) {', '.join(rad[:3])}"]


def fused_row(fm: FusedModel, pipe, result: dict, feats: dict, extras: PatientExtras) -> pd.DataFrame:
    """The one-row table ``pipe`` was fitted on, or Unavailable naming what is missing."""
    have: dict = deep_columns(fm, result, feats)
    if fm.radiomics and extras.radiomics:
        have.update(extras.radiomics)
    cols = getattr(pipe, "feature_names_in_", None)
    cols = list(have) if cols is None else [str(c) for c in cols]  # the fusion worker reorders the row itself
    cat = _categorical(pipe)
    for c in cols:
        if c.startswith(CLINICAL):
            v = _covariate(c.removeprefix(CLINICAL), extras.clinical.get(c.removeprefix(CLINICAL)), c in cat)
            if v is not None:
                have[c] = v
    _missing(cols, have, extras, result)
    num = [c for c in cols if c not in cat]
    X = pd.DataFrame(np.array([[have[c] for c in num]], dtype=np.float64), columns=num)  # one block: fast
    for c in cols:
        if c in cat:
            X[c] = np.array([have[c]], dtype=object)
    return X[cols]


def score_fused(fm: FusedModel, pipe, result: dict, feats: dict, extras: PatientExtras) -> dict:
    """The fused model's answer: its probability and class at the locked threshold, or why it has none."""
    try:
        X = fused_row(fm, pipe, result, feats, extras)
    except Unavailable as u:
        return {"available": False, "reason": u.reason, "failed": u.failed}
    prob = float(pipe.predict_proba(X)[0, 1])
    out = {"available": True, "prob": prob, "threshold": fm.threshold, "class": int(prob >= fm.threshold)}
    if fm.radiomics:
        out["radiomics"] = True
    return out
