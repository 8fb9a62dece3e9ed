"""The prepared cache as in-memory uint8 tensors: the input of training, features and explain.

Why not a per-sample Dataset with worker processes: the cohort is small (hundreds of cases of a few
256 px frames), so the whole cache fits in memory once as uint8; transforms run on whole batches
(``models.transforms``). One patient's arrays (``predict``) go through the same :func:`case_tensor`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.ingest import cache

MODALITIES = ("image", "video")


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
    prepare_fingerprint: str = ""  # of the run's prepare parameters (ingest.cache): what a model was trained on

    @property
    def size(self) -> int:
        return int(self.x.shape[-1])

    def __len__(self) -> int:
        return len(self.case_ids)


def to_chw(arr: np.ndarray, modality: str, case_id: str) -> np.ndarray:
    """A prepared array (S,S) / (S,S,3) / (T,S,S) / (T,S,S,3) -> (frames, c, S, S)."""
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


def case_tensor(a: np.ndarray, frame_channels: int, size: int | None) -> torch.Tensor:
    """(frames, c, S, S) uint8 -> (frames*frame_channels, size, size) uint8: grey replicated to colour
    (or colour averaged to grey) as the model was trained, resized when ``size`` differs."""
    if a.shape[1] == 1 and frame_channels == 3:
        a = np.repeat(a, 3, axis=1)
    elif a.shape[1] == 3 and frame_channels == 1:
        a = np.round(a.astype(np.float32).mean(axis=1, keepdims=True)).astype(np.uint8)
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # e.g. frames decoded into a read-only buffer: torch must own writable memory
        a = a.copy()
    t = torch.from_numpy(a).reshape(-1, *a.shape[2:])
    if size is not None and t.shape[-1] != size:
        t = F.interpolate(t[None].float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return t


def _indexed_cases(prepared: cache.Prepared, modality: str, case_ids: list[str] | None):
    if modality not in MODALITIES:
        raise CeusError(f"unknown modality {modality!r}; choose image or video")
    idx = prepared.index
    idx = idx[idx[f"has_{modality}"].astype(str).str.lower().isin(["1", "true", "1.0"])]
    if case_ids is not None:
        idx = idx[idx["case_id"].isin(set(case_ids))]
    if idx.empty:
        raise CeusError(f"{prepared.layout.prepared_index}: no case has a prepared {modality}")
    return idx


def _read_arrays(prepared: cache.Prepared, modality: str, ids) -> list[np.ndarray]:
    """Each case's ``modality`` as (frames, c, S, S); every case checked against the run's prepare record."""
    arrays = []
    for cid in ids:
        z = prepared.load(cid)
        if modality not in z:
            raise CaseError(cid, f"{cid}.npz", f"index says it has a {modality} but the file has no {modality!r} array")
        arrays.append(to_chw(z[modality], modality, cid))
    frames = {a.shape[0] for a in arrays}
    if len(frames) > 1:
        bad = list(ids)[[i for i, a in enumerate(arrays) if a.shape[0] != arrays[0].shape[0]][0]]
        raise CaseError(bad, f"{bad}.npz", f"has a different number of keyframes than the first case ({sorted(frames)})")
    return arrays


def frame_channels_of(arrays: list[np.ndarray], splits: np.ndarray) -> int:
    """Channels per frame the model gets: the most any training case has (all cases when none is training)."""
    train = [a for a, s in zip(arrays, splits) if s == "train"] or arrays
    return max(a.shape[1] for a in train)


def load_cached(run, modality: str, size: int | None = None, case_ids: list[str] | None = None) -> CachedSet:
    """Load every prepared case that has ``modality`` into memory (optionally resized to ``size``).

    A case whose record disagrees with the run's (an interrupted prepare with other parameters) is refused,
    one line naming the case and the parameter (``ingest.cache.check_case``).
    Grey or colour is decided by the training cases alone (a test case must not change how the model
    is built): colour when any training case is colour, grey ones then replicated; test cases are
    converted to that (colour averaged to grey when every training case is grey), as ``predict`` does.
    """
    prepared = cache.Prepared(run)
    idx = _indexed_cases(prepared, modality, case_ids)
    arrays = _read_arrays(prepared, modality, idx["case_id"])
    colour = frame_channels_of(arrays, idx["split"].astype(str).to_numpy())
    out = []
    for cid, a in zip(idx["case_id"], arrays):
        if a.shape[-1] != a.shape[-2]:
            raise CaseError(cid, f"{cid}.npz", f"{modality} is {a.shape[-2]}x{a.shape[-1]}, expected square")
        out.append(case_tensor(a, colour, size))
    sizes = {t.shape[-1] for t in out}
    if len(sizes) > 1:
        raise CeusError(f"prepared {modality} arrays have different sizes {sorted(sizes)}; pass --size to resize them")
    return CachedSet(case_ids=list(idx["case_id"]), labels=idx["label"].to_numpy(int),
                     split=idx["split"].astype(str).to_numpy(), groups=idx["group"].astype(str).to_numpy(),
                     x=torch.stack(out), frames=arrays[0].shape[0], frame_channels=colour,
                     prepare_fingerprint=prepared.record.fingerprint)
