"""Self-supervised contrastive pretraining of a backbone on unlabeled ultrasound video frames.

Why: ImageNet weights are often out of reach (offline hospital networks) and
natural images are far from ultrasound, while hospitals hold far more
unlabeled video than labeled cases (USCL, Chen et al. MICCAI 2021; IVPP 2024).

* Frames: each video is decoded once, streamed; at most ``frames_per_video``
  frames spread evenly in time are kept, grey, whole frame squared (zero
  padding, as ``prepare`` does without a mask) and resized to ``size``, held
  in memory as uint8.
* Pairs: two augmented views of two frames of the same video at most
  ``max_gap_s`` apart (intra-video positives); the other videos of the batch
  (and of the MoCo queue) are the negatives. Frames of the anchor's own video
  are removed from the negatives: they would be false negatives.
* Loss: NT-Xent (SimCLR) or MoCo v2 (momentum encoder, queue: many negatives
  with the small batches a CPU affords; symmetric loss, shuffled-BN emulated
  by running the key encoder on batch chunks).

Labels: pretraining never reads the label column (the manifest is read with
only ``case_id``, ``video`` and ``split``) and never touches the test split.
Labels are read only by :func:`probe`, after pretraining, on the training split.

Output: ``WEIGHTS.safetensors`` holds the encoder's state dict under
torchvision key names, with a 3-channel first convolution and no classifier:
what ``weights.load_backbone_weights`` (``train --weights``) expects; stacked
keyframe models inflate that convolution after loading. ``WEIGHTS.json`` is the
sidecar (config, videos, frames, loss history). While running,
``WEIGHTS.ckpt/`` holds the frame cache and the last epoch's checkpoint
(``resume``), removed on success.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ceusfusion.models.data import IMAGENET_MEAN, IMAGENET_STD
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import atomic_path, write_json
from ceusfusion.io.filetypes import VIDEO_SUFFIXES, full_suffix, kind_of
from ceusfusion.models.backbones import ARCHS, build_encoder
from ceusfusion.models.train import lr_at, resolve_device

log = logging.getLogger(__name__)

METHODS = ("simclr", "moco")
MANIFEST_COLUMNS = ("case_id", "video", "split")  # the only columns pretraining reads


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (saved in the sidecar; resume checks it)."""

    arch: str = "resnet18"
    size: int = 64
    epochs: int = 20
    batch_size: int = 64
    method: str = "simclr"
    frames_per_video: int = 32
    max_gap_s: float = 1.0
    seed: int = 0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    temperature: float = 0.2
    min_crop: float = 0.3  # smallest random-resized-crop area, as a share of the frame
    proj_dim: int = 128
    queue: int = 4096
    momentum: float = 0.99
    init: str = "none"  # starting weights: none, imagenet or a state-dict file
    splits: tuple = ("train",)
    device: str = "auto"

    def check(self) -> "PretrainConfig":
        if self.arch not in ARCHS:
            raise CeusError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.method not in METHODS:
            raise CeusError(f"unknown method {self.method!r}; choose simclr or moco")
        if self.size < 16:
            raise CeusError(f"--size must be at least 16 px, got {self.size}")
        for k in ("epochs", "batch_size", "frames_per_video", "queue"):
            if getattr(self, k) < (2 if k == "batch_size" else 1):
                raise CeusError(f"--{k.replace('_', '-')} must be at least {2 if k == 'batch_size' else 1}")
        if not 0.05 <= self.min_crop <= 1:
            raise CeusError(f"--min-crop must be in [0.05, 1], got {self.min_crop}")
        if self.max_gap_s < 0:
            raise CeusError(f"--max-gap-s must be >= 0, got {self.max_gap_s}")
        if not 0 <= self.momentum < 1:
            raise CeusError(f"momentum must be in [0, 1), got {self.momentum}")
        if "test" in self.splits:
            raise CeusError("pretraining never uses the test split")
        return self


# ----------------------------------------------------------------------------- which videos


def manifest_videos(cohort: str | Path, splits: tuple = ("train",)) -> list[tuple[str, Path]]:
    """(case_id, video path) of the cohort's rows in ``splits``; reads ONLY case_id, video, split.

    A manifest without a split column has no test split: every row is used.
    """
    cohort = Path(cohort)
    if not cohort.is_file():
        raise CeusError(f"{cohort}: cohort manifest not found")
    try:
        df = pd.read_csv(cohort, dtype=str, keep_default_na=False, na_values=[""],
                         usecols=lambda c: c.strip() in MANIFEST_COLUMNS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise CeusError(f"{cohort}: cannot read the manifest as CSV ({str(exc).splitlines()[0]})") from None
    df.columns = [c.strip() for c in df.columns]
    for col in ("case_id", "video"):
        if col not in df.columns:
            raise CeusError(f"{cohort}: column {col!r} is missing (pretraining needs case_id and video)")
    if "split" in df.columns:
        df = df[df["split"].fillna("").str.strip().isin(splits)]
    else:
        log.warning("%s has no split column: every case is used for pretraining", cohort)
    out = []
    for cid, rel in zip(df["case_id"], df["video"]):
        if pd.isna(rel) or not str(rel).strip():
            continue
        p = Path(str(rel).strip())
        out.append((str(cid), p if p.is_absolute() else cohort.parent / p))
    return out


def folder_videos(folder: str | Path) -> list[tuple[str, Path]]:
    """Every video under ``folder`` (recursive, any video suffix, suffix-less DICOM), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CeusError(f"--unlabeled {folder}: not a folder")
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and \
                (full_suffix(p) in VIDEO_SUFFIXES or (full_suffix(p) == "" and kind_of(p, (".dcm",)))):
            out.append((f"{folder.name}/{p.relative_to(folder).as_posix()}", p))
    return out


# ----------------------------------------------------------------------------- frames


def extract_frames(path: str | Path, size: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_frames`` grey frames evenly spread in time: (uint8 (n, size, size), times (n,)).

    Decoding is streamed; the header's frame count (or duration x fps) picks the
    frames to keep, so only those are converted and resized.
    """
    from ceusfusion.io.video import VideoStream
    from ceusfusion.ingest.prepare import crop_resize, fixed_or_whole, square_box

    frames, times = [], []
    with VideoStream(path, strict=False) as vs:
        n = vs.info.n_frames
        if not n and vs.info.duration_s and vs.info.fps:
            n = int(round(vs.info.duration_s * vs.info.fps))
        keep = None
        if n and n > max_frames:
            keep = set(np.round(np.linspace(0, n - 1, max_frames)).astype(int).tolist())
        last = max(keep) if keep else None
        box = None
        for f in vs:
            if keep is not None:
                if f.index > last:
                    break
                if f.index not in keep:
                    continue
            if box is None:
                box = square_box(fixed_or_whole(f.shape, None), 0.0)
            frames.append(crop_resize(f.luma(), box, size))
            times.append(f.time)
    if not frames:
        raise CeusError(f"{path}: video holds no decodable frame")
    if len(frames) > max_frames:  # header without a usable frame count
        idx = np.round(np.linspace(0, len(frames) - 1, max_frames)).astype(int)
        frames, times = [frames[i] for i in idx], [times[i] for i in idx]
    return np.stack(frames), np.asarray(times, np.float64)


@dataclass
class FrameBank:
    """All kept frames, sorted by video then time."""

    frames: torch.Tensor   # uint8 (N, S, S)
    times: np.ndarray      # float (N,)
    video: np.ndarray      # int (N,) index into ``videos``
    videos: list[str]      # video ids (case_id, or folder/relative path)
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.video)


def _fingerprint(videos: list[tuple[str, Path]], size: int, fpv: int) -> str:
    items = []
    for vid, p in videos:
        try:
            st = p.stat()
            items.append([vid, str(p.resolve()), st.st_size, st.st_mtime_ns])
        except OSError:
            items.append([vid, str(p), None, None])
    return hashlib.sha256(json.dumps([items, size, fpv]).encode()).hexdigest()[:16]


def build_bank(videos: list[tuple[str, Path]], size: int, frames_per_video: int, cache: Path | None = None,
               on_video: Callable[[int, int], None] | None = None) -> FrameBank:
    """Extract frames of every video; an unreadable video is skipped (listed in ``skipped``)."""
    fp = _fingerprint(videos, size, frames_per_video)
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        if meta["fingerprint"] == fp:
            return FrameBank(torch.from_numpy(z["frames"]), z["times"], z["video"], meta["videos"], meta["skipped"])
    arrays, times, vidx, ids, skipped = [], [], [], [], []
    for k, (vid, path) in enumerate(videos):
        try:
            fr, t = extract_frames(path, size, frames_per_video)
        except CeusError as exc:
            log.warning("skipped %s: %s", vid, exc)
            skipped.append({"video": vid, "problem": str(exc)})
            continue
        order = np.argsort(t, kind="stable")
        arrays.append(fr[order])
        times.append(t[order])
        vidx.append(np.full(len(t), len(ids)))
        ids.append(vid)
        if on_video:
            on_video(k + 1, len(videos))
    if not ids:
        raise CeusError("no readable video to pretrain on" + (f" ({skipped[0]['problem']})" if skipped else ""))
    bank = FrameBank(torch.from_numpy(np.concatenate(arrays)), np.concatenate(times), np.concatenate(vidx), ids, skipped)
    if cache is not None:
        meta = json.dumps({"fingerprint": fp, "videos": ids, "skipped": skipped})
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, frames=bank.frames.numpy(), times=bank.times, video=bank.video, meta=np.array(meta))
    return bank


def partner_windows(bank: FrameBank, max_gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """For each frame the index range [lo, hi) of frames of its video at most ``max_gap_s`` away."""
    lo = np.empty(len(bank), np.int64)
    hi = np.empty(len(bank), np.int64)
    starts = np.flatnonzero(np.r_[True, bank.video[1:] != bank.video[:-1]])
    ends = np.r_[starts[1:], len(bank)]
    for s, e in zip(starts, ends):
        t = bank.times[s:e]
        lo[s:e] = s + np.searchsorted(t, t - max_gap_s - 1e-9, side="left")
        hi[s:e] = s + np.searchsorted(t, t + max_gap_s + 1e-9, side="right")
    return lo, hi


def draw_partners(lo: np.ndarray, hi: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """A random other frame within each window (the frame itself when it is alone)."""
    n = len(lo)
    u = torch.rand(n, generator=gen, dtype=torch.float64).numpy()
    count = hi - lo
    r = np.floor(u * np.maximum(count - 1, 1)).astype(np.int64)
    self_pos = np.arange(n) - lo
    r = r + (r >= self_pos)
    return np.where(count > 1, lo + np.minimum(r, count - 1), np.arange(n))


# ----------------------------------------------------------------------------- augmentation


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


# ----------------------------------------------------------------------------- model and losses


class ContrastiveNet(nn.Module):
    """Backbone + MLP projection head giving unit-norm embeddings."""

    def __init__(self, encoder: nn.Module, feature_dim: int, proj_dim: int = 128, hidden: int = 512):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(feature_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(x)).float(), dim=1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, video: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR loss over 2B views; other views of the anchor's own video are not negatives."""
    n = z1.shape[0]
    z = torch.cat([z1, z2])
    v = torch.cat([video, video])
    sim = z @ z.T / temperature
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    excluded = v[:, None] == v[None, :]
    excluded[torch.arange(2 * n, device=z.device), target] = False
    sim = sim.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(sim, target)


def moco_loss(q: torch.Tensor, k: torch.Tensor, video: torch.Tensor, queue: torch.Tensor,
              queue_video: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of queries against their keys and the queue (entries of the same video masked)."""
    pos = (q * k).sum(1, keepdim=True)
    neg = (q @ queue.T).masked_fill(video[:, None] == queue_video[None, :], float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class MoCoState:
    """Momentum (key) network and the queue of past keys with their video ids."""

    def __init__(self, net: ContrastiveNet, size: int, dim: int, momentum: float, device, gen: torch.Generator):
        self.key = copy.deepcopy(net)
        for p in self.key.parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.queue = F.normalize(torch.randn(size, dim, generator=gen), dim=1).to(device)
        self.queue_video = torch.full((size,), -1, dtype=torch.long, device=device)
        self.ptr = 0

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for pk, pq in zip(self.key.parameters(), net.parameters()):
            pk.mul_(self.momentum).add_(pq.detach(), alpha=1 - self.momentum)
        for bk, bq in zip(self.key.buffers(), net.buffers()):
            bk.copy_(bq)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, chunks: int) -> torch.Tensor:
        """Key embeddings; BatchNorm sees ``chunks`` separate sub-batches (shuffled-BN emulation:
        the batch is already in random order, so each chunk is a random subset)."""
        self.key.train()
        if chunks <= 1 or len(x) < 4 * chunks:
            return self.key(x)
        return torch.cat([self.key(c) for c in torch.tensor_split(x, chunks)])

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor, video: torch.Tensor) -> None:
        n = min(len(k), len(self.queue))
        idx = (self.ptr + torch.arange(n)) % len(self.queue)
        self.queue[idx.to(self.queue.device)] = k[:n].float()
        self.queue_video[idx.to(self.queue.device)] = video[:n]
        self.ptr = int((self.ptr + n) % len(self.queue))


# ----------------------------------------------------------------------------- training


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def ckpt_dir(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")


def probe_path(out: Path) -> Path:
    return out.with_suffix(".probe.json")


def _cfg_json(cfg: PretrainConfig) -> dict:
    d = asdict(cfg)
    d["splits"] = list(cfg.splits)
    return d


def pretrain(videos: list[tuple[str, Path]], out: str | Path, cfg: PretrainConfig, resume: bool = False,
             overwrite: bool = False, on_epoch: Callable[[dict], None] | None = None,
             max_epochs_this_call: int | None = None, sources: dict | None = None,
             probe_cohort: str | Path | None = None) -> dict | None:
    """Contrastive pretraining on the frames of ``videos``; writes ``out`` and its sidecar.

    Returns the sidecar dict, or None when ``max_epochs_this_call`` stopped it
    early (continue with ``resume=True``). ``probe_cohort``: afterwards, run
    :func:`probe` on that cohort's training labels (``<out>.probe.json``).
    """
    cfg.check()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise CeusError(f"--out {out}: the weights file must end in .safetensors")
    ck = ckpt_dir(out)
    if out.exists() and not overwrite:
        if resume and not (ck / "last.pt").is_file():
            log.info("%s is complete; nothing to resume", out)
            return json.loads(sidecar_path(out).read_text()) if sidecar_path(out).is_file() else None
        raise CeusError(f"{out} exists; pass --overwrite to replace it")
    if overwrite and ck.exists() and not resume:
        shutil.rmtree(ck)
    if not videos:
        raise CeusError("no video to pretrain on (training split of the cohort and --unlabeled folders are empty)")
    device = resolve_device(cfg.device)
    det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        return _pretrain(videos, out, ck, cfg, device, resume, on_epoch, max_epochs_this_call, sources or {},
                         probe_cohort)
    finally:
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])


def _pretrain(videos, out, ck, cfg, device, resume, on_epoch, max_epochs_this_call, sources,
              probe_cohort) -> dict | None:
    t_start = time.perf_counter()
    ck.mkdir(parents=True, exist_ok=True)
    bank = build_bank(videos, cfg.size, cfg.frames_per_video, cache=ck / "frames.npz")
    if len(bank.videos) < 2:
        raise CeusError(f"contrastive pretraining needs at least 2 readable videos, got {len(bank.videos)}")
    lo, hi = partner_windows(bank, cfg.max_gap_s)
    n = len(bank)
    bsz = min(cfg.batch_size, n)
    starts = [s for s in range(0, n, bsz) if min(bsz, n - s) >= 2]
    total, warm = cfg.epochs * len(starts), int(round(cfg.warmup_epochs * len(starts)))

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 17)
    enc, dim, used = build_encoder(cfg.arch, 3, cfg.init)
    net = ContrastiveNet(enc, dim, cfg.proj_dim).to(device)
    cuda = device.type == "cuda"
    if cuda:
        net = net.to(memory_format=torch.channels_last)
    moco = MoCoState(net, min(cfg.queue, max(bsz, n)), cfg.proj_dim, cfg.momentum, device, gen) \
        if cfg.method == "moco" else None
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and not torch.cuda.is_bf16_supported())
    state = {"epoch": 0, "step": 0, "history": []}
    frames = bank.frames.to(device) if cuda else bank.frames
    video_t = torch.as_tensor(bank.video, dtype=torch.long, device=device)

    last = ck / "last.pt"
    if resume and last.is_file():
        c = torch.load(last, map_location="cpu", weights_only=True)
        if c["config"] != {k: v for k, v in _cfg_json(cfg).items() if k not in ("epochs", "device")}:
            diff = [k for k, v in c["config"].items() if _cfg_json(cfg).get(k) != v]
            raise CeusError(f"{last}: cannot resume, the settings differ ({', '.join(diff)}); "
                            f"remove {ck} or pass the same options")
        net.load_state_dict(c["net"])
        opt.load_state_dict(c["optim"])
        torch.set_rng_state(c["rng"])
        gen.set_state(c["gen"])
        if moco is not None:
            moco.key.load_state_dict(c["key"])
            moco.queue.copy_(c["queue"])
            moco.queue_video.copy_(c["queue_video"])
            moco.ptr = int(c["queue_ptr"])
        state = {"epoch": int(c["epoch"]), "step": int(c["step"]), "history": json.loads(c["history"])}
        log.info("resumed after epoch %d", state["epoch"])

    aug = UltrasoundAugment(cfg.size, device, scale=(cfg.min_crop, 1.0))
    done_this_call = 0
    while state["epoch"] < cfg.epochs:
        if max_epochs_this_call is not None and done_this_call >= max_epochs_this_call:
            return None
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(n, generator=gen)
        partner = torch.as_tensor(draw_partners(lo, hi, gen))
        tot, count = 0.0, 0
        for s in starts:
            a = perm[s:s + bsz]
            b = partner[a]
            v = video_t[a.to(device)]
            x1 = aug(frames[a.to(frames.device)], gen)
            x2 = aug(frames[b.to(frames.device)], gen)
            if cuda:
                x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"], total, warm, cfg.lr)
            # mixed precision (CUDA only) for the networks; the losses in float32
            if moco is None:
                with _autocast(device):
                    z = net(torch.cat([x1, x2])).float()  # one pass: BatchNorm sees both views
                loss = nt_xent(z[:len(a)], z[len(a):], v, cfg.temperature)
            else:
                with _autocast(device):
                    q1, q2 = net(x1).float(), net(x2).float()
                    moco.update(net)
                    k1, k2 = moco.keys(x1, 2).float(), moco.keys(x2, 2).float()
                loss = 0.5 * (moco_loss(q1, k2, v, moco.queue, moco.queue_video, cfg.temperature)
                              + moco_loss(q2, k1, v, moco.queue, moco.queue_video, cfg.temperature))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if moco is not None:
                moco.enqueue(k2, v)
            state["step"] += 1
            tot += float(loss.detach()) * len(a)
            count += len(a)
        state["epoch"] += 1
        done_this_call += 1
        rec = {"epoch": state["epoch"], "loss": tot / max(1, count), "lr": opt.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - t0, 2), "frames": n}
        state["history"].append(rec)
        ckpt = {"config": {k: v for k, v in _cfg_json(cfg).items() if k not in ("epochs", "device")},
                "net": net.state_dict(), "optim": opt.state_dict(), "rng": torch.get_rng_state(),
                "gen": gen.get_state(), "epoch": state["epoch"], "step": state["step"],
                "history": json.dumps(state["history"])}
        if moco is not None:
            ckpt.update(key=moco.key.state_dict(), queue=moco.queue.cpu(), queue_video=moco.queue_video.cpu(),
                        queue_ptr=moco.ptr)
        with atomic_path(last) as tmp:
            torch.save(ckpt, tmp)
        log.info("epoch %d/%d loss %.4f (%.1f s)", state["epoch"], cfg.epochs, rec["loss"], rec["seconds"])
        if on_epoch:
            on_epoch(rec)

    sd = {k: v.detach().cpu().contiguous() for k, v in net.encoder.state_dict().items()}
    from safetensors.torch import save_file

    with atomic_path(out) as tmp:
        save_file(sd, str(tmp), metadata={"arch": cfg.arch, "producer": "ceusfusion pretrain",
                                          "method": cfg.method, "size": str(cfg.size)})
    side = {"weights": str(out), "arch": cfg.arch, "size": cfg.size, "method": cfg.method, "epochs": cfg.epochs,
            "seed": cfg.seed, "config": _cfg_json(cfg), "init_weights_used": used, "device": device.type,
            "n_videos": len(bank.videos), "n_frames": n, "steps_per_epoch": len(starts),
            "videos_skipped": bank.skipped, "sources": sources, "videos": bank.videos,
            "loss_history": state["history"], "seconds_this_call": round(time.perf_counter() - t_start, 1),
            "labels_read": False, "test_split_used": False,
            "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                              "note": "grey replicated to 3 channels; train --weights FILE uses the same"}}
    if probe_cohort is not None:  # labels are read here, after pretraining, and only here
        side["probe"] = probe(probe_cohort, out, cfg.arch, cfg.size, cfg.frames_per_video, cfg.seed, cfg.device,
                              cfg.splits, probe_path(out), bank=bank)
    write_json(sidecar_path(out), side)
    shutil.rmtree(ck, ignore_errors=True)
    return side


def collect_videos(cohort: str | Path | None, unlabeled: list | None = None,
                   splits: tuple = ("train",)) -> tuple[list[tuple[str, Path]], dict]:
    """Videos of the cohort's training split plus every video under the ``unlabeled`` folders (deduplicated)."""
    videos, sources = [], {}
    if cohort is not None:
        vs = manifest_videos(cohort, splits)
        videos += vs
        sources["cohort"] = {"manifest": str(cohort), "splits": list(splits), "videos": len(vs)}
    for d in unlabeled or []:
        vs = folder_videos(d)
        videos += vs
        sources.setdefault("unlabeled", []).append({"folder": str(d), "videos": len(vs)})
    seen, uniq = set(), []
    for vid, p in videos:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            uniq.append((vid, p))
    return uniq, sources


# ----------------------------------------------------------------------------- probes


def load_pretrained_encoder(weights: str | Path, arch: str) -> nn.Module:
    """The encoder (3-channel input, no head) with the pretrained weights, through ``weights.py``."""
    enc, _, _ = build_encoder(arch, 3, str(weights))
    return enc


@torch.no_grad()
def video_features(encoder: nn.Module, bank: FrameBank, device: torch.device, batch: int = 256) -> np.ndarray:
    """Mean frame feature of each video of the bank (n_videos, dim), frozen encoder in eval mode."""
    encoder = encoder.to(device).eval()
    aug = UltrasoundAugment(int(bank.frames.shape[-1]), device)
    feats = []
    for s in range(0, len(bank), batch):
        with _autocast(device):
            feats.append(encoder(aug.plain(bank.frames[s:s + batch])).float().cpu())
    f = torch.cat(feats).numpy()
    return np.stack([f[bank.video == k].mean(0) for k in range(len(bank.videos))])


def probe_labels(cohort: str | Path, splits: tuple = ("train",)) -> pd.DataFrame:
    """case_id, label, group of the training split: the ONLY reading of labels, for the probes."""
    from ceusfusion.ingest.cohort import groups_of, read_manifest

    df = read_manifest(cohort)
    if "label" not in df.columns:
        raise CeusError(f"{cohort}: --probe needs a label column")
    if "split" in df.columns:
        df = df[df["split"].fillna("").str.strip().isin(splits)]
    df = df.assign(group=groups_of(df))
    bad = df[~df["label"].astype(str).str.strip().isin(["0", "1", "0.0", "1.0"])]
    if len(bad):
        r = bad.iloc[0]
        raise CeusError(f"{cohort}: case {r['case_id']}, column label: must be 0 or 1 for --probe, got {r['label']!r}")
    return pd.DataFrame({"case_id": df["case_id"].astype(str), "label": df["label"].astype(float).astype(int),
                         "group": df["group"].astype(str)})


def grouped_probe_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0,
                      knn_k: int = 5) -> dict:
    """Linear (logistic regression) and k-NN probes, stratified grouped K-fold CV AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = min(folds, *(len(set(groups[y == c])) for c in (0, 1)))
    if k < 2:
        raise CeusError("--probe needs at least 2 patient groups of each label in the training split")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    res = {}
    models = {"linear": lambda n: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)),
              "knn": lambda n: KNeighborsClassifier(n_neighbors=min(knn_k, n), metric="cosine", weights="distance")}
    for name, make in models.items():
        oof = np.zeros(len(y))
        fold_auc = []
        for tr, va in cv.split(x, y, groups):
            m = make(len(tr))
            m.fit(x[tr], y[tr])
            oof[va] = m.predict_proba(x[va])[:, 1]
            if len(np.unique(y[va])) == 2:
                fold_auc.append(float(roc_auc_score(y[va], oof[va])))
        res[name] = {"oof_auc": float(roc_auc_score(y, oof)), "fold_auc_mean": float(np.mean(fold_auc)) if fold_auc else None,
                     "fold_auc": fold_auc}
    res["folds"] = k
    return res


def probe(cohort: str | Path, weights: str | Path, arch: str, size: int, frames_per_video: int,
          seed: int = 0, device: str = "auto", splits: tuple = ("train",), out_json: str | Path | None = None,
          bank: FrameBank | None = None) -> dict:
    """Representation quality of pretrained weights vs random init, on the training split's labels.

    ``bank``: frames already extracted (by :func:`pretrain`); videos not in the
    cohort's training split (``--unlabeled`` ones) are ignored.
    """
    dev = resolve_device(device)
    if bank is None:
        bank = build_bank(manifest_videos(cohort, splits), size, frames_per_video)
    labels = probe_labels(cohort, splits).set_index("case_id")
    keep = [i for i, v in enumerate(bank.videos) if v in labels.index]
    if len(keep) < 4:
        raise CeusError(f"{cohort}: --probe needs labeled training videos, found {len(keep)}")
    ids = [bank.videos[i] for i in keep]
    y = labels.loc[ids, "label"].to_numpy(int)
    g = labels.loc[ids, "group"].to_numpy(str)
    if len(np.unique(y)) < 2:
        raise CeusError(f"{cohort}: --probe needs both labels among the training videos")
    torch.manual_seed(seed)
    rand_enc, _, _ = build_encoder(arch, 3, "none")
    result = {"weights": str(weights), "arch": arch, "size": size, "n_videos": len(ids), "n_positive": int(y.sum()),
              "unit": "video (mean frame feature of the frozen encoder)", "cv": "stratified grouped K-fold",
              "seed": seed}
    for name, enc in (("pretrained", load_pretrained_encoder(weights, arch)), ("random_init", rand_enc)):
        x = video_features(enc, bank, dev)[keep]
        result[name] = grouped_probe_auc(x, y, g, seed=seed)
        log.info("probe %s: linear AUC %.3f, k-NN AUC %.3f (%d videos)", name, result[name]["linear"]["oof_auc"],
                 result[name]["knn"]["oof_auc"], len(ids))
    if out_json is not None:
        write_json(out_json, result)
    return result
