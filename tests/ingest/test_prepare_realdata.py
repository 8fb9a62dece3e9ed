"""`prepare` on the shared public data (../shared/data): skipped when the folder is absent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ingest_fixtures import DATA

from ceusfusion.ingest import cache
from ceusfusion.ingest.prepare import PrepareParams, prepare

POCUS, DDTI = DATA / "pocus", DATA / "ddti"
S = 32


def manifest_from_cases(cases_csv, out_csv, rows=None) -> pd.DataFrame:
    """A cohort manifest from a shared-data cases.csv: mask -> image_mask, patient -> group, absolute paths."""
    df = pd.read_csv(cases_csv, dtype=str)
    if rows is not None:
        df = df.iloc[rows]
    df = df.rename(columns={"mask": "image_mask", "patient": "group"})
    for col in ("image", "image_mask", "video", "video_mask"):
        if col in df.columns:
            df[col] = [str(cases_csv.parent / v) for v in df[col]]
    df["split"] = "train"
    df.to_csv(out_csv, index=False)
    return df


def _check(run, df, kind):
    res_idx = cache.read_index(run)
    assert sorted(res_idx["case_id"]) == sorted(df["case_id"])
    for cid in df["case_id"].iloc[:: max(1, len(df) // 10)]:
        z = cache.load_case(run, cid)
        if kind == "video":
            assert z["video"].shape[0] == 5 and z["video"].shape[1:3] == (S, S) and z["video"].dtype == np.uint8
            assert np.all(np.diff(z["times"]) > 0)
        else:
            assert z["image"].shape[:2] == (S, S) and z["image"].dtype == np.uint8


@pytest.mark.skipif(not POCUS.is_dir(), reason="../shared/data/pocus absent")
def test_pocus_sample(tmp_path):
    """Every container kind of the folder: MP4-in-AVI, MOV edit lists, GIF, MPEG-PS, the non-monotonic AVI."""
    cases = pd.read_csv(POCUS / "cases.csv")
    pick = set(cases.groupby("container").head(2).index)
    pick |= set(cases.index[cases["note"].fillna("").str.contains("MP4|edit list|non-monotonic")][:4])
    pick |= set(cases.index[cases["duration_s"] < 1.5])
    df = manifest_from_cases(POCUS / "cases.csv", tmp_path / "m.csv", rows=sorted(pick))
    res = prepare(tmp_path / "m.csv", tmp_path / "run", PrepareParams(size=S), progress=False)
    assert len(res.failures) == 0, res.failures.to_string()
    _check(tmp_path / "run", df, "video")


@pytest.mark.skipif(not DDTI.is_dir(), reason="../shared/data/ddti absent")
def test_ddti_all_images_and_masks(tmp_path):
    df = manifest_from_cases(DDTI / "cases.csv", tmp_path / "m.csv")
    res = prepare(tmp_path / "m.csv", tmp_path / "run", PrepareParams(size=S), progress=False)
    assert len(res.failures) == 0, res.failures.to_string()
    _check(tmp_path / "run", df, "image")


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not POCUS.is_dir(), reason="../shared/data/pocus absent")
def test_pocus_every_video(tmp_path):
    df = manifest_from_cases(POCUS / "cases.csv", tmp_path / "m.csv")
    res = prepare(tmp_path / "m.csv", tmp_path / "run", PrepareParams(size=S), workers=2, progress=False)
    assert len(res.failures) == 0, res.failures.to_string()
    _check(tmp_path / "run", df, "video")
