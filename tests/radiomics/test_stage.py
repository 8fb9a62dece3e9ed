"""The radiomics stage end to end on a tiny synthetic cohort (stills, CEUS videos, masks): the features
file reads through the fusion contract, the ROI source is recorded, a box ROI gets no shape features
(and says why), a hostile ROI is one line naming its case while the others go through."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ceusfusion.core.fsutil import write_csv
from ceusfusion.deploy.fused import RadiomicsSettings, patient_extras
from ceusfusion.deploy.predict import prepare_patient
from ceusfusion.fusion.features import read_features
from ceusfusion.fusion.inputs import load_inputs
from ceusfusion.ingest.prepare import PrepareParams, prepare
from ceusfusion.radiomics.settings import RadiomicsConfig
from ceusfusion.radiomics.stage import column_family, radiomics
from ceusfusion.synthetic.synth import SynthConfig, generate

CFG = RadiomicsConfig(families=("morphology", "intensity", "glcm", "ngtdm"), icc_cases=3, perturb_px=(1,), seed=1)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("rad")
    generate(root / "data", SynthConfig(n=6, size=48, duration=4.0, fps=2.0, seed=3), workers=1)
    co = pd.read_csv(root / "data" / "cohort.csv", dtype=str)
    boxed, hostile = co["case_id"].iloc[0], co["case_id"].iloc[1]
    co.loc[0, ["image_mask", "video_mask"]] = np.nan  # no mask: the whole frame
    m = np.zeros(np.asarray(Image.open(root / "data" / co.loc[1, "image"])).shape[:2], np.uint8)
    m[5, 5] = 255  # one pixel: no texture can be computed
    Image.fromarray(m).save(root / "data" / "one_pixel.png")
    co.loc[1, "image_mask"] = "one_pixel.png"
    write_csv(root / "data" / "cohort_edit.csv", co)
    run = root / "run"
    prepare(root / "data" / "cohort_edit.csv", run, PrepareParams(size=32, frames=2, period=1.0), progress=False)
    lines: list[str] = []
    rec = radiomics(run, CFG, on_failure=lines.append)
    return run, rec, lines, boxed, hostile


def test_hostile_roi_is_one_line_naming_the_case(stage):
    run, rec, lines, _, hostile = stage
    assert len(lines) == 1 and lines[0].startswith(f"case {hostile} (") and "\n" not in lines[0]
    assert "1 pixel" in lines[0]
    assert rec["n_failed"] == 1 and rec["n_cases"] == 5
    assert list(pd.read_csv(run / "radiomics" / "failures.csv")["case_id"].astype(str)) == [hostile]


def test_features_file_follows_the_fusion_contract(stage):
    run, rec, _, _, hostile = stage
    df, meta = read_features(run / "features" / "radiomics.parquet")
    assert meta["name"] == "radiomics" and meta["has_group"]
    assert hostile not in set(df["case_id"]) and len(df) == 5
    feats = [c for c in df.columns if c not in ("case_id", "set", "y", "group")]
    assert len(feats) == rec["n_features_kept"] > 0
    assert {column_family(c) for c in feats} <= {"intensity", "glcm", "ngtdm"}  # shape: not in every case
    assert any(c.startswith("img_") for c in feats) and any(c.startswith("kf_peak_") for c in feats)
    assert meta["radiomics"]["settings"]["bins"] == 32 and meta["radiomics"]["library"]["mirp"]
    data = load_inputs([run / "features" / "radiomics.parquet"], cohort=run / "cohort.csv")
    assert data.group_source == "features" and len(data.deep) == len(feats)


def test_box_roi_has_no_shape_features_and_says_why(stage):
    run, _, _, boxed, _ = stage
    cases = pd.read_csv(run / "radiomics" / "cases.csv", dtype={"case_id": str}).set_index("case_id")
    assert cases.loc[boxed, "roi_source"] == "still: whole_frame;video: whole_frame"
    assert "not a mask" in cases.loc[boxed, "shape"]
    other = cases.index[cases.index != boxed][0]
    assert cases.loc[other, "roi_source"] == "still: manual_mask;video: manual_mask"
    assert cases.loc[other, "shape"] == "computed from the mask"
    values = pd.read_csv(run / "radiomics" / "values.csv", dtype={"case_id": str}).set_index("case_id")
    assert np.isnan(values.loc[boxed, "img_shape2d_area"]) and values.loc[other, "img_shape2d_area"] > 0


def test_icc_filter_is_recorded_and_seeded(stage):
    run, rec, _, _, _ = stage
    icc = pd.read_csv(run / "radiomics" / "icc.csv")
    assert rec["icc_cases"] == 3 and rec["n_dropped_icc"] == int((~icc["kept"]).sum())
    assert (icc.loc[icc["kept"], "icc"] >= 0.75).all()
    assert rec["seconds_per_roi"] > 0 and rec["missing_families"] and "shape2d_area" in rec["not_ibsi"]


def test_predict_computes_a_cases_row_as_the_stage_did(stage):
    """A bundle's patient (deploy.fused) through prepare's keyframes and the stage's code: the still's and the CEUS
    keyframes' features equal values.csv's row of that case (issue 27: predict scores radiomics models)."""
    run, _, _, _, hostile = stage
    values = pd.read_csv(run / "radiomics" / "values.csv", dtype={"case_id": str}).set_index("case_id")
    cohort = pd.read_csv(run / "cohort.csv", dtype=str).set_index("case_id")
    meta = {"prepare": json.loads((run / "prepared" / "keyframes.json").read_text())["params"]}
    cols = [c for c in values.columns if c not in ("set", "y", "group")]
    rs = RadiomicsSettings(CFG, tuple(cols))
    case = next(c for c in values.index if c != hostile and not np.isnan(values.loc[c, "img_shape2d_area"]))
    files = {k: cohort.loc[case, k] for k in ("image", "image_mask", "video", "video_mask")}
    entries: dict = {}
    prepare_patient(meta, **files, entries=entries)
    extras = patient_extras(rs, files, entries)
    assert extras.radiomics_problem is None and any(c.startswith("kf_peak_") for c in cols)
    np.testing.assert_allclose([extras.radiomics[f"radiomics__{c}"] for c in cols], values.loc[case, cols].to_numpy(float),
                               rtol=1e-9, atol=1e-12)
    bad = patient_extras(rs, {**files, "image_mask": cohort.loc[hostile, "image_mask"]}, entries)
    assert bad.radiomics is None and "1 pixel" in bad.radiomics_problem
