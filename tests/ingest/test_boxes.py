"""Issue 26 item 1: boxes in the manifest and in a boxes file; a box crops as a mask with that bounding box does;
every ROI's source is recorded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from ingest_fixtures import l_mask, ramp_video, write_png, write_sitk_mask, write_video

from ceusfusion.core.errors import CeusError
from ceusfusion.ingest import cache
from ceusfusion.ingest.cohort import column_roles, clinical_columns, merge_boxes, read_manifest, validate
from ceusfusion.ingest.prepare import PrepareParams, prepare, prepare_image, prepare_video, roi_source_counts
from ceusfusion.ingest.roi import bbox, parse_xywh

H, W = 40, 52  # the still; the video is 48x48, 50 frames at 10 fps (last frame at 4.9 s)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    write_png(tmp_path / "img.png", rng.integers(0, 255, (H, W), dtype=np.uint8))
    write_sitk_mask(tmp_path / "img_mask.nii.gz", l_mask(H, W))
    write_video(tmp_path / "vid.avi", ramp_video())
    vm = np.zeros((48, 48), bool)
    vm[12:30, 14:36] = True
    write_sitk_mask(tmp_path / "vid_mask.nii.gz", vm)
    return tmp_path


def manifest(folder, rows: list[dict]) -> str:
    base = {"label": 0, "image": "img.png", "video": "vid.avi"}
    df = pd.DataFrame([{"case_id": f"c{i}", **base, **r} for i, r in enumerate(rows)])
    df.loc[df.index % 2 == 1, "label"] = 1
    path = folder / "cohort.csv"
    df.to_csv(path, index=False)
    return path


def test_box_problems_are_one_line_each_and_good_rows_pass(files):
    rows = [{"image_box": "1,2,10,8", "video_box": "14,12,22,18", "video_box_time": "2.5"},  # c0 fine
            {"image_box": "1,2,3"},  # c1 not four
            {"image_box": "a,b,c,d"},  # c2 not integers
            {"image_box": "1,2,0,5"},  # c3 zero width
            {"image_box": "-1,2,3,4"},  # c4 negative corner
            {"image_box": "1.5,2,3,4"},  # c5 not whole pixels
            {"image_box": "40,30,20,20"},  # c6 outside the 52x40 still
            {"video_box": "10,10,5,5", "video_box_time": "30"},  # c7 time beyond the 4.9 s clip
            {"video_box": "10,10,5,5", "video_box_time": "soon"},  # c8 not seconds
            {"video_box": "10,10,5,5", "video_box_time": "-1"}]  # c9 negative time
    _, problems = validate(manifest(files, rows))
    by_case = {}
    for p in problems:
        assert "\n" not in p.line()
        by_case.setdefault(p.case_id, []).append(p)
    assert "c0" not in by_case
    expect = {"c1": ("image_box", "not four integers"), "c2": ("image_box", "not four integers"),
              "c3": ("image_box", "width and height positive"), "c4": ("image_box", "x and y must be >= 0"),
              "c5": ("image_box", "not four integers"), "c6": ("image_box", "outside the 52x40 px frame"),
              "c7": ("video_box_time", "beyond the clip"), "c8": ("video_box_time", "seconds"),
              "c9": ("video_box_time", "seconds")}
    for cid, (col, words) in expect.items():
        assert len(by_case.get(cid, [])) == 1, (cid, [p.line() for p in by_case.get(cid, [])])
        p = by_case[cid][0]
        assert p.column == col and words in p.problem and f"case {cid}" in p.line(), p.line()


def test_boxes_file_overrides_and_names_unknown_cases(files):
    path = manifest(files, [{"image_box": "1,2,10,8"}, {"image_box": "3,3,5,5", "video_box": "1,1,4,4", "video_box_time": "1"}])
    boxes = files / "BOXES.csv"
    pd.DataFrame([{"case_id": "c0", "image_box": "", "video_box": "14,12,22,18", "video_box_time": ""},
                  {"case_id": "c1", "image_box": "4,4,6,6", "video_box": "", "video_box_time": ""},
                  {"case_id": "ghost", "image_box": "1,1,2,2", "video_box": "", "video_box_time": ""}]).to_csv(boxes, index=False)
    merged, problems = merge_boxes(read_manifest(path), boxes)
    assert [(p.case_id, p.problem) for p in problems] == [("ghost", "BOXES.csv row 3: unknown case (not in the manifest)")]
    m = merged.set_index("case_id")
    assert m.at["c0", "image_box"] == "1,2,10,8"  # an empty cell keeps the manifest's box
    assert m.at["c0", "video_box"] == "14,12,22,18" and pd.isna(m.at["c0", "video_box_time"])  # no time: first frame
    assert m.at["c1", "image_box"] == "4,4,6,6" and m.at["c1", "video_box"] == "1,1,4,4" and m.at["c1", "video_box_time"] == "1"
    _, problems = validate(path, boxes=boxes)
    assert [p.case_id for p in problems] == ["ghost"]
    pd.DataFrame([{"case_id": "c0", "imagebox": "1,1,2,2"}]).to_csv(boxes, index=False)
    _, problems = validate(path, boxes=boxes)
    assert len(problems) == 1 and "unknown column(s) 'imagebox'" in problems[0].problem


def test_box_columns_are_schema_not_covariates(files):
    df = read_manifest(manifest(files, [{"image_box": "1,2,10,8", "video_box": "1,1,4,4", "video_box_time": "1",
                                         "image_roi_source": "manual", "age": 50}, {"age": 60}]))
    assert clinical_columns(df) == ["age"]
    roles = {r.column: r.role for r in column_roles(df)}
    assert roles["image_box"] == "box" and roles["video_box_time"] == "box time" and roles["image_roi_source"] == "mask origin"


def test_a_box_crops_exactly_as_a_mask_with_that_bounding_box(files):
    p = PrepareParams(size=24, frames=3, period=1.0, margin=0.2)
    y0, x0, y1, x1 = bbox(l_mask(H, W))
    from_mask, m_entry = prepare_image(files / "img.png", files / "img_mask.nii.gz", p)
    from_box, b_entry = prepare_image(files / "img.png", None, p, box=(x0, y0, x1 - x0, y1 - y0))
    assert np.array_equal(from_mask, from_box) and m_entry["box"] == b_entry["box"]
    whole, _ = prepare_image(files / "img.png", None, p)
    assert not np.array_equal(whole, from_box)
    va, ve, _ = prepare_video(files / "vid.avi", files / "vid_mask.nii.gz", p)
    vb, be, sel = prepare_video(files / "vid.avi", None, p, box=(14, 12, 22, 18))
    assert np.array_equal(va["video"], vb["video"]) and ve["box"] == be["box"]
    assert be["tic_roi"] == "box" and ve["tic_roi"] == "mask" and sel.tic is not None  # a box-only case has a TIC, in the box
    with pytest.raises(CeusError, match="video_box 40,40,20,20 lies outside the 48x48 px frame"):
        prepare_video(files / "vid.avi", None, p, box=(40, 40, 20, 20))


def test_prepare_records_every_roi_source(files, tmp_path):
    rows = [{"image_mask": "img_mask.nii.gz", "video_mask": "vid_mask.nii.gz"},  # manual masks
            {"image_box": "1,2,10,8", "video_box": "14,12,22,18"},  # boxes only
            {},  # neither: the whole frame
            {"image_mask": "img_mask.nii.gz", "image_roi_source": "predicted_box",
             "video_mask": "vid_mask.nii.gz", "video_roi_source": "predicted_auto"}]
    path = manifest(files, rows)
    run = tmp_path / "run"
    res = prepare(path, run, PrepareParams(size=16, frames=3, period=1.0), progress=False)
    assert res.n_ok == 4
    idx = cache.read_index(run).set_index("case_id")
    assert idx["image_roi"].tolist() == ["manual_mask", "box", "whole_frame", "predicted_mask_box"]
    assert idx["video_roi"].tolist() == ["manual_mask", "box", "whole_frame", "predicted_mask_auto"]
    kf = json.loads((run / "prepared" / "keyframes.json").read_text())["cases"]
    assert kf["c1"]["video"]["roi"] == "box" and kf["c1"]["video"]["tic_roi"] == "box" and kf["c2"]["video"]["tic_roi"] == "none"
    assert cache.case_record(run, "c3")["image"]["roi"] == "predicted_mask_box"
    assert {k: set(v) for k, v in roi_source_counts(cache.read_index(run)).items()} == {
        "image": {"manual_mask", "box", "whole_frame", "predicted_mask_box"},
        "video": {"manual_mask", "box", "whole_frame", "predicted_mask_auto"}}
    perf = pd.read_csv(run / "prepared" / "perfusion.csv", dtype={"case_id": str})
    assert sorted(perf["case_id"]) == ["c0", "c1", "c3"]  # the box-only case has its TIC; the whole frame none


def test_parse_xywh_accepts_whole_pixels():
    assert parse_xywh(" 0, 3 ,10,8") == (0, 3, 10, 8)


def test_cli_validate_and_prepare_take_the_boxes_file(files, tmp_path, capsys):
    from cli_run import exit_code

    path = manifest(files, [{}, {}])
    boxes = files / "BOXES.csv"
    pd.DataFrame([{"case_id": "c0", "image_box": "1,2,10,8", "video_box": "14,12,22,18", "video_box_time": "1.5"},
                  {"case_id": "nobody", "image_box": "1,2,10,8"}]).to_csv(boxes, index=False)
    assert exit_code(["validate", str(path), "--boxes", str(boxes), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(p["case_id"], p["problem"]) for p in report["problems"]] == [("nobody", "BOXES.csv row 2: unknown case (not in the manifest)")]
    pd.read_csv(boxes).iloc[:1].to_csv(boxes, index=False)
    assert exit_code(["validate", str(path), "--boxes", str(boxes)]) == 0
    run = tmp_path / "run"
    assert exit_code(["prepare", str(path), "--out", str(run), "--boxes", str(boxes), "--size", "16", "--frames", "3",
                      "--period", "1", "--track", "on"]) == 0
    idx = cache.read_index(run)
    assert idx["image_roi"].tolist() == ["box", "whole_frame"] and idx["video_roi"].tolist() == ["box", "whole_frame"]
    kf = json.loads((run / "prepared" / "keyframes.json").read_text())
    assert kf["params"]["track"] == "on" and kf["cases"]["c0"]["video"]["track"]["anchor_time"] == 1.5
    assert pd.read_csv(run / "cohort.csv", dtype=str).set_index("case_id").at["c0", "video_box"] == "14,12,22,18"
    assert pd.read_csv(path).columns.tolist() == ["case_id", "label", "image", "video"]  # the user's manifest untouched


def test_defaults_record_and_hash_as_before_boxes(files):
    """The demo's prepared cache stays valid: at their defaults the new options are not in the hash or the record,
    and a case without a box or mask origin hashes as before (arrays checked byte-identical before/after by hand)."""
    from ceusfusion.ingest.prepare import case_hash

    p = PrepareParams()
    assert set(p.recorded()) == {"size", "frames", "period", "policy", "margin", "crop", "color", "ring", "tic_plots"}
    assert PrepareParams(track="auto").recorded()["track"] == "auto"
    f = {"image": files / "img.png"}
    none = {"image_box": None, "video_box": None, "video_box_time": None, "image_roi_source": None, "video_roi_source": None}
    assert case_hash(f, p) == case_hash(f, p, none) != case_hash(f, p, {**none, "image_box": (1, 2, 3, 4)})


def test_study_yaml_track_on_off_words(tmp_path):
    """YAML reads a bare `on` as true: `prepare: {track: on}` must mean tracking on, not a type error."""
    import yaml

    from ceusfusion.config import parse_config

    for word, want in (("on", "on"), ("off", "off"), ("auto", "auto")):
        raw = yaml.safe_load(f"cohort: c.csv\nout: run\nboxes: BOXES.csv\nprepare: {{track: {word}}}\n")
        cfg = parse_config(raw)
        assert cfg.prepare.track == want and str(cfg.boxes) == "BOXES.csv"
    with pytest.raises(CeusError, match="track"):
        parse_config({"cohort": "c.csv", "out": "run", "prepare": {"track": "sometimes"}})


def test_a_mask_origin_without_its_mask_is_a_warning_not_a_problem(files):
    from ceusfusion.ingest.cohort import manifest_warnings

    path = manifest(files, [{"image_roi_source": "predicted_auto"}, {"image_roi_source": "by hand"}])
    _, problems = validate(path)
    assert [(p.case_id, p.column) for p in problems] == [("c1", "image_roi_source")]  # an unknown word is a problem
    warnings = manifest_warnings(read_manifest(path))
    assert any("'image_roi_source' says how image_mask was made for 2 case(s) with no image_mask (c0, c1)" in w
               for w in warnings), warnings
