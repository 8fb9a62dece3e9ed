"""Grad-CAM explanations of trained DL_image / DL_video models, and checks that the maps mean something.

Maps come from the grad-cam package (``pytorch_grad_cam``: Grad-CAM, Grad-CAM++,
Score-CAM) hooked on the deepest block whose map is at least 7x7 for the model's
input (``models.cam_layer_for``; at 224 px DenseNet ``features.norm5``, the end
of the last dense block, and ResNet ``layer4``; at a CPU run's 64 px, where
those are 2x2, ResNet ``layer2`` / DenseNet ``denseblock2``), with
``BinaryClassifierOutputTarget``: for our single raw logit, class 1 is the
logit and class 0 its negative. By default each case is explained for the class
the model predicts (probability >= 0.5, as the grad-cam package does without
targets), so a negative case shows the evidence for "negative" rather than the
scraps of positive evidence it holds; ``target="positive"`` always explains
label 1. CAM objects are used as context managers so their hooks are released.

Input modes:

* ``single``: one map on the still.
* ``stack`` (keyframes as channels): one spatial map for the whole stack, shown
  on every frame, plus a per-frame contribution = gradient × input summed over
  each frame's channels and pixels (logit units, relative to the all-zero
  normalised input); ``share`` = |contribution| / Σ|contribution|.
* ``temporal`` (shared backbone + attention): the hooked layer sees every frame
  (B·T maps), so one map per frame; these are normalised jointly over a case's
  frames (so a weak frame stays weak), and the model's attention weights are
  reported beside them. Score-CAM is not available here (it re-runs the model
  on masked inputs of one frame shape).
* ``summary`` (mean, std, dynamic image of the keyframes as 3 channels): like
  ``stack`` with the 3 channels in place of the frames: one map shown on each
  channel as a grey panel, contributions per channel (``extra["panels"]`` names them).

Which fold models: test cases are explained by every fold model, maps and
probabilities averaged (the test prediction is the mean of the fold models);
training cases by the one fold model that held them out (their out-of-fold
prediction). ``fold=K`` forces one model.

Per-class selection (``per_class=K``): for each label the K cases with the most
confident prediction *for their own label* (highest probability for label 1,
lowest for label 0); ties broken by case id. These are the clearest examples of
what the model does when it is right (or, when even these are wrong, say so: the
JSON has the probability).

Sanity checks (Adebayo et al. 2018; numbers for the report): :func:`randomise_model`,
:func:`rank_correlation`, :func:`energy_share`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ceusfusion.models.data import SUMMARY_CHANNELS
from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import atomic_path, write_json

METHODS = ("gradcam", "gradcam++", "scorecam")


TARGETS = {
    "predicted": "BinaryClassifierOutputTarget(predicted class): the logit for cases predicted positive, its negative otherwise",
    "positive": "BinaryClassifierOutputTarget(1): the raw logit (evidence for label 1)",
}


def _cam_class(method: str):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM

    table = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM}
    if method not in table:
        raise CeusError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return table[method]


# ----------------------------------------------------------------------------- results


@dataclass
class CaseExplanation:
    """One case: display frames, maps and per-frame numbers (averaged over the fold models used)."""

    case_id: str
    label: int
    prob: float
    set: str
    folds: list[int]
    image: np.ndarray                      # (F, H, W, 3) float in [0, 1]: the de-normalised model input per frame
    cam: np.ndarray                        # (M, H, W) in [0, 1]; M = 1 (still / whole stack) or T (temporal)
    contribution: np.ndarray | None = None  # (T,) gradient × input per frame (video models)
    attention: np.ndarray | None = None     # (T,) attention weights (temporal models)
    region: np.ndarray | None = None        # (H, W) bool: where the signal lives, when known
    extra: dict = field(default_factory=dict)

    @property
    def share(self) -> np.ndarray | None:
        if self.contribution is None:
            return None
        a = np.abs(self.contribution)
        return a / a.sum() if a.sum() > 0 else np.full(len(a), 1.0 / len(a))

    def maps_per_frame(self) -> np.ndarray:
        """(F, H, W): the map to overlay on each displayed frame (the stack's one map repeated)."""
        return self.cam if len(self.cam) == len(self.image) else np.repeat(self.cam[:1], len(self.image), 0)

    def numbers(self) -> dict:
        d = {"case_id": self.case_id, "set": self.set, "label": int(self.label), "prob": float(self.prob),
             "folds": list(map(int, self.folds))}
        if self.contribution is not None:
            d["frame_contribution"] = [float(v) for v in self.contribution]
            d["frame_share"] = [float(v) for v in self.share]
        if self.attention is not None:
            d["attention"] = [float(v) for v in self.attention]
        if self.region is not None:
            d["region_area_share"] = float(self.region.mean())
            per = [energy_share(m, self.region) for m in self.cam]
            d["cam_energy_in_region"] = float(np.mean(per))
            if len(per) > 1:
                d["cam_energy_in_region_per_frame"] = [float(v) for v in per]
        d.update(self.extra)
        return d


# ----------------------------------------------------------------------------- sanity-check helpers


def energy_share(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of the (non-negative) map's total inside ``region``; a uniform map gives the region's area share.

    The region is resized (nearest) to the map when their sizes differ. An all-zero map (no
    evidence for the class anywhere, common for a randomised model) localises nothing and
    counts as uniform: the area share.
    """
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0, None)
    region = np.asarray(region, dtype=bool)
    if region.shape != cam.shape:
        t = torch.from_numpy(region.astype(np.float32))[None, None]
        region = F.interpolate(t, size=cam.shape, mode="nearest")[0, 0].numpy() > 0.5
    total = cam.sum()
    return float(cam[region].sum() / total) if total > 0 else float(region.mean())


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps over pixels (the measure of Adebayo et al.).

    A constant map carries no ranking; its correlation with anything is taken as 0.
    """
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def randomise_model(model: nn.Module, seed: int = 0, prefixes: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` with the parameters of every module (or of those under ``prefixes``) re-initialised.

    Re-initialisation uses each layer's own ``reset_parameters`` (BatchNorm: running
    statistics too), seeded. Cascading randomisation (Adebayo et al.) is a sequence
    of calls with growing ``prefixes``, from the head down (see :func:`cascade_prefixes`).
    """
    torch.manual_seed(seed)
    new = copy.deepcopy(model)
    n = 0
    for name, m in new.named_modules():
        if prefixes is not None and not any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False)):
            m.reset_parameters()
            n += 1
    if n == 0:
        raise CeusError(f"nothing to randomise under {prefixes}")
    return new.eval()


def cascade_prefixes(model: nn.Module) -> list[list[str]]:
    """Cumulative module-name lists for cascading randomisation: head first, then encoder blocks top-down."""
    heads = [n for n, _ in model.named_children() if n != "encoder"]
    enc = model.get_submodule("encoder")
    blocks: list[str] = []
    for n, m in enc.named_children():
        if n == "features":  # DenseNet / EfficientNet / ConvNeXt keep their blocks one level down
            blocks += [f"encoder.features.{c}" for c, _ in m.named_children()]
        else:
            blocks.append(f"encoder.{n}")
    blocks = [b for b in blocks if any(True for _ in model.get_submodule(b).parameters())]
    steps, cur = [], list(heads)
    steps.append(list(cur))
    for b in reversed(blocks):
        cur.append(b)
        steps.append(list(cur))
    return steps


# ----------------------------------------------------------------------------- maps of one model


def _display(x: torch.Tensor, tf, input_mode: str, frames: int, fc: int) -> np.ndarray:
    """Normalised model input (B, C, H, W) -> display frames (B, F, H, W, 3) in [0, 1]."""
    std = 1.0 / (tf.inv_std * 255.0)
    d = (x * std + tf.mean255 / 255.0).clamp(0, 1).cpu()
    b, c, h, w = d.shape
    if input_mode == "single":
        return d.reshape(b, 1, 3, h, w).permute(0, 1, 3, 4, 2).numpy()
    if input_mode == "summary":  # mean, std, dynamic image as three grey panels
        frames, fc = c, 1
    d = d.reshape(b, frames, fc, h, w)
    if fc == 1:
        d = d.expand(-1, -1, 3, -1, -1)
    return d.permute(0, 1, 3, 4, 2).numpy()


def layer_name(cfg: dict, layer: str | None = None) -> str:
    """The hooked layer's module name: ``layer`` when given, else ``models.cam_layer_for`` the model's crop."""
    from ceusfusion.models.backbones import cam_layer_for

    return layer or cam_layer_for(cfg["arch"], int(cfg["crop"]))


def target_layer(model: nn.Module, cfg: dict, layer: str | None = None) -> nn.Module:
    """The hooked layer (see :func:`layer_name`)."""
    layer = layer_name(cfg, layer)
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise CeusError(f"--layer {layer!r}: no such module in {cfg['arch']} (e.g. encoder.layer3)") from None


def model_cams(model: nn.Module, cfg: dict, x: torch.Tensor, method: str = "gradcam",
               layer: str | None = None, classes=None) -> np.ndarray:
    """CAMs of one model for a batch of normalised inputs: (B, M, H, W) in [0, 1].

    The method's raw map (ReLU of the weighted activations, from the grad-cam
    package's ``get_cam_image``) is upsampled bilinearly and divided by its
    maximum over the case (over all frames for temporal models). Unlike the
    package's min-max scaling this keeps a flat map flat, so a map that does
    not localise looks like it and its energy share stays meaningful.
    ``classes``: the class explained per case (default 1, the positive class).
    """
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    cls = _cam_class(method)
    temporal = cfg["input_mode"] == "temporal"
    if temporal and method == "scorecam":
        raise CeusError("scorecam is not available for temporal models (it masks whole inputs per channel); use gradcam or gradcam++")
    layer = target_layer(model, cfg, layer)
    model.eval()
    classes = [1] * len(x) if classes is None else [int(c) for c in classes]
    targets = [BinaryClassifierOutputTarget(c) for c in classes]
    with torch.enable_grad(), cls(model=model, target_layers=[layer]) as cam:
        # BaseCAM.forward without its min-max scaling: forward, backward of the targets, raw maps
        outputs = cam.activations_and_grads(x)
        if cam.uses_gradients:
            model.zero_grad()
            sum(t(o) for t, o in zip(targets, outputs)).backward()
        ag = cam.activations_and_grads
        grads = ag.gradients[0].numpy() if ag.gradients else None
        raw = cam.get_cam_image(x, layer, targets, ag.activations[0].numpy(), grads)
        model.zero_grad(set_to_none=True)
    b = len(x)
    m = cfg["frames"] if temporal else 1
    raw = torch.from_numpy(np.maximum(np.asarray(raw, dtype=np.float32), 0)).reshape(b * m, 1, *raw.shape[-2:])
    up = F.interpolate(raw, size=x.shape[-2:], mode="bilinear", align_corners=False).reshape(b, m, *x.shape[-2:])
    top = up.flatten(1).amax(1).clamp_min(1e-12).view(b, 1, 1, 1)
    return (up.clamp_min(0) / top).numpy()


def frame_contributions(model: nn.Module, x: torch.Tensor, frames: int) -> np.ndarray:
    """Gradient × input of the logit, summed over each frame's channels and pixels: (B, frames).

    Channels are frame-major (frame t owns channels t*c .. t*c+c-1), as in ``data``.
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logit = model(x)
        (g,) = torch.autograd.grad(logit.sum(), x)
    gi = (g * x).detach()
    return gi.reshape(len(x), frames, -1).sum(-1).cpu().numpy().astype(np.float64)


# ----------------------------------------------------------------------------- selection


def select_per_class(case_ids: list[str], labels: np.ndarray, probs: np.ndarray, k: int) -> list[str]:
    """The K cases of each label most confidently predicted as their own label (label 0 first)."""
    if k < 1:
        raise CeusError("--per-class must be at least 1")
    chosen = []
    for lab in (0, 1):
        own = [(1 - p if lab == 0 else p, c) for c, y, p in zip(case_ids, labels, probs) if int(y) == lab]
        own.sort(key=lambda t: (-t[0], t[1]))
        chosen += [c for _, c in own[:k]]
    return chosen


# ----------------------------------------------------------------------------- regions


def region_to_input(mask: np.ndarray, cfg: dict) -> np.ndarray:
    """A mask in prepared-cache space (S, S) -> model-input space: resized to the model's image size, centre-cropped."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    size, crop = int(cfg["image_size"]), int(cfg["crop"])
    if m.shape[-1] != size or m.shape[-2] != size:
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    o = (size - crop) // 2
    return m[0, 0, o:o + crop, o:o + crop].numpy() > 0.5


def signal_regions(run, truth_csv, modality: str, case_ids: list[str]) -> dict[str, np.ndarray]:
    """Signal masks of a synthetic cohort (``truth.csv``: image_signal / video_signal) in prepared-cache space.

    The mask is cut and resized with the same ROI box ``prepare`` used (``keyframes.json``).
    """
    import pandas as pd

    from ceusfusion.io.mask import read_mask
    from ceusfusion.ingest.prepare import crop_resize

    truth_csv = Path(truth_csv)
    if not truth_csv.is_file():
        raise CeusError(f"{truth_csv} not found")
    col = f"{modality}_signal"
    truth = pd.read_csv(truth_csv, dtype={"case_id": str})
    if col not in truth.columns:
        raise CeusError(f"{truth_csv}: no column {col!r} (expected the synthetic cohort's truth.csv)")
    kf_path = Path(run) / "prepared" / "keyframes.json"
    if not kf_path.is_file():
        raise CeusError(f"{kf_path} not found (run `ceusfusion prepare` first)")
    kf = json.loads(kf_path.read_text())
    size = int(kf["params"]["size"])
    rows = truth.set_index("case_id")
    out = {}
    for cid in case_ids:
        if cid not in rows.index or not isinstance(rows.at[cid, col], str):
            continue
        box = kf["cases"].get(cid, {}).get(modality, {}).get("box")
        if box is None:
            raise CaseError(cid, str(kf_path), f"no {modality} ROI box")
        m = read_mask(truth_csv.parent / rows.at[cid, col])
        if m.ndim == 3:
            m = m.any(0)
        out[cid] = crop_resize(m.astype(np.uint8) * 255, tuple(box), size) > 127
    return out


# ----------------------------------------------------------------------------- explaining a model


def _fold_plan(run, name: str, cfg: dict, case_ids: list[str], split: np.ndarray, fold: int | None) -> dict[str, list[int]]:
    import pandas as pd

    from ceusfusion.models.train import model_dir

    if fold is not None:
        if not 0 <= fold < cfg["folds"]:
            raise CeusError(f"--fold {fold}: {name} has folds 0..{cfg['folds'] - 1}")
        return {c: [fold] for c in case_ids}
    folds = pd.read_csv(model_dir(run, name) / "folds.csv", dtype={"case_id": str}).set_index("case_id")["fold"]
    plan = {}
    for c, s in zip(case_ids, split):
        plan[c] = [int(folds[c])] if s == "train" and c in folds.index else list(range(cfg["folds"]))
    return plan


def explain_cases(run, name: str, case_ids: list[str] | None = None, per_class: int | None = None,
                  split: str = "test", method: str = "gradcam", fold: int | None = None,
                  regions: dict[str, np.ndarray] | None = None, device: str = "cpu", batch_size: int = 8,
                  models: dict[int, nn.Module] | None = None, layer: str | None = None,
                  target: str = "predicted", classes: dict[str, int] | None = None) -> list[CaseExplanation]:
    """Explain cases of a trained model (see the module docstring for folds, selection and target).

    ``regions``: case_id -> mask in prepared-cache space (signal / nodule region).
    ``models``: fold -> model to use instead of the checkpoints (e.g. a randomised copy).
    ``classes``: case_id -> class to explain, overriding ``target`` (the randomisation check
    explains the trained model's classes).
    """
    from ceusfusion.models.data import load_cached
    from ceusfusion.models.train import load_fold_model, read_config, transform_for

    _cam_class(method)
    if target not in TARGETS:
        raise CeusError(f"unknown --target {target!r}; choose {' or '.join(TARGETS)}")
    cfg = read_config(run, name)
    if split not in ("test", "train"):
        raise CeusError(f"--set must be test or train, not {split!r}")
    data = load_cached(run, cfg["modality"], cfg["image_size"])
    pos = {c: i for i, c in enumerate(data.case_ids)}
    if case_ids:
        missing = [c for c in case_ids if c not in pos]
        if missing:
            raise CeusError(f"case(s) {', '.join(missing)} have no prepared {cfg['modality']} in {run}/prepared/index.csv")
        ids = list(dict.fromkeys(case_ids))
    else:
        ids = [c for c in data.case_ids if data.split[pos[c]] == split]
        if not ids:
            raise CeusError(f"no {split} cases with a {cfg['modality']} in {run}/prepared/index.csv")
    plan = _fold_plan(run, name, cfg, ids, [data.split[pos[c]] for c in ids], fold)
    needed = sorted({k for v in plan.values() for k in v})
    nets = {k: (models[k] if models and k in models else load_fold_model(run, name, k, device)[0]) for k in needed}
    for m in nets.values():
        m.to(device).eval()
    tf = transform_for(cfg, device)

    def batches(sel):
        for s in range(0, len(sel), batch_size):
            yield sel[s:s + batch_size]

    # probabilities first, where needed: the confident examples, and the class each case is explained for
    select = per_class is not None and not case_ids
    probs = np.zeros(len(ids))
    if select or (classes is None and target == "predicted"):
        for k, net in nets.items():
            use = [i for i, c in enumerate(ids) if k in plan[c]]
            with torch.no_grad():
                for b in batches(use):
                    x = tf(data.x[[pos[ids[i]] for i in b]])
                    probs[b] += torch.sigmoid(net(x).float()).cpu().numpy() / np.array([len(plan[ids[i]]) for i in b])
    if classes is None:
        classes = {c: int(p >= 0.5) if target == "predicted" else 1 for c, p in zip(ids, probs)}
    if select:
        ids = select_per_class(ids, data.labels[[pos[c] for c in ids]], probs, per_class)

    mode, frames, fc = cfg["input_mode"], cfg["frames"], cfg["frame_channels"]
    acc: dict[str, dict] = {c: {"prob": 0.0, "cam": 0.0, "contrib": 0.0, "att": 0.0} for c in ids}
    for k, net in nets.items():
        use = [c for c in ids if k in plan[c]]
        for b in batches(use):
            x = tf(data.x[[pos[c] for c in b]])
            cams = model_cams(net, cfg, x, method, layer, [classes[c] for c in b])
            with torch.no_grad():
                prob = torch.sigmoid(net(x).float()).cpu().numpy()
                att = net.attention.cpu().numpy() if mode == "temporal" else None
            contrib = frame_contributions(net, x, x.shape[1] if mode == "summary" else frames) if mode != "single" else None
            for j, c in enumerate(b):
                n = len(plan[c])
                a = acc[c]
                a["prob"] += prob[j] / n
                a["cam"] = a["cam"] + cams[j] / n
                if contrib is not None:
                    a["contrib"] = a["contrib"] + contrib[j] / n
                if att is not None:
                    a["att"] = a["att"] + att[j] / n
    disp = _display(tf(data.x[[pos[c] for c in ids]]), tf, mode, frames, fc)
    out = []
    for j, c in enumerate(ids):
        a, i = acc[c], pos[c]
        reg = None
        if regions is not None and c in regions:
            reg = region_to_input(regions[c], cfg)
        out.append(CaseExplanation(
            case_id=c, label=int(data.labels[i]), prob=float(a["prob"]), set=str(data.split[i]), folds=plan[c],
            image=disp[j], cam=np.asarray(a["cam"], dtype=np.float32),
            contribution=None if mode == "single" else np.asarray(a["contrib"]),
            attention=np.asarray(a["att"]) if mode == "temporal" else None, region=reg,
            extra={"cam_class": int(classes[c]), **({"panels": list(SUMMARY_CHANNELS)} if mode == "summary" else {})}))
    return out


def add_randomisation_check(run, name: str, results: list[CaseExplanation], method: str = "gradcam",
                            seed: int = 0, device: str = "cpu", layer: str | None = None) -> dict:
    """Maps of the same cases from fully randomised copies of the fold models (Adebayo et al.).

    Adds ``randomised_rank_correlation`` (and ``randomised_energy_in_region``) to each
    case's numbers and returns the summary (means over cases).
    """
    from ceusfusion.models.train import load_fold_model

    if not results:
        return {}
    folds = sorted({k for r in results for k in r.folds})
    rnd = {k: randomise_model(load_fold_model(run, name, k, device)[0], seed + k) for k in folds}
    by_fold: dict[tuple, list[str]] = {}
    for r in results:
        by_fold.setdefault(tuple(r.folds), []).append(r.case_id)
    rand = {}
    for fl, ids in by_fold.items():
        sub = explain_cases(run, name, ids, method=method, fold=fl[0] if len(fl) == 1 else None, device=device,
                            models=rnd, layer=layer, classes={r.case_id: r.extra.get("cam_class", 1) for r in results})
        rand.update({e.case_id: e for e in sub})
    rc, er = [], []
    for r in results:
        z = rand[r.case_id]
        r.extra["randomised_rank_correlation"] = float(np.mean([rank_correlation(a, b) for a, b in zip(r.cam, z.cam)]))
        rc.append(r.extra["randomised_rank_correlation"])
        if r.region is not None:
            r.extra["randomised_energy_in_region"] = float(np.nanmean([energy_share(m, r.region) for m in z.cam]))
            er.append(r.extra["randomised_energy_in_region"])
    summary = {"method": "full re-initialisation of the fold models", "seed": seed,
               "mean_rank_correlation": float(np.mean(rc))}
    if er:
        summary["mean_energy_in_region_randomised"] = float(np.nanmean(er))
    return summary


# ----------------------------------------------------------------------------- files


def write_explanations(results: list[CaseExplanation], out, meta: dict) -> Path:
    """``out/<case>.png`` per case, ``out/arrays/<case>.npz`` (for figures), ``out/explain.json``."""
    from ceusfusion.figures.explain import case_figure

    out = Path(out)
    for r in results:
        case_figure(r, out / f"{r.case_id}.png", title_extra=meta.get("name", ""))
        arrays = {"image": r.image.astype(np.float16), "cam": r.cam.astype(np.float16)}
        if r.region is not None:
            arrays["region"] = r.region
        with atomic_path(out / "arrays" / f"{r.case_id}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
    cases = [r.numbers() for r in results]
    summary = dict(meta)
    with_reg = [c for c in cases if "cam_energy_in_region" in c]
    if with_reg:
        summary["mean_cam_energy_in_region"] = float(np.nanmean([c["cam_energy_in_region"] for c in with_reg]))
        summary["mean_region_area_share"] = float(np.mean([c["region_area_share"] for c in with_reg]))
    write_json(out / "explain.json", {**summary, "cases": cases})
    return out / "explain.json"


def load_explanations(folder) -> tuple[dict, list[CaseExplanation]]:
    """Read back what :func:`write_explanations` wrote: (meta, results)."""
    folder = Path(folder)
    path = folder / "explain.json"
    if not path.is_file():
        raise CeusError(f"{path} not found (run `ceusfusion explain` first)")
    d = json.loads(path.read_text())
    res = []
    for c in d["cases"]:
        z = np.load(folder / "arrays" / f"{c['case_id']}.npz")
        res.append(CaseExplanation(
            case_id=c["case_id"], label=c["label"], prob=c["prob"], set=c["set"], folds=c["folds"],
            image=z["image"].astype(np.float32), cam=z["cam"].astype(np.float32),
            contribution=np.array(c["frame_contribution"]) if "frame_contribution" in c else None,
            attention=np.array(c["attention"]) if "attention" in c else None,
            region=z["region"] if "region" in z.files else None,
            extra={k: c[k] for k in ("panels", "cam_class") if k in c}))
    meta = {k: v for k, v in d.items() if k != "cases"}
    return meta, res


def explain(run, name: str, out=None, case_ids: list[str] | None = None, per_class: int | None = None,
            split: str = "test", method: str = "gradcam", fold: int | None = None, truth=None,
            sanity: bool = False, seed: int = 0, device: str = "cpu", layer: str | None = None,
            target: str = "predicted") -> Path:
    """The ``explain`` command: maps, PNG per case and explain.json under ``out`` (default RUN/explain/NAME)."""
    from ceusfusion.models.train import read_config

    run = Path(run)
    cfg = read_config(run, name)
    out = Path(out) if out is not None else run / "explain" / name
    torch.manual_seed(seed)
    regions = None
    if truth is not None:
        from ceusfusion.models.data import load_cached

        ids_all = load_cached(run, cfg["modality"], cfg["image_size"]).case_ids
        regions = signal_regions(run, truth, cfg["modality"], ids_all)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    res = explain_cases(run, name, case_ids, per_class, split, method, fold, regions, device, layer=layer, target=target)
    meta = {"name": name, "arch": cfg["arch"], "modality": cfg["modality"], "input_mode": cfg["input_mode"],
            "method": method, "target": TARGETS[target],
            "layer": layer_name(cfg, layer),
            "folds": "fixed" if fold is not None else "test: mean over fold models; train: the held-out fold model",
            "selection": ("given case ids" if case_ids else
                          f"per class the {per_class} most confident for their own label" if per_class else f"all {split} cases")}
    if sanity:
        meta["randomisation_check"] = add_randomisation_check(run, name, res, method, seed, device, layer)
    return write_explanations(res, out, meta)
