"""`segment train` and `segment predict` on a tiny synthetic cohort (bright nodules on speckle).

One model is trained for the module (2 folds, 64 px, random start, one thread); the tests read
what it wrote and what predict makes of it.
"""

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cli_run import exit_code
from ingest_fixtures import write_sitk_mask, write_video
from PIL import Image
from segment_fixtures import box_text as box_of
from segment_fixtures import nodule

import ceusfusion.segment.data as segdata
from ceusfusion.core.fsutil import sha256_file
from ceusfusion.core.runtime import threads
from ceusfusion.ingest.cohort import validate
from ceusfusion.io.mask import read_mask
from ceusfusion.segment.metrics import dice
from ceusfusion.segment.predict import write_nifti
from ceusfusion.segment.record import read_record
from ceusfusion.segment.train import SegmentSettings, segment_train


def make_cohort(root):
    """24 training cases with masks, 4 without (2 with a box), a hostile file, 4 test cases with masks, a test video."""
    rng = np.random.default_rng(1)
    (root / "img").mkdir(parents=True)
    rows, truth = [], {}
    for i in range(33):
        cid = f"c{i:02d}"
        img, m = nodule(rng)
        truth[cid] = m
        Image.fromarray(img).save(root / "img" / f"{cid}.png")
        split = "test" if i >= 29 else "train"
        row = {"case_id": cid, "label": i % 2, "split": split, "image": f"img/{cid}.png", "image_mask": "", "image_box": ""}
        if i < 24 or i >= 29:
            row["image_mask"] = str(write_sitk_mask(root / "img" / f"{cid}_mask.nii.gz", m).relative_to(root))
        if i in (24, 25):
            row["image_box"] = box_of(m)
        rows.append(row)
    (root / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a picture" * 20)  # hostile: a PNG header, no image
    rows.append({"case_id": "bad", "label": 1, "split": "train", "image": "img/bad.png", "image_mask": rows[0]["image_mask"],
                 "image_box": ""})
    rows.append({"case_id": "bad2", "label": 0, "split": "train", "image": "img/bad.png", "image_mask": "", "image_box": ""})
    frames = np.stack([nodule(np.random.default_rng(9))[0]] * 12)
    truth["vid"] = nodule(np.random.default_rng(9))[1]
    write_video(root / "img" / "vid.avi", frames, fps=4.0)
    rows.append({"case_id": "vid", "label": 0, "split": "test", "video": "img/vid.avi", "video_box": box_of(truth["vid"]),
                 "video_box_time": "1.0"})
    pd.DataFrame(rows).to_csv(root / "cohort.csv", index=False)
    return root / "cohort.csv", truth


@pytest.fixture(scope="module")
def trained(module_tmp_factory):
    root = module_tmp_factory.mktemp("segment")
    cohort, truth = make_cohort(root / "data")
    read = []
    original = segdata.read_mask
    segdata.read_mask = lambda path, *a, **k: (read.append(str(path)), original(path, *a, **k))[1]
    failures = []
    try:
        st = SegmentSettings(weights="none", size=64, epochs=20, folds=2, batch=4, seed=0, device="cpu")
        with threads(1):  # CI runs two test workers on two cores
            res = segment_train(cohort, root / "model", st, on_failure=lambda *f: failures.append(f))
    finally:
        segdata.read_mask = original
    return {"root": root, "cohort": cohort, "truth": truth, "res": res, "read": read, "failures": failures}


def test_train_learns_from_training_masks_only(trained):
    rec = read_record(trained["root"] / "model")
    test_ids = {"c29", "c30", "c31", "c32", "vid"}
    assert set(rec.test_cases) == test_ids
    assert set(rec.trained_on) == {f"c{i:02d}" for i in range(24)}  # the hostile case failed, the others trained
    assert not any("c29" in p or "c3" in p for p in trained["read"])  # no test-split mask was even read
    assert {p["fold"] for p in rec.pictures} == {0, 1}
    with pytest.raises(ValueError, match="test-split case"):
        rec.model_validate({**rec.model_dump(), "trained_on": rec.trained_on + ["c30"]})


def test_a_hostile_training_file_is_one_line_and_the_others_go_through(trained):
    (cid, file, problem), = trained["failures"]
    assert cid == "bad" and file == "img/bad.png" and "\n" not in problem and "cannot decode image" in problem
    assert trained["res"].n_pictures == 24


def test_cv_metrics_per_fold_and_pooled_for_both_modes(trained):
    m = json.loads((trained["root"] / "model" / "cv_metrics.json").read_text())
    for mode in ("box", "auto"):
        folds, pooled = m["modes"][mode]["folds"], m["modes"][mode]["pooled"]
        assert [f["fold"] for f in folds] == [0, 1] and pooled["n"] == 24 == sum(f["n"] for f in folds)
        assert 0.85 < pooled["dice"] <= 1, (mode, pooled)  # about 0.97 (seeds 0 and 1)
        assert pooled["iou"] < pooled["dice"] and pooled["hd95_median"] < 4
    assert (trained["root"] / "model" / "cv_dice.png").stat().st_size > 1000
    per = pd.read_csv(trained["root"] / "model" / "cv_per_case.csv")
    assert len(per) == 48 and set(per["case_id"]) == {f"c{i:02d}" for i in range(24)}


@pytest.fixture(scope="module")
def predicted(trained):
    out = trained["root"] / "pred"
    before = sha256_file(trained["cohort"])
    code = exit_code(["segment", "predict", str(trained["cohort"]), "--model", str(trained["root"] / "model"),
                      "--out", str(out), "--device", "cpu"])
    assert sha256_file(trained["cohort"]) == before  # the user's manifest is never written
    return {**trained, "out": out, "code": code}


def test_predict_fills_the_masks_and_names_their_source(predicted):
    out = pd.read_csv(predicted["out"] / "cohort.csv", dtype=str, keep_default_na=False)
    src = dict(zip(out["case_id"], out["image_roi_source"]))
    assert all(src[f"c{i:02d}"] == "manual" for i in list(range(24)) + [29, 30, 31, 32])
    assert src["c24"] == src["c25"] == "predicted_box" and src["c26"] == src["c27"] == src["c28"] == "predicted_auto"
    assert src["bad2"] == "" and src["bad"] == "manual"
    vid = out.set_index("case_id").loc["vid"]
    assert vid["video_roi_source"] == "predicted_box" and vid["video_mask"] == "masks/vid_video.nii.gz"
    _, problems = validate(predicted["out"] / "cohort.csv")  # every path resolves from the new folder
    assert [p.case_id for p in problems] == ["bad", "bad2"]


def test_a_hostile_file_in_predict_is_one_line_and_the_exit_code_says_so(predicted):
    fails = pd.read_csv(predicted["out"] / "failures.csv")
    assert list(fails["case_id"]) == ["bad2"] and "cannot decode image" in fails["problem"][0]
    assert predicted["code"] == 1


def test_predicted_masks_open_over_their_source_and_are_right(predicted):
    seg = pd.read_csv(predicted["out"] / "segments.csv")
    for r in seg.itertuples():
        src = predicted["cohort"].parent / ("img/vid.avi" if r.case_id == "vid" else f"img/{r.case_id}.png")
        m = read_mask(predicted["out"] / r.mask, predicted["truth"][r.case_id].shape, of=r.modality)
        assert m.sum() == r.area_px and dice(m, predicted["truth"][r.case_id]) > 0.85, r.case_id
        if r.modality == "image":
            a, b = sitk.ReadImage(str(predicted["out"] / r.mask)), sitk.ReadImage(str(src))
            assert a.GetSize()[:2] == b.GetSize()[:2] and a.GetSpacing()[:2] == pytest.approx(b.GetSpacing()[:2])
            assert a.GetOrigin()[:2] == pytest.approx(b.GetOrigin()[:2])
    assert seg.set_index("case_id").loc["vid", "frame_index"] == 4  # the frame at video_box_time 1.0 s (4 fps)
    assert 0 <= seg["agreement"].min() and seg["agreement"].max() <= 1
    assert list((predicted["out"] / "sheets").glob("contours_*.png"))


def test_predict_never_writes_over_a_user_file(predicted, tmp_path):
    (tmp_path / "cohort.csv").write_text("mine\n")
    code = exit_code(["segment", "predict", str(predicted["cohort"]), "--model", str(predicted["root"] / "model"),
                      "--out", str(tmp_path)])
    assert code == 2 and (tmp_path / "cohort.csv").read_text() == "mine\n"


def test_a_mask_takes_the_geometry_itk_reads_from_its_source(tmp_path):
    """Spacing, origin and direction of the source (here an .mha still with 0.1 x 0.2 mm pixels) go into the
    mask, so ITK-SNAP lays it over the source; the package's mask reader gets the same pixels back."""
    src = sitk.GetImageFromArray(np.zeros((30, 40), np.uint8))
    src.SetSpacing((0.1, 0.2))
    src.SetOrigin((5.0, -7.0))
    sitk.WriteImage(src, str(tmp_path / "still.mha"))
    m = np.zeros((30, 40), bool)
    m[5:12, 20:33] = True
    write_nifti(tmp_path / "m.nii.gz", m, tmp_path / "still.mha")
    out = sitk.ReadImage(str(tmp_path / "m.nii.gz"))
    assert out.GetSize() == (40, 30, 1) and out.GetSpacing()[:2] == pytest.approx((0.1, 0.2))
    assert out.GetOrigin()[:2] == pytest.approx((5.0, -7.0))
    assert np.array_equal(read_mask(tmp_path / "m.nii.gz", (30, 40), of="image"), m)
