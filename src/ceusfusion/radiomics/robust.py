"""The robustness filter: a feature whose value moves with the ROI's exact outline more than between
patients is noise for the model. Each perturbation of a training case's ROIs (erode and dilate by one
or two pixels, a shifted copy; a box is shifted and resized) is one more "measurement" of the case,
and features with ICC(1,1) below the threshold are dropped (Zwanenburg et al., Sci Rep 2019). Only
training cases are perturbed (a seeded draw), and no label is read.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ceusfusion.radiomics.roi import CaseROIs, Plane
from ceusfusion.radiomics.settings import RadiomicsConfig

Perturbation = tuple[str, int, tuple[int, int]]  # kind (erode, dilate, shift), pixels, shift (dy, dx)


def perturbations(cfg: RadiomicsConfig, rng: np.random.Generator) -> list[Perturbation]:
    """The perturbations of one case: erode and dilate by each of ``perturb_px``, and one seeded shift."""
    out: list[Perturbation] = [(kind, px, (0, 0)) for px in cfg.perturb_px for kind in ("erode", "dilate")]
    if cfg.jitter_px:
        d = rng.integers(-cfg.jitter_px, cfg.jitter_px + 1, size=2)
        out.append(("shift", 0, (int(d[0]), int(d[1]))))
    return out


def perturb_roi(roi: np.ndarray, p: Perturbation) -> np.ndarray:
    """One perturbed ROI; an erosion that would empty it keeps the original (a thin ROI stays measurable)."""
    kind, px, (dy, dx) = p
    if kind == "erode":
        out = ndimage.binary_erosion(roi, iterations=px)
        return out if out.sum() >= 2 else roi
    if kind == "dilate":
        return ndimage.binary_dilation(roi, iterations=px)
    return ndimage.shift(roi.astype(np.uint8), (dy, dx), order=0, mode="constant").astype(bool) | _edge(roi, dy, dx)


def _edge(roi: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Nothing, unless the shift would push the whole ROI out of the frame (then keep it where it was)."""
    shifted = np.roll(np.roll(roi, dy, axis=0), dx, axis=1)
    return roi if not shifted.any() else np.zeros_like(roi)


def perturbed(rois: CaseROIs, p: Perturbation) -> CaseROIs:
    """A copy of a case's ROIs with every plane's ROI perturbed the same way."""
    def one(pl: Plane | None) -> Plane | None:
        return None if pl is None else Plane(pl.name, pl.image, perturb_roi(pl.roi, p), pl.is_mask)

    return CaseROIs(one(rois.still), [one(k) for k in rois.keyframes], rois.roi_source, rois.spacing, rois.unit)
