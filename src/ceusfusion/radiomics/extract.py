"""One case's radiomics row: the still's ROI features and the CEUS keyframes' summary.

Columns: ``img_<tag>`` for the still; for the keyframes ``kf_mean_<tag>``, ``kf_sd_<tag>`` (over the
keyframes) and ``kf_peak_<tag>`` (the keyframe whose ROI is brightest: peak enhancement). Shape
features are computed only for a drawn mask: a box says nothing about the nodule's outline, so a
case without a mask gets none, and its record says why (never zeros).
"""

from __future__ import annotations

import time

import numpy as np

from ceusfusion.radiomics.ibsi import ibsi_features
from ceusfusion.radiomics.roi import CaseROIs, Plane
from ceusfusion.radiomics.settings import RadiomicsConfig
from ceusfusion.radiomics.shape import shape_features

STILL, KF_MEAN, KF_SD, KF_PEAK = "img_", "kf_mean_", "kf_sd_", "kf_peak_"


def plane_features(plane: Plane, cfg: RadiomicsConfig, spacing: float) -> dict[str, float]:
    """IBSI features of one plane, and its 2-D shape when its ROI is a drawn mask."""
    out = ibsi_features(plane.image, plane.roi, cfg, spacing)
    if plane.is_mask and "morphology" in cfg.families:
        out.update(shape_features(plane.roi, spacing))
    return out


def keyframe_summary(per_frame: list[dict[str, float]], planes: list[Plane]) -> tuple[dict[str, float], int]:
    """Mean, SD and the value at the peak keyframe (highest mean grey level in the ROI) of each feature."""
    peak = int(np.argmax([float(p.image[p.roi].mean()) for p in planes]))
    out: dict[str, float] = {}
    for tag in per_frame[0]:
        v = np.array([f.get(tag, np.nan) for f in per_frame], float)
        out[KF_MEAN + tag] = float(v.mean())
        out[KF_SD + tag] = float(v.std(ddof=1)) if v.size > 1 else 0.0
        out[KF_PEAK + tag] = float(v[peak])
    return out, peak


def case_features(rois: CaseROIs, cfg: RadiomicsConfig) -> tuple[dict[str, float], dict]:
    """(feature row, record): the record has the ROI source, spacing, why shape is absent, timings."""
    row: dict[str, float] = {}
    info: dict = {"roi_source": ";".join(f"{k}: {v}" for k, v in rois.roi_source.items()),
                  "spacing": rois.spacing, "unit": rois.unit, "n_rois": 0, "seconds": 0.0}
    t0 = time.perf_counter()
    if rois.still is not None:
        row.update({STILL + k: v for k, v in plane_features(rois.still, cfg, rois.spacing).items()})
        info["n_rois"] += 1
    if rois.keyframes:
        per = [plane_features(p, cfg, rois.spacing) for p in rois.keyframes]
        summary, peak = keyframe_summary(per, rois.keyframes)
        row.update(summary)
        info.update(n_rois=info["n_rois"] + len(per), peak_keyframe=peak)
    info["seconds"] = round(time.perf_counter() - t0, 4)
    info["shape"] = shape_note(rois, cfg)
    return row, info


def shape_note(rois: CaseROIs, cfg: RadiomicsConfig) -> str:
    """Why a case has, or has not, shape features (cases.csv)."""
    if "morphology" not in cfg.families:
        return "not asked (families)"
    planes = ([rois.still] if rois.still is not None else []) + rois.keyframes[:1]
    missing = [p.name if p.name == "still" else "keyframes" for p in planes if not p.is_mask]
    if not missing:
        return "computed from the mask"
    return f"none for {' and '.join(missing)}: the ROI is a {rois.roi_source.get('still' if 'still' in missing else 'video', 'box')}, not a mask"
