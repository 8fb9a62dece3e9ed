"""Grad-CAM maps of one model, per-frame contributions, and the model input as display frames.

Maps come from the grad-cam package (``pytorch_grad_cam``: Grad-CAM, Grad-CAM++,
Score-CAM) hooked on the deepest block whose map is at least 7x7 for the model's
input (``models.backbones.cam_layer_for``; at 224 px DenseNet ``features.norm5``,
the end of the last dense block, and ResNet ``layer4``; at a CPU run's 64 px,
where those are 2x2, ResNet ``layer2`` / DenseNet ``denseblock2``), with
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
  channel as a grey panel, contributions per channel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from torch import nn

from ceusfusion.core.errors import CeusError
from ceusfusion.models.backbones import cam_layer_for
from ceusfusion.models.registry import ModelRecord

METHODS = ("gradcam", "gradcam++", "scorecam")

TARGETS = {
    "predicted": "BinaryClassifierOutputTarget(predicted class): the logit for cases predicted positive, its negative otherwise",
    "positive": "BinaryClassifierOutputTarget(1): the raw logit (evidence for label 1)",
}

_CAM_TYPES = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM}


def cam_type(method: str):
    """The grad-cam package's CAM class for a method name of :data:`METHODS` (clear error otherwise)."""
    if method not in _CAM_TYPES:
        raise CeusError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return _CAM_TYPES[method]


def display_frames(x: torch.Tensor, tf, input_mode: str, frames: int, fc: int) -> np.ndarray:
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


def layer_name(cfg: ModelRecord, layer: str | None = None) -> str:
    """The hooked layer's module name: ``layer`` when given, else ``cam_layer_for`` the model's crop."""
    return layer or cam_layer_for(cfg.arch, int(cfg.crop))


def target_layer(model: nn.Module, cfg: ModelRecord, layer: str | None = None) -> nn.Module:
    """The hooked layer (see :func:`layer_name`)."""
    layer = layer_name(cfg, layer)
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise CeusError(f"--layer {layer!r}: no such module in {cfg.arch} (e.g. encoder.layer3)") from None


def model_cams(model: nn.Module, cfg: ModelRecord, x: torch.Tensor, method: str = "gradcam",
               layer: str | None = None, classes=None) -> np.ndarray:
    """CAMs of one model for a batch of normalised inputs: (B, M, H, W) in [0, 1].

    The method's raw map (ReLU of the weighted activations, from the grad-cam
    package's ``get_cam_image``) is upsampled bilinearly and divided by its
    maximum over the case (over all frames for temporal models). Unlike the
    package's min-max scaling this keeps a flat map flat, so a map that does
    not localise looks like it and its energy share stays meaningful.
    ``classes``: the class explained per case (default 1, the positive class).
    """
    cls = cam_type(method)
    temporal = cfg.input_mode == "temporal"
    if temporal and method == "scorecam":
        raise CeusError("scorecam is not available for temporal models (it masks whole inputs per channel); use gradcam or gradcam++")
    layer = target_layer(model, cfg, layer)
    model.eval()
    classes = [1] * len(x) if classes is None else [int(c) for c in classes]
    targets = [BinaryClassifierOutputTarget(c) for c in classes]
    with torch.enable_grad(), cls(model=model, target_layers=[layer]) as cam:
        # relies on grad-cam 1.5 internals (activations_and_grads, uses_gradients, get_cam_image; pinned <1.6):
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
    m = cfg.frames if temporal else 1
    raw = torch.from_numpy(np.maximum(np.asarray(raw, dtype=np.float32), 0)).reshape(b * m, 1, *raw.shape[-2:])
    up = F.interpolate(raw, size=x.shape[-2:], mode="bilinear", align_corners=False).reshape(b, m, *x.shape[-2:])
    top = up.flatten(1).amax(1).clamp_min(1e-12).view(b, 1, 1, 1)
    return (up.clamp_min(0) / top).numpy()


def frame_contributions(model: nn.Module, x: torch.Tensor, frames: int) -> np.ndarray:
    """Gradient × input of the logit, summed over each frame's channels and pixels: (B, frames).

    Channels are frame-major (frame t owns channels t*c .. t*c+c-1), as in ``models.transforms``.
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logit = model(x)
        (g,) = torch.autograd.grad(logit.sum(), x)
    gi = (g * x).detach()
    return gi.reshape(len(x), frames, -1).sum(-1).cpu().numpy().astype(np.float64)
