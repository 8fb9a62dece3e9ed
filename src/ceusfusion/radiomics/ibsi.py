"""IBSI features of one 2-D ROI, computed by MIRP (Zwanenburg et al., the authors of IBSI).

Why MIRP and not pyradiomics: pyradiomics ships no wheel for Python 3.11 and its source releases do
not build here (3.1.0's metadata says 3.0.1a1; 3.0.1's build needs numpy before it can declare it);
it lacks GLDZM and the IBSI NGLDM, and several of its defaults differ from IBSI. MIRP installs from
wheels, is pure Python, computes every IBSI 1 family with the 2-D aggregations ("2D averaged", "2D
slice-merged"), and is tested by its authors against the IBSI reference values; we test it again on
the IBSI digital phantom (tests/radiomics/test_ibsi_phantom.py).

What IBSI does not give a 2-D ROI, named rather than faked: IBSI 1 defines morphology on the 3-D
mesh of a volume and local intensity on a 1 cm³ sphere, neither of which a single ultrasound plane
has (``MISSING``). The 2-D shape of the ROI (area, perimeter, taller-than-wide, ...) is computed in
``radiomics.shape`` and listed in ``NOT_IBSI``.
"""

from __future__ import annotations

import logging
import re
import warnings
from contextlib import contextmanager

import numpy as np

from ceusfusion.core.errors import CeusError
from ceusfusion.radiomics.settings import RadiomicsConfig

MIRP_FAMILY = {"intensity": "st", "histogram": "ih", "ivh": "ivh", "glcm": "cm", "glrlm": "rlm", "glszm": "szm",
               "gldzm": "dzm", "ngtdm": "ngtdm", "ngldm": "ngldm"}
TAG_FAMILY = {"stat": "intensity", "ih": "histogram", "ivh": "ivh", "cm": "glcm", "rlm": "glrlm", "szm": "glszm",
              "dzm": "gldzm", "ngt": "ngtdm", "ngl": "ngldm", "shape2d": "morphology"}
MISSING = {
    "morphology (IBSI 3-D)": "IBSI 1 defines morphology on the mesh of a 3-D volume; one ultrasound plane has none "
                             "(the 2-D shape features in NOT_IBSI describe the outline instead)",
    "local intensity": "IBSI 1 defines the intensity peak over a 1 cm³ sphere, a 3-D neighbourhood",
}
NOT_IBSI = ("shape2d_area", "shape2d_perimeter", "shape2d_major_axis", "shape2d_minor_axis", "shape2d_elongation",
            "shape2d_eccentricity", "shape2d_circularity", "shape2d_solidity", "shape2d_extent", "shape2d_feret_max",
            "shape2d_taller_than_wide")
# MIRP's extra intensity-volume histogram points (IBSI defines V10, V90, I10, I90 and their differences):
# left out, so that every emitted feature has an IBSI definition or is listed in NOT_IBSI
MIRP_EXTRAS = ("ivh_v25", "ivh_v50", "ivh_v75", "ivh_i25", "ivh_i50", "ivh_i75", "ivh_diff_v25_v75", "ivh_diff_i25_i75")
# MIRP has no ultrasound image type. Its generic type silently replaces "no IVH discretisation" with
# 1000 bins (the IVH's intensities become bin numbers); its CT type keeps the grey levels, rounds
# intensities to integers (nothing to do for 8-bit ultrasound) and, for a fixed bin width without a
# re-segmentation range, would start the bins at -1000 HU: we then give it the 8-bit range.
MIRP_MODALITY = "ct"
GREY_RANGE = (0.0, 255.0)
_SUFFIX = re.compile(r"_(fbn|fbs)_[a-z]*[0-9.]+$")  # the discretisation: recorded once, in the settings


def family_of(tag: str) -> str:
    """The IBSI family of a feature tag (``cm_joint_max_d1_2d_avg`` -> glcm)."""
    return TAG_FAMILY.get(tag.split("_", 1)[0], "other")


def mirp_settings(cfg: RadiomicsConfig, spacing: float) -> dict:
    """MIRP's keyword settings for one 2-D plane (slice-wise, IBSI-compliant, no interpolation)."""
    fams = [MIRP_FAMILY[f] for f in cfg.families if f in MIRP_FAMILY]
    kw = dict(by_slice=True, ibsi_compliant=True, no_approximation=True, base_feature_families=fams or "none",
              base_discretisation_method=cfg.discretisation, ivh_discretisation_method="none",
              glcm_distance=cfg.glcm_distance, ngldm_distance=1.0, ngldm_difference_level=0.0,
              glcm_spatial_method=["2d_average", "2d_slice_merge"], glrlm_spatial_method=["2d_average", "2d_slice_merge"],
              glszm_spatial_method="2d", gldzm_spatial_method="2d", ngtdm_spatial_method="2d", ngldm_spatial_method="2d",
              image_spacing=(float(spacing),) * 3, image_modality=MIRP_MODALITY)
    if cfg.discretisation == "fixed_bin_number":
        kw["base_discretisation_n_bins"] = cfg.bins
    elif cfg.discretisation == "fixed_bin_size":
        kw["base_discretisation_bin_width"] = cfg.bin_width
    rng = cfg.intensity_range
    if rng is None and cfg.discretisation == "fixed_bin_size":
        rng = GREY_RANGE  # bins start at grey level 0, not at the CT default of -1000 HU
    if rng is not None:
        kw["resegmentation_intensity_range"] = [float(r) for r in rng]
    return kw


@contextmanager
def quiet_mirp():
    """MIRP configures the root logger at INFO and warns per call: keep the CLI's output ours."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def ibsi_features(image: np.ndarray, mask: np.ndarray, cfg: RadiomicsConfig, spacing: float = 1.0) -> dict[str, float]:
    """IBSI features of a 2-D grey image within a boolean mask of the same shape: {tag: value}."""
    if image.ndim != 2 or image.shape != mask.shape:
        raise CeusError(f"the ROI must be a 2-D image with a mask of its shape, got {image.shape} and {mask.shape}")
    if int(mask.sum()) < 2:
        raise CeusError(f"the ROI holds {int(mask.sum())} pixel(s): too few for texture features")
    kw = mirp_settings(cfg, spacing)
    if kw["base_feature_families"] == "none":
        return {}
    # MIRP imported here: it loads ITK and pandas machinery that only this stage needs
    from mirp import extract_features

    with quiet_mirp():
        out = extract_features(image=np.asarray(image, float)[None], mask=np.asarray(mask, bool)[None], **kw)
    row = out[0].iloc[0]
    tags = {_SUFFIX.sub("", c): c for c in out[0].columns if family_of(c) != "other"}
    return {t: float(row[c]) for t, c in tags.items() if t not in MIRP_EXTRAS}
