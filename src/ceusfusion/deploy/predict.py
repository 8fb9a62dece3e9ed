"""``ceusfusion predict``: one new patient through a bundle, exactly as the run scored its test cases.

The patient's files are prepared with the bundle's recorded parameters, each model scores it the
ensemble way (``models.ensemble.over_folds``: a case no fold model saw gets the refitted model's
value, or the mean of the fold models), classes come from the thresholds locked on the training set, and
each fused model (DL_combined, the radiomics comparison models) gets the same inputs it was fitted on
(``deploy.fused``). Nothing is loaded before the bundle is verified (``deploy.export.load_bundle``: the manifest
against the pinned id or its sidecar, every file against the manifest), and every file read is one the
manifest lists (``bundle_file``), so no path leaves the bundle.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import write_json
from ceusfusion.core.outcome import Outcome
from ceusfusion.core.runtime import threads as torch_threads
from ceusfusion.deploy.export import (
    BundledModel,
    bundle_file,
    bundled_models,
    finite,
    load_bundle,
    load_card,
    load_fusion_model,
    load_skops_model,
    prepare_params,
)
from ceusfusion.deploy.fused import (
    FusedModel,
    PatientExtras,
    RadiomicsSettings,
    feature_layer,
    load_radiomics_settings,
    patient_extras,
    score_fused,
)
from ceusfusion.ingest.perfusion import fitted_curve, perfusion_parameters
from ceusfusion.ingest.prepare import prepare_image, prepare_video
from ceusfusion.models.data import case_tensor, to_chw
from ceusfusion.models.ensemble import UNSEEN, over_folds
from ceusfusion.models.registry import ModelRecord, load_model_file, transform_for


def predict(bundle: str | Path, image=None, image_mask=None, video=None, video_mask=None, out: str | Path | None = None,
            cams: bool = True, threads: int = 1, expect_sha256: str | None = None, fusion_worker=None,
            clinical: dict | None = None) -> dict:
    """Probabilities of every bundled model for one patient, classes at the locked thresholds, Grad-CAM overlays,
    and ``inputs``: the boxes, keyframes and time–intensity curve the models were given.

    ``expect_sha256``: the bundle id export printed; a bundle whose bundle.json differs is refused.
    ``fusion_worker``: a :class:`deploy.fusion_worker.FusionWorker` already loading the fused model (the command
    line's one patient); used only for the bytes the verified manifest lists.
    ``clinical``: {covariate: value} for a fused model that reads covariates (DLR + clinical, say).
    One patient is a batch of one: a single thread avoids the thread-barrier stalls
    that make small CPU inferences many times slower when the cores are shared.
    """
    with torch_threads(threads):
        t0 = time.perf_counter()
        lb = LoadedBundle(Path(bundle), expect_sha256=expect_sha256, fusion_worker=fusion_worker)
        return predict_loaded(lb, image, image_mask, video, video_mask, out, cams, t0, clinical=clinical)


def prepare_patient(meta: dict, image=None, image_mask=None, video=None, video_mask=None,
                    record: dict | None = None, entries: dict | None = None) -> dict[str, np.ndarray]:
    """The patient's ROI arrays, prepared with the parameters the bundle's models were trained on.

    ``record``, when given, receives what was chosen (boxes, keyframes, the time–intensity curve and
    its perfusion parameters), so that a reader of the prediction can see what the models saw.
    ``entries``, when given, receives prepare's keyframes.json entries (what the radiomics of the patient read).
    """
    entries = {} if entries is None else entries
    params = prepare_params(meta)
    arrays: dict[str, np.ndarray] = {}
    want_record = record is not None
    record = {} if record is None else record
    if image is not None:
        arrays["image"], entry = prepare_image(Path(image), Path(image_mask) if image_mask else None, params)
        entries["image"] = entry
        record["image"] = {"shape": entry["shape"], "bbox": entry["bbox"], "box": entry["box"],
                           "roi": roi_of(meta, bool(image_mask))}
    if video is not None:
        va, entry, sel = prepare_video(Path(video), Path(video_mask) if video_mask else None, params)
        arrays["video"], entries["video"] = va["video"], entry
        if want_record:  # the TIC's gamma-variate fit costs as much as the keyframes: only for a reader
            record["video"] = dict(video_record(entry, sel), roi=roi_of(meta, bool(video_mask)))
    return arrays


def roi_of(meta: dict, masked: bool) -> str:
    """What a model sees of a picture: ``mask`` (the nodule's box), ``fixed box X,Y,W,H`` (the bundle's prepare
    crop, for a case without a mask) or ``whole frame`` (no mask and no crop: the whole picture, resized)."""
    if masked:
        return "mask"
    crop = prepare_params(meta).crop
    return f"fixed box {','.join(str(int(v)) for v in crop)}" if crop else "whole frame"


def video_record(entry: dict, sel) -> dict:
    """The keyframes chosen, the crop box, and the TIC with its perfusion parameters (None without a mask)."""
    rec = {k: entry[k] for k in ("times", "frame_index", "bbox", "box", "frame_shape", "duration", "mask")}
    rec["tic"] = rec["perfusion"] = None
    if sel.tic is not None:
        perf = perfusion_parameters(sel.tic)
        fitted = fitted_curve(np.asarray(sel.tic.times, float), perf)
        rec["perfusion"] = finite({k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in perf.items()})
        rec["tic"] = finite({"times": np.round(sel.tic.times, 4).tolist(), "lesion": np.round(sel.tic.lesion, 3).tolist(),
                             "ring": np.round(sel.tic.ring, 3).tolist(),
                             "fitted": None if fitted is None else np.round(fitted, 3).tolist()})
    return rec


def model_input(arr: np.ndarray, modality: str, rec: ModelRecord) -> torch.Tensor:
    """A prepared array → (1, C, S, S) uint8 in the channel layout the model was trained with."""
    return case_tensor(to_chw(arr, modality, "patient"), rec.frame_channels, rec.image_size)[None]


class LoadedBundle:
    """A verified bundle whose models are loaded once, on first use: what scores one patient, or a cohort
    case after case (``deploy.batch``) with the very same code, so both give the same numbers."""

    def __init__(self, bundle: str | Path, expect_sha256: str | None = None, fusion_worker=None):
        self.path = Path(bundle)
        self.meta = load_bundle(self.path, expect_sha256=expect_sha256)
        self._models: dict[str, dict] = {}
        self._fusion = None
        self._worker = fusion_worker
        self.bundled: dict[str, BundledModel] = bundled_models(self.meta)
        self._outcome: Outcome | None = None
        self.fused: list[FusedModel] = FusedModel.all_of(self.meta)
        self._pipes: dict[str, object] = {}
        self._radiomics: tuple[RadiomicsSettings | None] | None = None

    @property
    def outcome(self) -> Outcome:
        """The outcome's words the bundle recorded (its model card, else bundle.json); neutral words for a bundle
        that recorded none (exported before outcomes were, or from a study that named none)."""
        if self._outcome is None:
            card = load_card(self.path, self.meta) or {}
            self._outcome = Outcome.from_record(card.get("outcome") or self.meta.get("outcome"))
        return self._outcome

    def models(self, modality: str) -> dict:
        """{fold id or REFIT: model in eval mode} of the bundled model of ``modality``, loaded the first time."""
        if modality not in self._models:
            m = self.bundled[modality]
            self._models[modality] = {k: load_model_file(bundle_file(self.path, self.meta, rel), m.record)
                                      for k, rel in zip(m.ids, m.files)}
        return self._models[modality]

    @property
    def radiomics(self) -> RadiomicsSettings | None:
        """The radiomics settings and feature columns the bundle's models read (None without radiomics)."""
        if self._radiomics is None:
            self._radiomics = (load_radiomics_settings(self.path, self.meta),)
        return self._radiomics[0]

    def pipeline(self, fm: FusedModel):
        """A fused model's fitted pipeline (skops, verified as it is read), loaded the first time."""
        if fm.combined:
            return self.fusion()
        if fm.name not in self._pipes:
            self._pipes[fm.name] = load_skops_model(self.path, self.meta, fm.model)
        return self._pipes[fm.name]

    def fusion(self):
        """The fitted fusion pipeline (skops, verified as it is read), loaded the first time; or the worker process
        that loaded it, once the bytes it loaded are shown to be the ones this verified manifest lists (only for
        a fused model that reads nothing but the deep models: the worker takes a row of numbers)."""
        comb = self.meta["combined"]
        if self._worker is not None and (comb.get("clinical") or comb.get("perfusion") or comb.get("radiomics")):
            self._worker = None
        if self._fusion is None and self._worker is not None:
            self._worker.ready(self.meta["files"][self.meta["combined"]["model"]])
            self._fusion = self._worker
        if self._fusion is None:
            self._fusion = load_fusion_model(self.path, self.meta)
        return self._fusion

    def load_all(self) -> "LoadedBundle":
        """Every model, the fusion model and the card loaded now: for a server, a bad file (one that is not
        safetensors, a config no architecture fits, a fusion model naming a type off the allowlist) refuses
        the start in one line instead of failing a patient's request."""
        for modality, m in self.bundled.items():
            try:
                self.models(modality)
            except CeusError:
                raise
            except Exception as exc:  # a config or weights no model can be built from: many kinds of error
                first = (str(exc).splitlines() or [""])[0]
                raise CeusError(f"{self.path / 'bundle.json'}: models.{modality} ({m.name}) cannot be loaded "
                                f"({type(exc).__name__}: {first}); refusing the bundle") from None
        for fm in self.fused:
            self.pipeline(fm)
        _ = self.radiomics  # reads and checks the radiomics settings
        _ = self.outcome  # reads and checks the model card
        return self


def _score_model(lb: LoadedBundle, modality: str, x: torch.Tensor) -> tuple[float, np.ndarray | None, list, list]:
    """(probability, fused-model features or None, its models, per-model probabilities) of one bundled model for the patient."""
    meta, m = lb.meta, lb.bundled[modality]
    wanted = feature_layer(meta, m.name)  # None: no fused model reads this model's features
    layer = wanted or {"layer": None, "penultimate": True}
    scoring = m.test_scoring
    models = lb.models(modality)
    fold_probs: list[float] = []

    def fold_values(f: int, _pos) -> np.ndarray:
        """[probability, features...] of fold model ``f``; the penultimate vector and the logit from one forward."""
        model = models[f]
        with torch.inference_mode():
            if layer["penultimate"]:
                feats = model.features(x)
                prob = torch.sigmoid(model.head(model.dropout(feats)))
            else:
                prob = torch.sigmoid(model(x))
                feats = _extractor(model, layer["layer"])(x) if wanted else torch.zeros(1, 0)
        fold_probs.append(float(prob.item()))
        return np.concatenate([prob.double().numpy().reshape(1, 1), feats.double().numpy().reshape(1, -1)], axis=1)

    values = over_folds(np.array([UNSEEN]), len(m.folds), fold_values, scoring)[0]
    feats = values[1:] if wanted and len(values) > 1 else None
    return float(values[0]), feats, list(models.values()), fold_probs


def _extractor(model, layer: str):
    """An intermediate layer's pooled output (torchvision's feature extraction: only bundles fused on such a layer)."""
    # imported here: fusion.extract pulls in torchvision's graph tracer (torch._dynamo), seconds of import
    # that a bundle fused on the penultimate features never needs
    from ceusfusion.fusion.extract import make_extractor

    return make_extractor(model, layer)


def predict_loaded(lb: LoadedBundle, image=None, image_mask=None, video=None, video_mask=None,
                   out: str | Path | None = None, cams: bool = True, t0: float | None = None,
                   clinical: dict | None = None, boxes=()) -> dict:
    """:func:`predict` with a bundle already verified and loaded (``serve`` loads it whole once, at start).
    ``boxes``: the masks ('image_mask', 'video_mask') that are boxes drawn on the page (no outline: no shape)."""
    t0 = time.perf_counter() if t0 is None else t0
    inputs: dict = {}
    entries: dict = {}
    arrays = prepare_patient(lb.meta, image, image_mask, video, video_mask, record=inputs, entries=entries)
    files = {"image": image, "image_mask": image_mask, "video": video, "video_mask": video_mask}
    extras = patient_extras(lb.radiomics, files, entries, clinical, boxes)
    result = score_patient(lb, arrays, inputs, out=out if cams else None, extras=extras)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if out is not None:
        write_json(Path(out) / "prediction.json", result)
    return result


WHOLE_FRAME = ("the {m} was scored on the whole frame (no mask or box given), but the models were trained on nodule "
               "crops: this score, and where it stands among the training patients, are not comparable to theirs")


def whole_frame_warnings(inputs: dict) -> list[str]:
    """One sentence per picture scored on the whole frame (its ROI record says so), for the answer and the page."""
    return [WHOLE_FRAME.format(m=m) for m, rec in inputs.items() if isinstance(rec, dict) and rec.get("roi") == "whole frame"]


def score_patient(lb: LoadedBundle, arrays: dict[str, np.ndarray], inputs: dict, out: str | Path | None = None,
                  extras: PatientExtras | None = None) -> dict:
    """Every bundled model's answer for one prepared patient (:func:`prepare_patient`); the fused models read
    ``extras`` too (radiomics, covariates: :func:`deploy.fused.patient_extras`); Grad-CAM overlays are written
    to ``out`` when it is given."""
    meta, words = lb.meta, lb.outcome
    result: dict = {"models": {}, "bundle": str(lb.path), "bundle_sha256": meta["bundle_sha256"],
                    "bundle_pinned": meta["pinned"], "outcome": words.record(), "inputs": inputs,
                    "warnings": whole_frame_warnings(inputs)}
    feats = {}
    for modality, m in lb.bundled.items():
        if modality not in arrays:
            result["models"][m.name] = {"available": False, "reason": f"no {modality} given"}
            continue
        tf = transform_for(m.record)
        x = tf(model_input(arrays[modality], modality, m.record))
        prob, vec, models, fold_probs = _score_model(lb, modality, x)
        result["models"][m.name] = {"available": True, "modality": modality, "prob": prob, "threshold": m.threshold,
                                    "class": int(prob >= m.threshold), "class_label": words.label(prob >= m.threshold),
                                    "fold_probs": fold_probs}
        if vec is not None:
            feats[m.name] = vec
        if out is not None:
            path, empty = overlay(models[0], m.record, x, tf, Path(out) / f"gradcam_{m.name}.png")
            result["models"][m.name].update(gradcam=str(path), gradcam_empty=empty)
    for fm in lb.fused:
        fused = score_fused(fm, lb.pipeline(fm), result, feats, extras or PatientExtras())
        if fused.get("available"):
            fused["class_label"] = words.label(fused["class"])
        result["models"][fm.name] = fused
    return result


def overlay(model, rec: ModelRecord, x: torch.Tensor, tf, path: Path) -> tuple[Path, bool]:
    """Grad-CAM of the first fold model over the model's input frames (the package's one overlay figure), and
    whether the map is empty (no positive gradient anywhere: drawn as a flat square, which the page must say)."""
    from ceusfusion.explain.cam import display_frames, model_cams  # here: only when overlays are asked for
    from ceusfusion.figures.explain import overlay_figure  # here: matplotlib, seconds of import, only for overlays

    cam = model_cams(model, rec, x.clone(), "gradcam")[0]  # (M, H, W)
    frames = display_frames(x, tf, rec.input_mode, rec.frames, rec.frame_channels)[0]  # (F, H, W, 3)
    return overlay_figure(frames, cam, path), bool(np.nanmax(cam) <= 0)
