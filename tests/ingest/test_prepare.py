"""`ceusfusion prepare` end to end on a tiny cohort with good and bad cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from ingest_fixtures import PATIENT_ID, PATIENT_NAME, l_mask, ramp_video, write_dicom, write_png, write_sitk_mask, write_video

from ceusfusion.cli import main
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.ingest import cache
from ceusfusion.ingest.prepare import ROI_COLUMNS, PrepareParams, prepare

S = 32
GOOD = ["c_full", "c_dicom", "c_perframe"]
BAD = {
    "b_zero": "empty file",
    "b_corrupt": "cannot decode",
    "b_oneframe": "too short",
    "b_emptymask": "empty",
    "b_masksize": "mask is",
    "b_trunc": "",
    "b_mislabel": "not a video",
    "b_crop": "",
}


def _cohort(d):
    """Files and manifest; returns the manifest path."""
    frames = ramp_video(50, peak_frame=30)
    write_video(d / "v.avi", frames, fps=5)
    m2 = np.zeros((48, 48), bool)
    m2[12:30, 14:36] = True
    write_sitk_mask(d / "vm.nii.gz", m2)
    img = np.full((40, 52), 30, np.uint8)
    img[l_mask()] = 220
    write_png(d / "img.png", img)
    write_sitk_mask(d / "im.nii.gz", l_mask())
    write_dicom(d / "still.dcm", frames[:1])
    write_dicom(d / "cine.dcm", frames[:30], frame_time_ms=200)
    import SimpleITK as sitk

    per = np.zeros((50, 48, 48), np.uint8)
    per[5:45, 20:30, 20:30] = 1
    sitk.WriteImage(sitk.GetImageFromArray(per), str(d / "per.nii.gz"))
    (d / "zero.avi").write_bytes(b"")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    write_video(d / "one.avi", frames[:1], fps=5)
    write_png(d / "emptymask.png", np.zeros((48, 48), np.uint8))
    write_png(d / "smallmask.png", np.full((20, 20), 255, np.uint8))
    long = write_video(d / "long.avi", ramp_video(80), fps=5)
    (d / "trunc.avi").write_bytes(long.read_bytes()[: long.stat().st_size // 2])
    write_png(d / "fake.avi", img)
    rows = [
        dict(case_id="c_full", label=1, split="train", image="img.png", image_mask="im.nii.gz", video="v.avi", video_mask="vm.nii.gz", age=61),
        dict(case_id="c_dicom", label=0, split="train", image="still.dcm", video="cine.dcm", age=50),
        dict(case_id="c_perframe", label=1, split="test", image="img.png", video="v.avi", video_mask="per.nii.gz", age=44),
        dict(case_id="b_zero", label=0, split="train", video="zero.avi"),
        dict(case_id="b_corrupt", label=0, split="train", image="corrupt.png"),
        dict(case_id="b_oneframe", label=0, split="train", video="one.avi"),
        dict(case_id="b_emptymask", label=0, split="train", video="v.avi", video_mask="emptymask.png"),
        dict(case_id="b_masksize", label=0, split="train", image="img.png", image_mask="smallmask.png"),
        dict(case_id="b_trunc", label=0, split="train", video="trunc.avi"),
        dict(case_id="b_mislabel", label=0, split="train", video="fake.avi"),
    ]
    path = d / "cohort.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def prepared(module_tmp_factory):
    d = module_tmp_factory.mktemp("cohort")
    manifest = _cohort(d)
    run = d / "run"
    with pytest.raises(SystemExit) as exc:
        main(["prepare", str(manifest), "--out", str(run), "--size", str(S), "--tic-plots"])
    return manifest, run, exc.value.code


def test_exit_code_and_failures(prepared, capsys):
    _, run, code = prepared
    assert code == 1
    f = pd.read_csv(RunLayout(run).prepare_failures)
    assert sorted(f["case_id"]) == sorted(k for k in BAD if k != "b_crop")
    for cid, msg in BAD.items():
        if cid in set(f["case_id"]):
            line = f.loc[f["case_id"] == cid, "problem"].iloc[0]
            assert msg in line and "\n" not in line, (cid, line)
    assert not any(str(run.parent) in str(p) for p in f["problem"])  # relative paths in messages


def test_cache_follows_the_contract(prepared):
    _, run, _ = prepared
    idx = cache.read_index(run)
    assert list(idx.columns) == cache.INDEX_COLUMNS + ROI_COLUMNS
    assert sorted(idx["case_id"]) == sorted(GOOD)
    z = cache.load_case(run, "c_full")
    assert z["image"].dtype == np.uint8 and z["image"].shape == (S, S)
    assert z["video"].dtype == np.uint8 and z["video"].shape == (5, S, S)
    assert z["times"].dtype == np.float64 and z["frame_index"].dtype == np.int64
    assert list(z["frame_index"][:4]) == [10, 20, 30, 40]  # study policy around the peak at frame 30
    d = cache.load_case(run, "c_dicom")
    assert d["video"].shape == (5, S, S) and np.allclose(np.diff(d["times"]), d["times"][1] - d["times"][0])
    kf = json.loads((RunLayout(run).keyframes).read_text())
    assert set(kf["cases"]) == set(GOOD)
    v = kf["cases"]["c_full"]["video"]
    assert v["box"][2] - v["box"][0] == v["box"][3] - v["box"][1]  # square
    assert kf["cases"]["c_perframe"]["video"]["mask"] == "per-frame"
    for cid in GOOD:
        assert (RunLayout(run).sheet(cid)).is_file()
    perf = pd.read_csv(RunLayout(run).perfusion)
    assert set(perf["case_id"]) == {"c_full", "c_perframe"}
    row = perf.set_index("case_id").loc["c_full"]
    assert abs(row["time_to_peak"] - 6.0) < 0.5 and row["peak_ratio_ring"] > 2
    assert (RunLayout(run).tic_plot("c_full")).is_file()
    cohort = pd.read_csv(run / "cohort.csv")
    assert len(cohort) == 10 and "age" in cohort.columns


def test_no_patient_identity_in_any_output(prepared):
    _, run, _ = prepared
    secrets = [PATIENT_NAME, "Quixotic", PATIENT_ID, "19610203", "ACC55443322"]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert len(files) > 10
    for p in files:
        data = p.read_bytes()
        for s in secrets:
            assert s.encode() not in data, (p, s)


def test_rerun_skips_unchanged_cases_and_redoes_changed(prepared, tmp_path):
    manifest, run, _ = prepared
    p = PrepareParams(size=S, tic_plots=True)
    again = prepare(manifest, run, p, progress=False)
    assert again.n_ok == 3 and again.n_skipped == 3
    changed = prepare(manifest, run, PrepareParams(size=S, tic_plots=True, margin=0.3), progress=False)
    assert changed.n_skipped == 0  # parameters are part of the hash
    # content change of one input: only that case is redone
    before = cache.load_case(run, "c_dicom")["video"].copy()
    frames = ramp_video(30, peak_frame=5)
    write_dicom(manifest.parent / "cine.dcm", frames, frame_time_ms=200)
    third = prepare(manifest, run, PrepareParams(size=S, tic_plots=True, margin=0.3), progress=False)
    assert third.n_skipped == 2
    assert not np.array_equal(before, cache.load_case(run, "c_dicom")["video"])


def test_strict_is_fatal_with_one_line(prepared, tmp_path, capsys):
    manifest, _, _ = prepared
    with pytest.raises(SystemExit) as exc:
        main(["prepare", str(manifest), "--out", str(tmp_path / "strict"), "--size", str(S), "--strict"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_workers_give_the_same_arrays_and_fixed_crop(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    write_video(d / "v.avi", ramp_video(30, peak_frame=10), fps=5)
    rows = [dict(case_id=f"k{i}", label=i % 2, video="v.avi") for i in range(3)]
    rows.append(dict(case_id="b_crop", label=0, video="v.avi"))
    pd.DataFrame(rows).to_csv(d / "m.csv", index=False)
    a = prepare(d / "m.csv", tmp_path / "r1", PrepareParams(size=S, crop=(4, 4, 30, 20)), workers=1, progress=False)
    b = prepare(d / "m.csv", tmp_path / "r2", PrepareParams(size=S, crop=(4, 4, 30, 20)), workers=2, progress=False)
    assert a.n_ok == b.n_ok == 4
    for cid in ("k0", "k1", "b_crop"):
        assert np.array_equal(cache.load_case(tmp_path / "r1", cid)["video"], cache.load_case(tmp_path / "r2", cid)["video"])
    bad = prepare(d / "m.csv", tmp_path / "r3", PrepareParams(size=S, crop=(40, 40, 30, 20)), progress=False)
    assert bad.n_ok == 0 and bad.failures["problem"].str.contains("outside").all()


def test_roi_box_is_shifted_inside_the_frame_not_zero_padded():
    """A lesion near the border with a wide margin: the square box moves inside the frame, so no
    black padding (whose extent would encode lesion size and position) enters the crop."""
    from ceusfusion.ingest.roi import square_box

    shape = (100, 120)
    assert square_box((5, 10, 25, 30), 0.5) == (-5, 0, 35, 40)  # without the frame: sticks out
    box = square_box((5, 10, 25, 30), 0.5, shape)
    assert box == (0, 0, 40, 40) and box[2] - box[0] == box[3] - box[1]
    assert square_box((80, 100, 98, 118), 0.5, shape) == (64, 84, 100, 120)  # bottom-right corner
    assert square_box((40, 50, 60, 70), 0.1, shape) == (38, 48, 62, 72)  # inside anyway: unchanged
    big = square_box((0, 0, 100, 120), 0.1, shape)  # larger than the frame: centred, padding unavoidable
    assert big[2] - big[0] == 144 and big[0] == -22


def test_the_run_cohort_keeps_the_group_column_only_as_given(prepared):
    """The manifest has no `group`: RUN/cohort.csv has none either (a filled-in case_id would read as a recorded
    patient), while the prepared index, which every CV reads, groups by case_id."""
    _, run, _ = prepared
    assert "group" not in pd.read_csv(run / "cohort.csv").columns
    idx = pd.read_csv(run / "prepared" / "index.csv", dtype=str)
    assert (idx["group"] == idx["case_id"]).all()


def test_a_given_group_column_is_kept(tmp_path):
    img = np.full((40, 52), 30, np.uint8)
    img[l_mask()] = 220
    write_png(tmp_path / "img.png", img)
    pd.DataFrame([dict(case_id=f"c{i}", label=i % 2, split="train", group=f"p{i // 2}", image="img.png")
                  for i in range(4)]).to_csv(tmp_path / "cohort.csv", index=False)
    with pytest.raises(SystemExit):
        main(["prepare", str(tmp_path / "cohort.csv"), "--out", str(tmp_path / "run"), "--size", str(S)])
    assert pd.read_csv(tmp_path / "run" / "cohort.csv")["group"].tolist() == ["p0", "p0", "p1", "p1"]
