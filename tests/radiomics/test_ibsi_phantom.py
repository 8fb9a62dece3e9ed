"""Every IBSI feature the radiomics stage emits, on the IBSI 1 digital phantom, against the IBSI reference
values for 2-D aggregation (tests/data/ibsi/SOURCE.md: the phantom, the values, their source and licence).

The stage computes one ultrasound plane at a time (``ibsi_features``); the phantom's four slices are
four such planes. IBSI's "2D" aggregation is the mean over slices of the per-slice features ("2D
averaged" for GLCM/GLRLM: per direction, then averaged; "2D slice-merged": the directions merged per
slice), so the test runs the stage's function on each slice and averages, as IBSI defines it. The
first-order families (intensity statistics, histogram, intensity-volume histogram) are defined over
every voxel of the ROI: the test lays the four slices side by side into one plane, which holds the
same voxels. Tolerance: the IBSI's for the phantom, exact at three significant digits.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from paths import ROOT

from ceusfusion.radiomics.ibsi import NOT_IBSI, family_of, ibsi_features
from ceusfusion.radiomics.settings import RadiomicsConfig

DATA = ROOT / "tests" / "data" / "ibsi"
FIRST_ORDER = ("intensity", "histogram", "ivh")
CFG = RadiomicsConfig(discretisation="none", families=tuple(f for f in RadiomicsConfig().families if f != "morphology"))


def our_tag(ibsi: str) -> str:
    """The IBSI table's tag in MIRP's (the stage's) naming: the aggregation and the distance spelt out."""
    for end, ours in (("_2D_avg", "2d_avg"), ("_2D_comb", "2d_s_mrg"), ("_2D", "2d")):
        if ibsi.endswith(end):
            stem = ibsi[: -len(end)]
            mid = "_d1_" if stem.startswith("cm_") else "_d1_a0.0_" if stem.startswith("ngl_") else "_"
            return f"{stem}{mid}{ours}"
    return ibsi


def sig3(x: float) -> float:
    return x if x == 0 or not math.isfinite(x) else round(x, 2 - int(math.floor(math.log10(abs(x)))))


@pytest.fixture(scope="module")
def computed() -> dict[str, float]:
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "phantom.nii.gz"))).astype(float)
    msk = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "mask.nii.gz"))) > 0
    per_slice = [ibsi_features(img[z], msk[z], CFG, spacing=2.0) for z in range(img.shape[0])]
    out = {k: float(np.mean([s[k] for s in per_slice])) for k in per_slice[0] if family_of(k) not in FIRST_ORDER}
    pooled = ibsi_features(np.concatenate(list(img), axis=1), np.concatenate(list(msk), axis=1), CFG, spacing=2.0)
    out.update({k: v for k, v in pooled.items() if family_of(k) in FIRST_ORDER})
    return out


def test_every_emitted_feature_matches_the_ibsi_reference(computed):
    ref = pd.read_csv(DATA / "reference_2d.csv", sep=";")
    ref["tag"] = ref["ibsi_tag"].map(our_tag)
    by_tag = ref.set_index("tag")
    emitted = set(computed)
    assert len(emitted) > 150
    unreferenced = sorted(emitted - set(by_tag.index) - set(NOT_IBSI))
    assert not unreferenced, f"emitted but neither IBSI-referenced nor listed in NOT_IBSI: {unreferenced}"
    bad = [f"{t}: {computed[t]:.5g} vs IBSI {r.reference} ± {r.tolerance}" for t, r in by_tag.iterrows()
           if t in emitted and not abs(sig3(computed[t]) - r.reference) <= r.tolerance + 1e-9 * max(1, abs(r.reference))]
    assert not bad, "\n".join(bad)


def test_no_reference_row_is_silently_skipped(computed):
    ref = pd.read_csv(DATA / "reference_2d.csv", sep=";")
    skipped = sorted(set(ref["ibsi_tag"].map(our_tag)) - set(computed))
    assert not skipped, f"IBSI 2-D reference values the stage does not emit: {skipped}"


def test_a_wrong_setting_is_caught():
    """The comparison can fail: with 2 fixed bins the phantom's texture is no longer the reference's."""
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "phantom.nii.gz"))).astype(float)
    msk = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "mask.nii.gz"))) > 0
    f = ibsi_features(img[0], msk[0], CFG.model_copy(update={"discretisation": "fixed_bin_number", "bins": 2}), 2.0)
    g = ibsi_features(img[0], msk[0], CFG, 2.0)
    assert f["cm_joint_max_d1_2d_avg"] != pytest.approx(g["cm_joint_max_d1_2d_avg"], rel=1e-3)


def test_fixed_bin_width_starts_at_grey_level_zero():
    """IBSI's fixed bin size counts bins from the lower bound of the intensity range: for 8-bit ultrasound 0
    (not MIRP's CT default of -1000 HU), so grey level 100 falls in bin floor(100 / 8) + 1 = 13."""
    rng = np.random.default_rng(0)
    img = rng.integers(100, 140, size=(16, 16)).astype(float)
    img[0, 0] = 100
    cfg = RadiomicsConfig(discretisation="fixed_bin_size", bin_width=8.0, families=("histogram",))
    f = ibsi_features(img, np.ones_like(img, bool), cfg)
    assert f["ih_min"] == 13 and f["ih_max"] == 139 // 8 + 1
