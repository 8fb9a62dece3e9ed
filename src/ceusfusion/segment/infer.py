"""Masks from the fold models: box-prompted and automatic, with flip TTA, the folds' agreement as confidence.

Box-prompted (TN-SCUI's second stage, MedSAM's prompt): the square around the box with context, the
box also given as the prompt channel. Automatic (the first stage): the whole frame without a prompt;
the largest component's box then goes through the box-prompted step (the cascade). Each fold model
sees the picture and its mirror image (flip TTA); the mask is the fold mean above 0.5, its largest
component with holes filled. ``agreement`` is the mean Dice of each fold's own mask with that mask:
low when the folds disagree, which flags the case for review.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ceusfusion.core.errors import CeusError
from ceusfusion.core.runtime import autocast
from ceusfusion.ingest.roi import Box, bbox
from ceusfusion.segment.boxes import context_region, whole_region
from ceusfusion.segment.metrics import dice
from ceusfusion.segment.net import for_inference
from ceusfusion.segment.sampling import View, inputs, paste


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Segmenter:
    """The fold models and how they see a picture. ``fast`` (the default) runs each as
    ``net.for_inference`` makes it (BatchNorm folded, channels-last): the same masks up to float rounding;
    ``fast=False`` runs the models as given (the reference path of the bench and the tests).
    ``precision="bfloat16"`` (opt-in, fast path only) runs them in bfloat16: fewer CPU seconds where the CPU
    has bfloat16 units (AVX512-BF16, AMX), slightly different masks (BENCHMARKS.md measures both)."""

    nets: list[nn.Module]
    size: int
    context: float
    mean: float
    std: float
    device: torch.device
    fast: bool = True
    precision: str = "float32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise CeusError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.precision != "float32" and not self.fast:
            raise CeusError("precision bfloat16 runs on the fast path only (fast=True)")
        if self.fast:
            dtype = PRECISIONS[self.precision]
            self.nets = [for_inference(n, self.size).to(dtype) for n in self.nets]


@dataclass
class Result:
    mask: np.ndarray  # (H, W) bool
    prob: np.ndarray  # (H, W) float32, the fold mean
    agreement: float  # mean Dice of each fold's mask with ``mask`` (1.0 with one model)
    box: Box | None  # the box the mask was refined in (the user's, or the automatic first look's)


def normalise(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The grey channel in the encoder's statistics; the prompt channel stays 0/1."""
    return torch.cat([(x[:, :1] - mean) / std, x[:, 1:]], dim=1)


@torch.inference_mode()
def fold_probs(seg: Segmenter, x: torch.Tensor) -> torch.Tensor:
    """(K, S, S) probabilities of each fold model for one (2, S, S) input, averaged with its mirror image
    (both in one batch)."""
    batch = normalise(torch.stack([x, x.flip(-1)]), seg.mean, seg.std).to(seg.device)
    if seg.fast:
        batch = batch.to(PRECISIONS[seg.precision]).contiguous(memory_format=torch.channels_last)
    out = []
    for net in seg.nets:
        with autocast(seg.device):
            p = torch.sigmoid(net(batch).float())[:, 0].cpu()
        out.append((p[0] + p[1].flip(-1)) / 2)
    return torch.stack(out)


def largest_component(m: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a mask, holes filled (a nodule is one solid region)."""
    lab, n = ndimage.label(m, structure=np.ones((3, 3)))
    if n == 0:
        return m.astype(bool)
    sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))


def look(seg: Segmenter, frame: np.ndarray, view: View, box: Box | None) -> np.ndarray:
    """(K, H, W): each fold's probability over the frame for one view."""
    x, _ = inputs(frame, view, box, seg.size)
    return paste(fold_probs(seg, x), view, frame.shape[:2])


def combine(probs: np.ndarray, box: Box | None) -> Result:
    mean = probs.mean(axis=0)
    mask = largest_component(mean > 0.5)
    agree = float(np.mean([dice(p > 0.5, mask) for p in probs])) if len(probs) > 1 else 1.0
    return Result(mask, mean.astype(np.float32), agree, box)


def segment_box(seg: Segmenter, frame: np.ndarray, box: Box) -> Result:
    """The mask inside the square around ``box`` (with context), prompted by the box."""
    return combine(look(seg, frame, View(*context_region(box, seg.context)), box), box)


def segment_auto(seg: Segmenter, frame: np.ndarray) -> Result:
    """The whole frame first; the box of what it finds is then refined like a user's box."""
    first = combine(look(seg, frame, View(*whole_region(frame.shape[:2])), None), None)
    found = bbox(first.mask)
    if found is None:
        return first
    return segment_box(seg, frame, found)


def segment(seg: Segmenter, frame: np.ndarray, box: Box | None) -> tuple[Result, str]:
    """(result, mode): box-prompted where the case has a box, automatic otherwise."""
    if box is not None:
        return segment_box(seg, frame, box), "box"
    return segment_auto(seg, frame), "auto"
