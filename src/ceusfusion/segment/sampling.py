"""From a frame to the network's square input and back, with the augmentations of training.

One affine map does every spatial step: a square region of the frame (centre, side), optionally
rotated, scaled and mirrored, is sampled onto an S x S grid (``torch.nn.functional.grid_sample``),
for the image, the mask and the box prompt alike; ``paste`` samples the network's output back onto
the frame's own pixels. Coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``.
The intensity augmentations follow nnU-Net's defaults (gamma, contrast, brightness, noise, blur).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

from ceusfusion.ingest.roi import Box


@dataclass(frozen=True)
class View:
    """A square region of a frame as the network sees it: centre, side (pixels), rotation (radians),
    scale (> 1 shows more of the frame) and a left-right mirror."""

    cy: float
    cx: float
    side: float
    angle: float = 0.0
    scale: float = 1.0
    flip: bool = False


def grid(view: View, shape: tuple[int, int], size: int) -> torch.Tensor:
    """The (1, S, S, 2) sampling grid of ``view`` in the frame's normalised coordinates."""
    h, w = shape
    c, s = np.cos(view.angle), np.sin(view.angle)
    half = view.side / 2.0 * view.scale
    a = half * np.array([[c, -s], [s, c]]) @ np.diag([-1.0 if view.flip else 1.0, 1.0])
    theta = np.array([[2 * a[0, 0] / w, 2 * a[0, 1] / w, 2 * view.cx / w - 1],
                      [2 * a[1, 0] / h, 2 * a[1, 1] / h, 2 * view.cy / h - 1]], dtype=np.float32)
    return F.affine_grid(torch.from_numpy(theta)[None], [1, 1, size, size], align_corners=False)


def sample(frame: np.ndarray, g: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """(S, S) float: ``frame`` (H, W) sampled at grid ``g``, zero outside the frame."""
    t = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))[None, None]
    return F.grid_sample(t, g, mode=mode, padding_mode="zeros", align_corners=False)[0, 0]


def box_prompt(box: Box | None, g: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(S, S) float: 1 where the grid point falls inside ``box`` (the prompt channel), all 0 without a box."""
    size = g.shape[1]
    if box is None:
        return torch.zeros(size, size)
    h, w = shape
    x = (g[0, ..., 0] + 1) * w / 2
    y = (g[0, ..., 1] + 1) * h / 2
    y0, x0, y1, x1 = box
    return ((x >= x0) & (x < x1) & (y >= y0) & (y < y1)).float()


def inputs(frame: np.ndarray, view: View, box: Box | None, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's (2, S, S) input for ``view`` (grey in [0, 1], box prompt) and its grid."""
    g = grid(view, frame.shape[:2], size)
    return torch.stack([sample(frame, g) / 255.0, box_prompt(box, g, frame.shape[:2])]), g


def paste(prob: torch.Tensor, view: View, shape: tuple[int, int]) -> np.ndarray:
    """The (S, S) output of an unrotated, unmirrored ``view`` sampled back onto the frame: (H, W) float,
    zero outside the view; a stack (K, S, S) gives (K, H, W) in one call."""
    if prob.ndim == 3:
        return paste_stack(prob, view, shape)
    return paste_stack(prob[None], view, shape)[0]


def paste_stack(prob: torch.Tensor, view: View, shape: tuple[int, int]) -> np.ndarray:
    """:func:`paste` of (K, S, S) outputs: (K, H, W), one grid_sample for all K."""
    h, w = shape
    half = view.side / 2.0 * view.scale
    y0, y1 = max(0, int(np.floor(view.cy - half))), min(h, int(np.ceil(view.cy + half)))
    x0, x1 = max(0, int(np.floor(view.cx - half))), min(w, int(np.ceil(view.cx + half)))
    out = np.zeros((len(prob), h, w), np.float32)
    if y1 <= y0 or x1 <= x0:
        return out
    ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5 - view.cy) / half
    xs = (torch.arange(x0, x1, dtype=torch.float32) + 0.5 - view.cx) / half
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    g = torch.stack([gx, gy], dim=-1)[None]
    out[:, y0:y1, x0:x1] = F.grid_sample(prob[None].float(), g, mode="bilinear", padding_mode="zeros",
                                         align_corners=False)[0].numpy()
    return out


def random_view(region: tuple[float, float, float], rng: np.random.Generator, shift: float = 0.0) -> View:
    """A training view of a region: rotation up to 15 degrees (half the time), scale 0.85-1.25, a mirror half
    the time, and a shift of up to ``shift`` x the side (nnU-Net's spatial augmentation, gentler rotations:
    ultrasound has a fixed up and down)."""
    cy, cx, side = region
    angle = float(rng.uniform(-np.pi / 12, np.pi / 12)) if rng.random() < 0.5 else 0.0
    dy, dx = rng.uniform(-shift, shift, 2) * side
    return View(cy + dy, cx + dx, side, angle, float(rng.uniform(0.85, 1.25)), bool(rng.random() < 0.5))


def augment_intensity(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """nnU-Net-like intensity augmentation of a batch's grey channel (B, 1, S, S) in [0, 1], per sample."""
    out = []
    for img in x:
        u = torch.rand(6, generator=gen)
        v = torch.rand(4, generator=gen)
        if u[0] < 0.3:
            img = img.clamp(min=0) ** float(0.7 + 0.8 * v[0])
        if u[1] < 0.15:
            m = img.mean()
            img = (img - m) * float(0.75 + 0.5 * v[1]) + m
        if u[2] < 0.15:
            img = img * float(0.75 + 0.5 * v[2])
        if u[3] < 0.2:
            img = gaussian_blur(img, [5, 5], [float(0.5 + 0.5 * v[3])])
        if u[4] < 0.1:
            img = img + torch.randn(img.shape, generator=gen) * float(0.05 * u[5])
        out.append(img.clamp(0, 1))
    return torch.stack(out)
