"""Where the signal lives: masks of a synthetic cohort, in prepared-cache and in model-input space.

A region is what :func:`ceusfusion.explain.sanity.energy_share` measures a map against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.ingest.cache import read_run_record
from ceusfusion.ingest.roi import crop_resize
from ceusfusion.io.mask import read_mask
from ceusfusion.models.registry import ModelRecord


def region_to_input(mask: np.ndarray, cfg: ModelRecord) -> np.ndarray:
    """A mask in prepared-cache space (S, S) -> model-input space: resized to the model's image size, centre-cropped."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    size, crop = int(cfg.image_size), int(cfg.crop)
    if m.shape[-1] != size or m.shape[-2] != size:
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    o = (size - crop) // 2
    return m[0, 0, o:o + crop, o:o + crop].numpy() > 0.5


def signal_regions(run, truth_csv, modality: str, case_ids: list[str]) -> dict[str, np.ndarray]:
    """Signal masks of a synthetic cohort (``truth.csv``: image_signal / video_signal) in prepared-cache space.

    The mask is cut and resized with the same ROI box ``prepare`` used (``keyframes.json``).
    """
    truth_csv = Path(truth_csv)
    if not truth_csv.is_file():
        raise CeusError(f"{truth_csv} not found")
    col = f"{modality}_signal"
    truth = pd.read_csv(truth_csv, dtype={"case_id": str})
    if col not in truth.columns:
        raise CeusError(f"{truth_csv}: no column {col!r} (expected the synthetic cohort's truth.csv)")
    kf_path = RunLayout(run).keyframes
    record = read_run_record(run)
    size = int(record.params["size"])
    rows = truth.set_index("case_id")
    out = {}
    for cid in case_ids:
        if cid not in rows.index or not isinstance(rows.at[cid, col], str):
            continue
        box = record.cases.get(cid, {}).get(modality, {}).get("box")
        if box is None:
            raise CaseError(cid, str(kf_path), f"no {modality} ROI box")
        m = read_mask(truth_csv.parent / rows.at[cid, col])
        if m.ndim == 3:
            m = m.any(0)
        out[cid] = crop_resize(m.astype(np.uint8) * 255, tuple(box), size) > 127
    return out
