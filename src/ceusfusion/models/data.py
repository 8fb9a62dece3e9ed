"""The prepared cache as in-memory uint8 tensors, and batch transforms done in torch.

Why not a per-sample Dataset with worker processes: the cohort is small
(hundreds of cases of a few 256 px frames), so the whole cache fits in memory
once as uint8, and random crops/flips on a whole batch in torch cost far less
than a training step. The input pipeline is never the bottleneck
(``bench/train_throughput.py``).

Channel layout: a still gives 1 (grey) or 3 channels; keyframes give T or 3T
channels, frame-major (frame t owns channels t*c .. t*c+c-1), so ``stack`` and
``temporal`` models read the same tensor. ``summary`` models get 3 channels
computed from it per batch (:func:`summary_channels`), after crop and flips so
augmentation is the same for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ceusfusion.ingest import cache
from ceusfusion.core.errors import CaseError, CeusError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODALITY_KEY = {"image": "image", "video": "video"}
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance of colour frames
SUMMARY_CHANNELS = ("mean", "std", "dynamic image")


@dataclass
class CachedSet:
    """Every prepared case of one modality: arrays (N, C, S, S) uint8 plus the index columns."""

    case_ids: list[str]
    labels: np.ndarray   # int (N,)
    split: np.ndarray    # str (N,)
    groups: np.ndarray   # str (N,)
    x: torch.Tensor      # uint8 (N, frames*frame_channels, S, S)
    frames: int
    frame_channels: int

    @property
    def size(self) -> int:
        return int(self.x.shape[-1])

    def __len__(self) -> int:
        return len(self.case_ids)


def _to_chw(arr: np.ndarray, modality: str, case_id: str) -> np.ndarray:
    """(S,S) / (S,S,3) / (T,S,S) / (T,S,S,3) -> (frames, c, S, S)."""
    if arr.dtype != np.uint8:
        raise CaseError(case_id, f"{case_id}.npz", f"{modality} array is {arr.dtype}, expected uint8")
    if modality == "image":
        if arr.ndim == 2:
            return arr[None, None]
        if arr.ndim == 3 and arr.shape[-1] == 3:
            return arr.transpose(2, 0, 1)[None]
    else:
        if arr.ndim == 3:
            return arr[:, None]
        if arr.ndim == 4 and arr.shape[-1] == 3:
            return arr.transpose(0, 3, 1, 2)
    raise CaseError(case_id, f"{case_id}.npz", f"{modality} array has shape {arr.shape}, not a grey or RGB {modality}")


def load_cached(run, modality: str, size: int | None = None, case_ids: list[str] | None = None) -> CachedSet:
    """Load every prepared case that has ``modality`` into memory (optionally resized to ``size``).

    Mixed grey/colour cases are made colour by replicating the grey ones.
    """
    if modality not in MODALITY_KEY:
        raise CeusError(f"unknown modality {modality!r}; choose image or video")
    idx = cache.read_index(run)
    has = idx[f"has_{modality}"].astype(str).str.lower().isin(["1", "true", "1.0"])
    idx = idx[has]
    if case_ids is not None:
        idx = idx[idx["case_id"].isin(set(case_ids))]
    if idx.empty:
        raise CeusError(f"{cache.prepared_dir(run)}/index.csv: no case has a prepared {modality}")
    arrays = []
    for cid in idx["case_id"]:
        z = cache.load_case(run, cid)
        if MODALITY_KEY[modality] not in z:
            raise CaseError(cid, f"{cid}.npz", f"index says it has a {modality} but the file has no {modality!r} array")
        arrays.append(_to_chw(z[MODALITY_KEY[modality]], modality, cid))
    frames = {a.shape[0] for a in arrays}
    if len(frames) > 1:
        bad = idx["case_id"].iloc[[i for i, a in enumerate(arrays) if a.shape[0] != arrays[0].shape[0]][0]]
        raise CaseError(bad, f"{bad}.npz", f"has a different number of keyframes than the first case ({sorted(frames)})")
    colour = max(a.shape[1] for a in arrays)
    out = []
    for cid, a in zip(idx["case_id"], arrays):
        if a.shape[1] != colour:
            a = np.repeat(a, colour, axis=1)
        t = torch.from_numpy(np.ascontiguousarray(a)).reshape(-1, *a.shape[2:])
        if t.shape[-1] != t.shape[-2]:
            raise CaseError(cid, f"{cid}.npz", f"{modality} is {t.shape[-2]}x{t.shape[-1]}, expected square")
        if size is not None and t.shape[-1] != size:
            t = F.interpolate(t[None].float(), size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        out.append(t)
    sizes = {t.shape[-1] for t in out}
    if len(sizes) > 1:
        raise CeusError(f"prepared {modality} arrays have different sizes {sorted(sizes)}; pass --size to resize them")
    return CachedSet(case_ids=list(idx["case_id"]), labels=idx["label"].to_numpy(int),
                     split=idx["split"].astype(str).to_numpy(), groups=idx["group"].astype(str).to_numpy(),
                     x=torch.stack(out), frames=arrays[0].shape[0], frame_channels=colour)


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


def normalisation(input_mode: str, frames: int, frame_channels: int, pretrained: bool) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the model input: ImageNet statistics when pretrained, else identity.

    Grey channels that are not replicated to RGB use the mean of the RGB statistics.
    """
    if input_mode in ("single", "summary"):
        c = 3
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    elif frame_channels == 3:
        c = 3 * frames
        mean, std = list(IMAGENET_MEAN) * frames, list(IMAGENET_STD) * frames
    else:
        c = frames
        mean, std = [float(np.mean(IMAGENET_MEAN))] * frames, [float(np.mean(IMAGENET_STD))] * frames
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
                 pretrained: bool, device: torch.device | str = "cpu", channels_last: bool = False):
        if crop > size:
            raise CeusError(f"crop {crop} is larger than the image size {size}")
        self.crop, self.size = crop, size
        self.replicate = input_mode == "single" and frame_channels == 1
        self.summary = (frames, frame_channels) if input_mode == "summary" else None
        self.device = torch.device(device)
        mean, std = normalisation(input_mode, frames, frame_channels, pretrained)
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
