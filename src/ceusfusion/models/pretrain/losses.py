"""The contrastive network and its losses: NT-Xent (SimCLR) and MoCo v2 (momentum key encoder and
a queue of past keys). Frames of the anchor's own video are never negatives."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


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

    def tensors(self) -> dict[str, torch.Tensor]:
        """The key encoder (``key.<name>``) and the queue, as checkpoint tensors (``ptr`` goes in the JSON state)."""
        out = {f"key.{k}": v for k, v in self.key.state_dict().items()}
        out.update(queue=self.queue, queue_video=self.queue_video)
        return out

    def load(self, tensors: dict[str, torch.Tensor], ptr: int) -> None:
        """Inverse of :meth:`tensors`; a missing or misshapen tensor raises (the caller names the file)."""
        self.key.load_state_dict({k[len("key."):]: v for k, v in tensors.items() if k.startswith("key.")})
        for name, buf in (("queue", self.queue), ("queue_video", self.queue_video)):
            src = tensors[name]
            if src.shape != buf.shape or src.dtype != buf.dtype:
                raise ValueError(f"{name} is {tuple(src.shape)} {src.dtype}, expected {tuple(buf.shape)} {buf.dtype}")
            buf.copy_(src)
        if not 0 <= int(ptr) < len(self.queue):
            raise ValueError(f"queue pointer {ptr} outside the queue")
        self.ptr = int(ptr)
