"""Issue 24: the serve page names each perfusion parameter in words with its unit (not `gv_mtt`), and says so
when a Grad-CAM map is empty instead of showing a dark square without a word. The page's own script is run in
headless Chromium on a made-up answer (no bundle, no server); the name table is checked against
``ingest.perfusion.COLUMNS`` without a browser."""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from importlib.resources import files

import pytest

from ceusfusion.ingest.perfusion import COLUMNS

APP_JS = (files("ceusfusion.serve") / "static" / "app.js").read_text(encoding="utf-8")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOT = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def test_every_perfusion_parameter_has_a_label_and_a_unit_entry():
    table = APP_JS[APP_JS.index("const PERFUSION = {"):]
    table = table[:table.index("};")]
    keys = re.findall(r"^\s+(\w+): \[", table, flags=re.M)
    assert sorted(keys) == sorted(COLUMNS)


def answer(gradcam_empty: bool) -> dict:
    perfusion = {k: 1.5 for k in COLUMNS}
    perfusion.update(tic_frames=24, gv_mtt=6.25, time_to_peak=12.5, peak_intensity=88.5, wash_in_slope=9.75)
    video = {"times": [2.0, 4.0], "tic": {"times": [0, 1, 2], "lesion": [1, 3, 2], "ring": [1, 2, 2], "fitted": None},
             "perfusion": perfusion}
    return {"inputs": {"video": video}, "models": {
        "DL_image_resnet18": {"available": True, "modality": "image", "prob": 0.4, "gradcam": DOT,
                              "gradcam_empty": gradcam_empty},
        "DL_video_resnet18": {"available": True, "modality": "video", "prob": 0.6, "gradcam": DOT},
        "DL_combined": {"available": True, "prob": 0.5}}}


@contextmanager
def app_page(body: str):
    """A headless Chromium page holding ``body`` and the page's own script (no bundle, no server)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.set_content(body)
            page.add_script_tag(content=APP_JS)
            yield page
        finally:
            browser.close()


@pytest.mark.slow  # a browser start: seconds
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser found (apt-get install chromium; .ci/run does)")
def test_the_page_says_units_and_an_empty_map_in_words():
    with app_page('<div id="cams"></div><div id="tic"></div><table id="perfusion"><tbody></tbody></table>') as page:
        page.evaluate("r => { renderCams(r); renderTic(r.inputs.video); }", answer(True))
        cells = {c.get_attribute("data-key"): c.inner_text() for c in page.query_selector_all("#perfusion td")}
        heads = [h.inner_text() for h in page.query_selector_all("#perfusion th")]
        assert cells["gv_mtt"] == "6.250 s" and cells["time_to_peak"] == "12.50 s" and cells["tic_frames"] == "24 frames"
        assert cells["peak_intensity"] == "88.50 grey level" and cells["wash_in_slope"] == "9.750 grey level/s"
        assert "gamma-variate mean transit time" in heads and "time to peak" in heads
        assert not any("_" in h for h in heads)  # no raw column name
        figs = page.query_selector_all("#cams figure")
        assert [f.get_attribute("data-model") for f in figs] == ["DL_image_resnet18", "DL_video_resnet18"]
        assert "The map is empty: no region drove the score" in figs[0].inner_text()
        assert "empty" not in figs[1].inner_text()
        page.evaluate("r => renderCams(r)", {"models": {"DL_image_resnet18": {"available": True, "modality": "image"}}})
        assert page.inner_text("#cams").startswith("DL_image_resnet18: no Grad-CAM map:")


def card_of(outcome: dict | None) -> dict:
    oof = {"y": [0, 0, 1], "prob": [0.1, 0.3, 0.7]}
    return {"outcome": outcome, "models": [{"name": n, "train_oof": oof} for n in ("DL_image_resnet18", "DL_video_resnet18")]}


@pytest.mark.slow  # a browser start: seconds
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser found (apt-get install chromium; .ci/run does)")
def test_the_page_names_the_class_in_the_bundles_outcome_words():
    """Issue 24: the page took "OLNM+"/"OLNM−" for every bundle; it reads the words from /api/model's card."""
    body = ('<table id="probs"><tbody></tbody></table><div id="strips"></div><div id="cams"></div><div id="tic"></div>'
            '<table id="perfusion"><tbody></tbody></table><section id="results"></section>')
    with app_page(body) as page:
        res = answer(False)
        res["models"]["DL_image_resnet18"].update(threshold=0.5, **{"class": 0})
        res["models"]["DL_video_resnet18"].update(threshold=0.5, **{"class": 1})
        res["models"].pop("DL_combined")
        for outcome, neg, pos in ((None, "negative", "positive"), ({"negative": "no OLNM", "positive": "OLNM"}, "no OLNM", "OLNM")):
            page.evaluate("([c, r]) => { card = c; render(r); }", [card_of(outcome), res])
            cells = [c.inner_text() for c in page.query_selector_all("#probs td.cls")]
            assert cells == [f"{neg} (below the threshold)", f"{pos} (at or above the threshold)"]
            standing = page.inner_text("#probs")
            assert f"of 2 {neg}" in standing and f"of 1 {pos}" in standing, standing
            assert all(w in page.inner_html("#strips") for w in (f">{neg}<", f">{pos}<"))
            if outcome is None:
                assert "OLNM" not in page.inner_text("body")


@pytest.mark.slow  # a browser start: seconds
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser found (apt-get install chromium; .ci/run does)")
def test_the_page_warns_when_a_picture_was_scored_on_the_whole_frame():
    """Issue 24: a still without a mask or box was scored on the whole frame and placed among the training
    patients' crops with no word; the answer's warnings are shown above the numbers."""
    from ceusfusion.deploy.predict import whole_frame_warnings

    body = ('<div id="warnings"></div><table id="probs"><tbody></tbody></table><div id="strips"></div>'
                        '<div id="cams"></div><div id="tic"></div><table id="perfusion"><tbody></tbody></table>'
            '<section id="results"></section>')
    res = answer(False)
    for name in ("DL_image_resnet18", "DL_video_resnet18"):
        res["models"][name].update(threshold=0.5, **{"class": 0})
    res["models"].pop("DL_combined")
    res["warnings"] = whole_frame_warnings({"image": {"roi": "whole frame"}, "video": {"roi": "mask"}})
    assert len(res["warnings"]) == 1 and "image was scored on the whole frame" in res["warnings"][0]
    with app_page(body) as page:
        page.evaluate("([c, r]) => { card = c; render(r); }", [card_of(None), res])
        assert "Warning: the image was scored on the whole frame" in page.inner_text("#warnings")
        page.evaluate("([c, r]) => { card = c; render(r); }", [card_of(None), {**res, "warnings": []}])
        assert page.inner_text("#warnings") == ""
