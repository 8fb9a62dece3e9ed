"""The 2-D shape of a mask ROI (scikit-image ``regionprops``): size and outline, which the square,
resized ROI crop of the networks hides. IBSI 1 defines morphology in 3-D only, so each of these is
listed in ``radiomics.ibsi.NOT_IBSI``; their definitions are scikit-image's, in mm when the pixel
spacing is known (else in pixels).
"""

from __future__ import annotations

import math

import numpy as np
from skimage.measure import regionprops


def shape_features(mask: np.ndarray, spacing: float = 1.0) -> dict[str, float]:
    """Shape of a 2-D boolean mask, all its pixels as one region (a nodule drawn in two parts stays one)."""
    props = regionprops(np.asarray(mask, bool).astype(np.uint8))[0]
    area, perim = props.area * spacing**2, props.perimeter * spacing
    major, minor = props.axis_major_length * spacing, props.axis_minor_length * spacing
    y0, x0, y1, x1 = props.bbox
    return {
        "shape2d_area": float(area),
        "shape2d_perimeter": float(perim),
        "shape2d_major_axis": float(major),
        "shape2d_minor_axis": float(minor),
        "shape2d_elongation": float(minor / major) if major > 0 else 1.0,
        "shape2d_eccentricity": float(props.eccentricity),
        "shape2d_circularity": float(4 * math.pi * area / perim**2) if perim > 0 else 1.0,
        "shape2d_solidity": float(props.solidity),
        "shape2d_extent": float(props.extent),
        "shape2d_feret_max": float(props.feret_diameter_max * spacing),
        # rows are depth in an ultrasound frame: > 1 is the TI-RADS "taller than wide" sign
        "shape2d_taller_than_wide": float((y1 - y0) / (x1 - x0)),
    }
