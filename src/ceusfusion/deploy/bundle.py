"""Export a finished run as a bundle, and predict for a new patient from it.

A bundle holds what a new prediction needs and nothing about the training
patients: the selected models' fold weights (safetensors) and configs, the
preprocessing and keyframe parameters, the thresholds locked on the training
set, the fitted fusion pipeline, versions and a sha256 of every file (checked
before anything is loaded).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ceusfusion import __version__
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file, write_json

BUNDLE_VERSION = 1


def _threshold(metrics: dict, name: str) -> float:
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


def export(run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """`ceusfusion export RUN --out BUNDLE`."""
    run, out = Path(run), Path(out)
    for need in ("selection.json", "evaluation/metrics.json", "prepared/keyframes.json"):
        if not (run / need).is_file():
            raise CeusError(f"{run / need} not found: finish the study (select, evaluate) before exporting")
    if out.exists():
        if not overwrite:
            raise CeusError(f"{out} exists; pass --overwrite to replace it")
        if not (out / "bundle.json").is_file():
            raise CeusError(f"{out} exists and is not a bundle; refusing to replace it")
    best = json.loads((run / "selection.json").read_text())["best"]
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    models = {}
    for modality, name in best.items():
        src = run / "models" / name
        cfg = json.loads((src / "config.json").read_text())
        folds = sorted(int(p.parent.name[4:]) for p in src.glob("fold*/model.safetensors"))
        for k in folds:
            (tmp / "models" / name / f"fold{k}").mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / f"fold{k}" / "model.safetensors", tmp / "models" / name / f"fold{k}" / "model.safetensors")
        shutil.copy2(src / "config.json", tmp / "models" / name / "config.json")
        models[modality] = {"name": name, "folds": folds, "threshold": _threshold(metrics, name), "config": cfg}
    combined = None
    fusion_json = run / "fusion" / "fusion.json"
    if fusion_json.is_file() and (run / "fusion" / "model.joblib").is_file():
        fj = json.loads(fusion_json.read_text())
        (tmp / "fusion").mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / "fusion" / "model.joblib", tmp / "fusion" / "model.joblib")
        layers = {}
        for modality, m in models.items():
            fpath = run / "features" / f"{m['name']}.parquet"
            if fpath.is_file():
                from ceusfusion.fusion.extract import read_features

                from ceusfusion.fusion.extract import default_layer
                from ceusfusion.models.train import build_from_config

                layer = read_features(fpath)[1].get("layer")
                layers[m["name"]] = {"layer": layer, "penultimate": layer in (None, "features") or layer == default_layer(build_from_config(m["config"]))}
        name = fj.get("name", "DL_combined")
        scores = any(str(i.get("meta", {}).get("name", "")).endswith("_score") for i in fj.get("inputs", []) if i.get("kind") == "features")
        combined = {"name": name, "inputs": "scores" if scores else "features", "threshold": _threshold(metrics, name), "feature_layers": layers,
                    "clinical": list(fj.get("columns", {}).get("numeric", [])) + list(fj.get("columns", {}).get("categorical", [])),
                    "perfusion": any(i.get("kind") == "perfusion" for i in fj.get("inputs", []))}
    params = json.loads((run / "prepared" / "keyframes.json").read_text())["params"]
    files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    write_json(tmp / "bundle.json", {"bundle_version": BUNDLE_VERSION, "ceusfusion": __version__, "torch": torch.__version__,
                                     "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     "prepare": params, "models": models, "combined": combined, "files": files,
                                     "thresholds": "Youden-optimal on the training set's out-of-fold predictions"})
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _load_bundle(bundle: Path) -> dict:
    meta_path = bundle / "bundle.json"
    if not meta_path.is_file():
        raise CeusError(f"{bundle}: not a ceusfusion bundle (no bundle.json)")
    meta = json.loads(meta_path.read_text())
    for rel, digest in meta["files"].items():
        p = bundle / rel
        if not p.is_file() or sha256_file(p) != digest:
            raise CeusError(f"{p}: missing or changed since export (sha256 mismatch); refusing to load it")
    return meta


def _model_input(arr: np.ndarray, modality: str, cfg: dict) -> torch.Tensor:
    """A prepared array → (1, C, S, S) uint8 in the channel layout the model was trained with."""
    import torch.nn.functional as F

    from ceusfusion.models.data import _to_chw

    a = _to_chw(arr, modality, "patient")  # (frames, c, S, S)
    fc = int(cfg["frame_channels"])
    if a.shape[1] == 1 and fc == 3:
        a = np.repeat(a, 3, axis=1)
    elif a.shape[1] == 3 and fc == 1:
        a = np.round(a.astype(np.float32).mean(axis=1, keepdims=True)).astype(np.uint8)
    t = torch.from_numpy(np.array(a, copy=True)).reshape(1, -1, *a.shape[2:])
    size = int(cfg["image_size"])
    if t.shape[-1] != size:
        t = F.interpolate(t.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return t


def predict(bundle: str | Path, image=None, image_mask=None, video=None, video_mask=None, out: str | Path | None = None,
            cams: bool = True, threads: int = 1) -> dict:
    """Probabilities of every bundled model for one patient, classes at the locked thresholds, Grad-CAM overlays.

    One patient is a batch of one: a single thread avoids the thread-barrier stalls
    that make small CPU inferences many times slower when the cores are shared.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        return _predict(bundle, image, image_mask, video, video_mask, out, cams)
    finally:
        torch.set_num_threads(previous)


def _predict(bundle, image, image_mask, video, video_mask, out, cams) -> dict:
    from ceusfusion.fusion.extract import make_extractor
    from ceusfusion.ingest.prepare import PrepareParams, prepare_image, prepare_video
    from ceusfusion.models.train import build_from_config, load_tensors, transform_for

    t0 = time.perf_counter()
    bundle = Path(bundle)
    meta = _load_bundle(bundle)
    p = meta["prepare"]
    params = PrepareParams(**{k: (tuple(v) if k == "crop" and v is not None else v) for k, v in p.items()})
    arrays: dict[str, np.ndarray] = {}
    if image is not None:
        arrays["image"], _ = prepare_image(Path(image), Path(image_mask) if image_mask else None, params)
    if video is not None:
        va, _, _ = prepare_video(Path(video), Path(video_mask) if video_mask else None, params)
        arrays["video"] = va["video"]
    result = {"models": {}, "bundle": str(bundle)}
    feats = {}
    for modality, m in meta["models"].items():
        if modality not in arrays:
            result["models"][m["name"]] = {"available": False, "reason": f"no {modality} given"}
            continue
        cfg = m["config"]
        tf = transform_for(cfg)
        x = tf(_model_input(arrays[modality], modality, cfg))
        probs, fvecs, fold_models = [], [], []
        for k in m["folds"]:
            model = build_from_config(cfg)
            tensors, _ = load_tensors(bundle / "models" / m["name"] / f"fold{k}" / "model.safetensors")
            model.load_state_dict(tensors)
            model.eval()
            layer = (meta.get("combined") or {}).get("feature_layers", {}).get(m["name"]) or {"layer": None, "penultimate": True}
            with torch.inference_mode():
                if layer["penultimate"]:
                    f = model.features(x)  # the penultimate vector: one forward gives features and logit
                    probs.append(float(torch.sigmoid(model.head(model.dropout(f))).item()))
                    fvecs.append(f.float().numpy()[0])
                else:
                    probs.append(float(torch.sigmoid(model(x)).item()))
                    if meta.get("combined"):
                        fvecs.append(make_extractor(model, layer["layer"])(x).float().numpy()[0])
            fold_models.append(model)
        prob = float(np.mean(probs))
        result["models"][m["name"]] = {"available": True, "modality": modality, "prob": prob, "threshold": m["threshold"],
                                       "class": int(prob >= m["threshold"]), "fold_probs": probs}
        if fvecs and meta.get("combined"):
            feats[m["name"]] = np.mean(fvecs, axis=0)
        if cams and out is not None:
            result["models"][m["name"]]["gradcam"] = str(_overlay(fold_models[0], cfg, x, tf, Path(out) / f"gradcam_{m['name']}.png"))
    comb = meta.get("combined")
    if comb:
        if comb.get("clinical") or comb.get("perfusion"):
            result["models"][comb["name"]] = {"available": False, "reason": "the fused model needs clinical/perfusion inputs, not supported by predict yet"}
        elif len(feats) == len(meta["models"]):
            import joblib
            import pandas as pd

            pipe = joblib.load(bundle / "fusion" / "model.joblib")  # integrity checked by sha256 above
            row = {}
            for name, vec in feats.items():
                if comb.get("inputs") == "scores":  # late fusion: the logit of the fold-mean probability
                    p = min(max(result["models"][name]["prob"], 1e-6), 1 - 1e-6)
                    row[f"{name}_score__f0000"] = float(np.float32(np.log(p / (1 - p))))
                else:
                    row.update({f"{name}__f{i:04d}": float(v) for i, v in enumerate(vec)})
            X = pd.DataFrame([row])
            cols = getattr(pipe, "feature_names_in_", None)
            if cols is not None:
                X = X.reindex(columns=list(cols))
            prob = float(pipe.predict_proba(X)[0, 1])
            result["models"][comb["name"]] = {"available": True, "prob": prob, "threshold": comb["threshold"], "class": int(prob >= comb["threshold"])}
        else:
            result["models"][comb["name"]] = {"available": False, "reason": "needs both the image and the video"}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if out is not None:
        write_json(Path(out) / "prediction.json", result)
    return result


def _overlay(model, cfg: dict, x: torch.Tensor, tf, path: Path) -> Path:
    """Grad-CAM of the first fold model over the model's input frames, with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ceusfusion.explain.cases import _display, model_cams
    from ceusfusion.core.fsutil import savefig

    cam = model_cams(model, cfg, x.clone(), "gradcam")[0]  # (M, H, W)
    disp = _display(x, tf, cfg["input_mode"], cfg["frames"], cfg["frame_channels"])[0]  # (F, H, W, 3)
    n = disp.shape[0]
    fig = Figure(figsize=(2.4 * n + 0.6, 2.6), dpi=110)
    axes = fig.subplots(1, n, squeeze=False)[0]
    im = None
    for i, ax in enumerate(axes):
        ax.imshow(disp[i].mean(axis=-1), cmap="gray", vmin=0, vmax=1)
        im = ax.imshow(cam[min(i, cam.shape[0] - 1)], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes), fraction=0.02)
    savefig(fig, path)
    return path
