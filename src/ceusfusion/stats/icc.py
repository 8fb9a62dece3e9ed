"""The intraclass correlation ICC(1,1) (Shrout & Fleiss 1979; McGraw & Wong's ICC(1)): one-way random
effects, single measurement. Used for the radiomics robustness filter, where the "raters" are small
perturbations of one ROI, interchangeable and unordered (Zwanenburg et al., Sci Rep 2019;9:614).
"""

from __future__ import annotations

import numpy as np


def icc1(x: np.ndarray) -> np.ndarray:
    """ICC(1,1) of each feature: ``x`` is (subjects, measurements, features) or (subjects, measurements).

    NaN where it is undefined: fewer than 2 subjects or measurements, a non-finite value, or no variance
    at all (a constant feature is no information, robust or not)."""
    a = np.asarray(x, dtype=float)
    squeeze = a.ndim == 2
    a = a[..., None] if squeeze else a
    n, k = a.shape[:2]
    out = np.full(a.shape[2], np.nan)
    if n >= 2 and k >= 2:
        grand = a.mean(axis=(0, 1))
        msb = k * ((a.mean(axis=1) - grand) ** 2).sum(axis=0) / (n - 1)
        msw = ((a - a.mean(axis=1, keepdims=True)) ** 2).sum(axis=(0, 1)) / (n * (k - 1))
        den = msb + (k - 1) * msw
        ok = np.isfinite(a).all(axis=(0, 1)) & (den > 0)
        out[ok] = (msb[ok] - msw[ok]) / den[ok]
    return out[0] if squeeze else out
