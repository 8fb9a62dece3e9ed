"""Issue 26: ``ceusfusion annotate --segmenter MODEL`` draws the segmenter's proposal. The proposal API answers the
contour and the box to accept (box-prompted from the user's box, automatic without one), one line for a bad
request; accepting a proposal writes the box, with which `segment predict --boxes` makes the very mask shown; a
bad MODEL folder is refused before anything listens; in Chromium the contour appears, `a` accepts it, a drawn
box redoes it.

One real segmenter for the module (`segment train`, 20 epochs at 64 px on 24 bright-nodule stills, about 30 s)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cli_run import exit_code
from segment_fixtures import nodule_cohort, train_segmenter
from test_annotate import _drag, call, rows

from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.roi import parse_xywh
from ceusfusion.segment.predict import segment_predict
from ceusfusion.serve import annotate as annotate_module
from ceusfusion.serve.annotate import create_annotate_app
from ceusfusion.serve.server import running_server


@pytest.fixture(scope="module")
def seg(module_tmp_factory):
    """The segmenter, and a manifest to annotate: four test-split stills without a mask, and a clip."""
    root = module_tmp_factory.mktemp("proposal")
    cohort, truth = nodule_cohort(root / "data", clip=True)
    model = train_segmenter(cohort, root / "model")
    df = pd.read_csv(cohort, dtype=str)
    todo = cohort.parent / "todo.csv"
    df[df["split"] == "test"].drop(columns=["image_mask"]).to_csv(todo, index=False)
    return {"root": root, "todo": todo, "truth": truth, "model": model}


def box_iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w, h = min(ax + aw, bx + bw) - max(ax, bx), min(ay + ah, by + bh) - max(ay, by)
    inter = max(w, 0) * max(h, 0)
    return inter / (aw * ah + bw * bh - inter)


def true_box(m) -> list[int]:
    ys, xs = np.nonzero(m)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def test_the_proposal_api_answers_the_contour_and_the_box_and_one_line_for_a_bad_request(seg, tmp_path):
    app = create_annotate_app(seg["todo"], tmp_path / "BOXES.csv", warn=lambda m: None, segmenter=seg["model"])
    with running_server(app) as url:
        status, ov = call(url, "GET", "/api/cases")
        assert status == 200 and ov["segmenter"]["model"] == "model" and set(ov["segmenter"]["cv_dice"]) == {
            "box-prompted", "automatic"}
        status, p = call(url, "GET", "/api/case/0/proposal/image")  # c24, no box yet: automatic
        assert status == 200 and p["mode"] == "auto" and p["case_id"] == "c24" and (p["width"], p["height"]) == (88, 72)
        assert box_iou(p["box"], true_box(seg["truth"]["c24"])) > 0.6 and len(p["contour"]) >= 1
        xs, ys = zip(*p["contour"][0])
        assert 0 <= min(xs) and max(xs) <= 88 and 0 <= min(ys) and max(ys) <= 72  # the file's pixels
        drawn = true_box(seg["truth"]["c24"])
        status, q = call(url, "GET", "/api/case/0/proposal/image?box=" + ",".join(map(str, drawn)))
        assert status == 200 and q["mode"] == "box" and q["box"] == drawn
        status, v = call(url, "GET", "/api/case/4/proposal/video?t=1.5")  # the clip's frame at 1.5 s, automatic
        assert status == 200 and v["mode"] == "auto" and v["time"] == pytest.approx(1.5) and v["box"]
        bad = [("/api/case/9/proposal/image", 404, "no case 9 (the cohort has 5)"),
               ("/api/case/0/proposal/video", 404, "case c24: no video in the manifest"),
               ("/api/case/0/proposal/audio", 404, "case c24: no audio in the manifest"),
               ("/api/case/0/proposal/image?box=1,2,3", 400, "case c24: image_box: box '1,2,3' is not four integers"),
               ("/api/case/0/proposal/image?box=80,0,20,10", 400, "lies outside the 88x72 px frame"),
               ("/api/case/4/proposal/video?t=soon", 400, "case vid: t: 'soon' is not a time in seconds"),
               ("/api/case/4/proposal/video?t=60", 400, "beyond the clip")]
        for path, want, text in bad:
            status, res = call(url, "GET", path)
            assert (status, set(res)) == (want, {"error"}) and text in res["error"] and "\n" not in res["error"], (path, res)
            assert str(seg["root"]) not in res["error"]
    plain = create_annotate_app(seg["todo"], tmp_path / "B2.csv", warn=lambda m: None)
    with running_server(plain) as url:
        assert call(url, "GET", "/api/cases")[1]["segmenter"] is None
        status, res = call(url, "GET", "/api/case/0/proposal/image")
        assert status == 404 and "start `ceusfusion annotate` with --segmenter MODEL" in res["error"]


def test_an_accepted_proposal_gives_segment_predict_the_very_mask_shown(seg, tmp_path):
    out = tmp_path / "BOXES.csv"
    ann = create_annotate_app(seg["todo"], out, warn=lambda m: None, segmenter=seg["model"]).state.annotator
    times = ann.info(4)["video"]["times"]
    shown = {}
    for i, modality, t in ((0, "image", None), (1, "image", None), (4, "video", times[7])):
        case = ann.case(i)
        res, mode, _ = ann.proposer.propose(ann.cohort, case, modality, None, t or 0.0)
        p = ann.proposal(i, modality, None, t)
        assert mode == "auto" and p["box"] is not None
        ann.answer(i, {f"{modality}_box": p["box"], **({"video_box_time": t} if t else {})})  # what `a` sends
        shown[(case["case_id"], modality)] = res.mask
    drawn = [5, 5, 40, 30]  # a user's box on case 2: the proposal is box-prompted from it
    res, mode, _ = ann.proposer.propose(ann.cohort, ann.case(2), "image", tuple(drawn), 0.0)
    assert mode == "box" and ann.proposal(2, "image", ",".join(map(str, drawn)), None)["box"] == drawn
    ann.answer(2, {"image_box": drawn})
    shown[("c26", "image")] = res.mask
    assert rows(out)["image_box"].tolist()[2] == "5,5,40,30"
    segment_predict(seg["todo"], seg["model"], tmp_path / "masks", device="cpu", boxes=out)
    for (cid, modality), mask in shown.items():
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "masks" / "masks" / f"{cid}_{modality}.nii.gz")))[0]
        assert mask.any() and np.array_equal(written.astype(bool), mask), (cid, modality)
    sources = pd.read_csv(tmp_path / "masks" / "cohort.csv", dtype=str).set_index("case_id")
    assert sources.loc["c24", "image_roi_source"] == "predicted_box" and sources.loc["vid", "video_roi_source"] == "predicted_box"
    assert parse_xywh(sources.loc["c24", "image_box"]) == tuple(ann.proposal(0, "image", None, None)["box"])


def test_a_bad_segmenter_folder_is_refused_before_listening(seg, tmp_path, monkeypatch, capsys):
    with pytest.raises(CeusError, match="not a segment model folder"):
        create_annotate_app(seg["todo"], tmp_path / "BOXES.csv", segmenter=tmp_path)
    assert not (tmp_path / "BOXES.csv").exists() and not (tmp_path / ".ceusfusion-files").exists()
    listened = []
    monkeypatch.setattr(annotate_module, "listen", lambda app, host, port, limits: listened.append(port))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "segmenter.json").write_text("{not json")
    assert exit_code(["annotate", str(seg["todo"]), "--out", str(tmp_path / "b.csv"), "--segmenter", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "segmenter.json: unreadable" in err and "Traceback" not in err and listened == []
    assert exit_code(["annotate", str(seg["todo"]), "--out", str(tmp_path / "b.csv"), "--segmenter", str(seg["model"])]) == 0
    assert listened == [8000] and "proposals from the segmenter" in capsys.readouterr().err


@pytest.mark.slow
def test_the_page_in_chromium_draws_the_proposal_accepts_it_and_redoes_it(seg, chromium, tmp_path):
    out = tmp_path / "BOXES.csv"
    app = create_annotate_app(seg["todo"], out, warn=lambda m: None, segmenter=seg["model"])
    auto = app.state.annotator.proposal(0, "image", None, None)
    open_page, errors = chromium
    with running_server(app) as url:
        page = open_page(url + "/", width=1400)
        page.wait_for_selector("body[data-state=ready][data-case='0']")
        page.wait_for_selector("#stage-image[data-proposal=ready]")
        assert page.locator("#stage-image svg polygon").count() >= 1 and page.locator("#stage-image svg rect").count() == 1
        assert "automatic" in page.inner_text("#prop-image") and page.is_visible("#accept-proposal")
        page.keyboard.press("a")  # accept the proposal: its box is written, the next case opens
        page.wait_for_selector("body[data-state=ready][data-case='1']")
        assert rows(out).iloc[0].tolist() == ["c24", ",".join(map(str, auto["box"])), "", ""]
        page.wait_for_selector("#stage-image[data-proposal=ready]")
        x, y, w, h = true_box(seg["truth"]["c25"])  # redo: a box of the user's around the nodule, the proposal follows
        _drag(page, "#stage-image", (x / 88, y / 72), ((x + w) / 88, (y + h) / 72))
        page.wait_for_selector("#stage-image[data-proposal=ready][data-mode=box]")
        assert "box-prompted" in page.inner_text("#prop-image")
        drawn = page.inner_text("#val-image")
        assert page.locator("#stage-image svg rect").count() == 0  # no suggested box: the user's is the box
        page.keyboard.press("a")  # accepting keeps the user's box (it prompted the mask shown)
        page.wait_for_selector("body[data-state=ready][data-case='2']")
        assert rows(out).iloc[1].tolist() == ["c25", drawn, "", ""]
    assert not errors, errors
