"""Ultrasound-appropriate augmentation of the contrastive views, every draw from one CPU generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ceusfusion.models.transforms import IMAGENET_MEAN, IMAGENET_STD


class UltrasoundAugment:
    """uint8 grey (B, S, S) -> normalised float (B, 3, S, S), the same input as ``train`` gives
    a pretrained single-frame model (grey replicated, ImageNet statistics).

    Ultrasound-appropriate, no colour jitter: random resized crop, flips,
    brightness/contrast, gamma, multiplicative speckle-like noise, light blur.
    Every random draw comes from ``gen`` (CPU), so a seed fixes the views.
    """

    def __init__(self, size: int, device: torch.device, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3),
                 vflip: float = 0.25, p_jitter: float = 0.8, p_gamma: float = 0.5, p_speckle: float = 0.5,
                 p_blur: float = 0.3):
        self.size, self.device = size, device
        self.scale, self.ratio, self.vflip = scale, ratio, vflip
        self.p_jitter, self.p_gamma, self.p_speckle, self.p_blur = p_jitter, p_gamma, p_speckle, p_blur
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """float (B, 1, S, S) in [0, 1] -> (B, 3, S, S) normalised."""
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """No augmentation (features for the probes)."""
        return self.normalise(x.to(self.device).float().unsqueeze(1) / 255.0)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, s = x.shape[0], self.size

        def u(lo=0.0, hi=1.0, n=b):
            return lo + (hi - lo) * torch.rand(n, generator=gen)

        area = u(*self.scale)
        logr = u(math.log(self.ratio[0]), math.log(self.ratio[1]))
        w = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
        h = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
        cx, cy = (u(-1, 1) * (1 - w)), (u(-1, 1) * (1 - h))
        fx = torch.where(u() < 0.5, -1.0, 1.0)
        fy = torch.where(u() < self.vflip, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * fx, cx
        theta[:, 1, 1], theta[:, 1, 2] = h * fy, cy
        jitter = u() < self.p_jitter
        bright = torch.where(jitter, u(-0.15, 0.15), 0.0)
        contrast = torch.where(jitter, u(0.65, 1.35), 1.0)
        gamma = torch.where(u() < self.p_gamma, torch.exp(u(math.log(0.7), math.log(1.45))), 1.0)
        speckle = torch.where(u() < self.p_speckle, u(0.05, 0.3), 0.0)
        noise = torch.randn(b, 1, s // 2, s // 2, generator=gen)
        sigma = torch.where(u() < self.p_blur, u(0.3, 1.0), 0.0)

        dev = self.device
        img = x.to(dev).float().unsqueeze(1) / 255.0
        grid = F.affine_grid(theta.to(dev), [b, 1, s, s], align_corners=False)
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        m = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - m) * contrast.to(dev).view(-1, 1, 1, 1) + m + bright.to(dev).view(-1, 1, 1, 1)
        img = img.clamp(0, 1) ** gamma.to(dev).view(-1, 1, 1, 1)
        # speckle is spatially correlated: noise at half resolution, upsampled
        n = F.interpolate(noise.to(dev), size=(s, s), mode="bilinear", align_corners=False)
        img = img * (1 + speckle.to(dev).view(-1, 1, 1, 1) * n)
        img = _blur(img, sigma.to(dev)).clamp(0, 1)
        return self.normalise(img)


def _blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur (5x5, separable; sigma 0 = identity)."""
    b = img.shape[0]
    r = torch.arange(-2, 3, device=img.device, dtype=img.dtype)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    x = img.transpose(0, 1)  # (1, B, H, W): one group per sample
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(b, 1, 1, 5), groups=b)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(b, 1, 5, 1), groups=b)
    return x.transpose(0, 1)
