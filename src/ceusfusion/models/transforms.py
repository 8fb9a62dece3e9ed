"""Batch transforms done in torch: crop, flips, normalisation, summary channels.

Why in torch on whole batches rather than per-sample transforms in worker processes: the cohort is
small and held in memory as uint8 (``models.data``), and random crops/flips of a whole batch cost far
less than a training step, so the input pipeline is never the bottleneck (``bench/train_throughput.py``).

Channel layout: a still gives 1 (grey) or 3 channels; keyframes give T or 3T channels, frame-major
(frame t owns channels t*c .. t*c+c-1), so ``stack`` and ``temporal`` models read the same tensor.
``summary`` models get 3 channels computed from it per batch (:func:`summary_channels`), after crop and
flips so augmentation is the same for every frame.
"""

from __future__ import annotations

import numpy as np
import torch

from ceusfusion.core.errors import CeusError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance of colour frames
SUMMARY_CHANNELS = ("mean", "std", "dynamic image")


def rank_pool_weights(frames: int) -> torch.Tensor:
    """Approximate rank pooling weights (Bilen et al. 2016), float64 (T,); they sum to zero.

    alpha_t = 2(T - t + 1) - (T + 1)(H_T - H_{t-1}), t = 1..T, H_t the t-th harmonic number.
    """
    h = torch.cat([torch.zeros(1, dtype=torch.float64),
                   torch.cumsum(1.0 / torch.arange(1, frames + 1, dtype=torch.float64), 0)])
    t = torch.arange(1, frames + 1, dtype=torch.float64)
    return 2 * (frames - t + 1) - (frames + 1) * (h[frames] - h[:-1])


def summary_channels(x: torch.Tensor, frames: int, frame_channels: int) -> torch.Tensor:
    """uint8 keyframes (B, T*c, H, W) -> float (B, 3, H, W): mean, std and dynamic image, each in [0, 1].

    Frames are grey in [0, 1] (colour: BT.601 luminance). Fixed, data-independent
    scales so every case shares one: the mean as is; the population std over
    frames divided by 0.5 (its maximum for values in [0, 1]); the dynamic image
    D = sum_t alpha_t frame_t mapped to 0.5 + D / (2P), P = the sum of the
    positive weights, so |D| <= P maps into [0, 1] and a static sequence gives 0.5.
    """
    b, c, h, w = x.shape
    if c != frames * frame_channels:
        raise CeusError(f"summary input expects {frames}x{frame_channels} channels, got {c}")
    f = x.float().reshape(b, frames, frame_channels, h, w) / 255.0
    if frame_channels == 3:
        f = (f * torch.tensor(LUMA, device=f.device).view(1, 1, 3, 1, 1)).sum(2)
    else:
        f = f[:, :, 0]
    alpha = rank_pool_weights(frames)
    pos = float(alpha.clamp_min(0).sum())
    dyn = (f * alpha.to(f.device, torch.float32).view(1, -1, 1, 1)).sum(1)
    dyn = 0.5 + dyn / (2 * pos) if pos > 0 else torch.full_like(dyn, 0.5)  # one frame: no motion
    return torch.stack([f.mean(1), f.std(1, correction=0) / 0.5, dyn], 1).clamp(0, 1)


def normalisation(input_mode: str, frames: int, frame_channels: int, pretrained: bool,
                  rgb: tuple | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the model input: the pretrained weights' RGB statistics ``rgb``
    ((mean, std); ImageNet's by default, a timm model's ``pretrained_cfg`` ones otherwise) when
    pretrained, else identity. Grey channels not replicated to RGB use the mean of the RGB statistics.
    """
    rgb_mean, rgb_std = rgb if rgb is not None else (IMAGENET_MEAN, IMAGENET_STD)
    if input_mode in ("single", "summary"):
        c = 3
        mean, std = list(rgb_mean), list(rgb_std)
    elif frame_channels == 3:
        c = 3 * frames
        mean, std = list(rgb_mean) * frames, list(rgb_std) * frames
    else:
        c = frames
        mean, std = [float(np.mean(rgb_mean))] * frames, [float(np.mean(rgb_std))] * frames
    if not pretrained:
        return [0.0] * c, [1.0] * c
    return mean, std


def augment_params(n: int, size: int, crop: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random crop offsets and flips for ``n`` samples, drawn from ``generator`` (CPU)."""
    hi = size - crop + 1
    return {"oy": torch.randint(0, hi, (n,), generator=generator),
            "ox": torch.randint(0, hi, (n,), generator=generator),
            "hflip": torch.rand(n, generator=generator) < 0.5,
            "vflip": torch.rand(n, generator=generator) < 0.5}


class BatchTransform:
    """uint8 (B, C, S, S) -> normalised float (B, C', crop, crop) on ``device``.

    Training: random crop + random horizontal/vertical flips (parameters from
    :func:`augment_params`). Evaluation: centre crop. A single grey still is
    replicated to 3 channels; ``summary`` keyframes become their 3 summary
    channels (:func:`summary_channels`) before normalisation.
    """

    def __init__(self, input_mode: str, frames: int, frame_channels: int, crop: int, size: int,
                 pretrained: bool, device: torch.device | str = "cpu", channels_last: bool = False,
                 stats: tuple[list[float], list[float]] | None = None):
        if crop > size:
            raise CeusError(f"crop {crop} is larger than the image size {size}")
        self.crop, self.size = crop, size
        self.replicate = input_mode == "single" and frame_channels == 1
        self.summary = (frames, frame_channels) if input_mode == "summary" else None
        self.device = torch.device(device)
        # ``stats``: the per-channel (mean, std) a model recorded in its config.json; else ImageNet's
        mean, std = stats if stats is not None else normalisation(input_mode, frames, frame_channels, pretrained)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std, device=self.device).view(1, -1, 1, 1) / 255.0
        self.mean255 = self.mean * 255.0
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        c = self.crop
        if params is None:
            o = (self.size - c) // 2
            x = x[..., o:o + c, o:o + c]
        else:
            oy, ox = params["oy"].tolist(), params["ox"].tolist()
            x = torch.stack([x[i, :, y:y + c, z:z + c] for i, (y, z) in enumerate(zip(oy, ox))])
            hf = params["hflip"].to(self.device).view(-1, 1, 1, 1)
            vf = params["vflip"].to(self.device).view(-1, 1, 1, 1)
            x = torch.where(hf, x.flip(-1), x)
            x = torch.where(vf, x.flip(-2), x)
        if self.replicate:
            x = x.expand(-1, 3, -1, -1)
        if self.summary is not None:
            x = summary_channels(x, *self.summary) * 255.0
        x = (x.float() - self.mean255) * self.inv_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
