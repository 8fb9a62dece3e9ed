"""Issue 24, 'what the report leaves the reader to guess': figure captions, Table 2's notes, the scale table,
wide tables, one marker per safeguard, a verdict on the Grad-CAM checks, and no 'None' where nothing was measured."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from report_run import METHODS, MODELS, make_report_run

from ceusfusion.explain.sanity import NO_REGION, localisation_verdict, randomisation_verdict
from ceusfusion.report.captions import CAPTIONS, caption_key, figure_caption
from ceusfusion.report.html import build_report


@pytest.fixture(scope="module")
def report(module_tmp_factory):
    run = make_report_run(module_tmp_factory.mktemp("report") / "run")
    return run, unescape(build_report(run).read_text())


def _figures(text: str) -> list[str]:
    """The caption of every figure in the report."""
    figs = re.findall(r'<div class="fig"[^>]*><img [^>]*>(.*?)</div>', text)
    return [re.sub(r'<div class="cap">(.*)', r"\1", f) for f in figs]


def test_every_figure_has_a_caption_saying_what_which_set_which_models_and_n(report):
    run, text = report
    caps = _figures(text)
    assert len(caps) >= 12  # roc, calibration, dca, nia (train, test), nomogram, cv_roc, feature weights, 2 Grad-CAM
    for cap in caps:
        assert len(cap) > 80 and not re.fullmatch(r"[\w ]+: \w+", cap), cap
    assert "ROC: roc_test" not in text and "CV ROC: image" not in text
    roc = next(c for c in caps if c.startswith("ROC curves"))
    assert "test set" in roc and MODELS[0] in roc and MODELS[1] in roc and "n = 40 cases of 20 patients" in roc
    cv = next(c for c in caps if c.startswith("Cross-validated ROC"))
    assert "image architectures (DL_image_resnet18)" in cv and "n = 80 cases of 40 patients" in cv
    fw = next(c for c in caps if c.startswith("Feature weights"))
    assert "3 features kept of 1024" in fw and "80 training cases (28 positive)" in fw
    cam = [c for c in caps if c.startswith("Grad-CAM of")]
    assert len(cam) == 2 and "case p100 (test set, label 1, predicted probability 0.80)" in cam[0]


def test_the_caption_table_is_keyed_by_figure_name(report):
    run, _ = report
    figs = run / "evaluation" / "figures"
    assert caption_key(figs / "roc_train.png") == "roc" and caption_key(figs / "cv_roc_video.png") == "cv_roc"
    assert caption_key(figs / "subgroups_center_test.png") == "subgroups"
    assert caption_key(run / "explain" / MODELS[0] / "p100.png") == "case"
    assert caption_key(figs / "something_else.png") is None
    text, width = figure_caption(figs / "nomogram.png")
    assert width == CAPTIONS["nomogram"].width and "fitted on 80 training cases" in text


def test_table2_notes_say_how_the_selection_corrected_auc_and_the_threshold_were_made(report):
    _, text = report
    after = text[text.index("Table 2."):]
    for model, method in METHODS.items():
        assert f"{model}: {method}" in after
    assert "(3 candidates)" in after  # the image model was chosen among three
    assert "Youden threshold" in after and "training rows" in after and "carried unchanged to the test set" in after


def test_the_ci_methods_are_named_per_model_when_clustered(report):
    _, text = report
    note = text[text.index("95% CIs"):].split("</p>")[0]
    assert "clustered by patient" in note
    for m in MODELS:
        assert f"{m} (test set): AUC by obuchowski (clustered by patient, 20 groups)" in note


def test_the_scale_check_is_a_table_with_a_sentence(report):
    _, text = report
    part = text[text.index("Test scores on the out-of-fold scale"):]
    assert "ratio of the test logits' SD to the out-of-fold logits' SD" in part
    for col in ("SD of out-of-fold logits", "ratio test / out-of-fold", "95% CI of the ratio",
                "calibration-in-the-large (test)", "within 0.8-1.25"):
        assert col in part.split("</table>")[0]


def test_tables_scroll_sideways_inside_a_wrapper(report):
    _, text = report
    assert ".wide{overflow-x:auto" in text
    assert text.count("<table") == text.count('<div class="wide"><table')


def test_safeguards_show_one_marker_per_line(report):
    _, text = report
    ul = re.search(r"<ul class=checks>(.*?)</ul>", text).group(1)
    assert "ul.checks{list-style:none" in text  # no bullet beside the marker
    items = re.findall(r"<li>(.*?)</li>", ul)
    marks = [re.sub(r"<[^>]+>", "", i).strip()[0] for i in items]
    assert marks == ["✔", "✘", "•"]
    for item in items:
        assert sum(re.sub(r"<[^>]+>", "", item).count(m) for m in "✔✘•") == 1


def test_gradcam_checks_state_a_verdict_and_never_print_none(report):
    _, text = report
    part = text[text.index("Do the maps mean something?"):]
    part = part[:part.index("</table>")]
    assert "fails: the map puts less energy in the signal region (0.21) than a uniform map would" in part
    assert NO_REGION in part
    assert "passes: the maps change when the model's weights are randomised" in part
    assert not re.search(r"<td>\s*(None)?\s*</td>", part)


def test_verdicts():
    ok, text = localisation_verdict({"mean_cam_energy_in_region": 0.6, "mean_region_area_share": 0.2,
                                     "randomisation_check": {"mean_energy_in_region_randomised": 0.3}})
    assert ok is True and text.startswith("passes")
    assert localisation_verdict({"mean_cam_energy_in_region": None}) == (None, NO_REGION)
    ok, text = localisation_verdict({"mean_cam_energy_in_region": 0.5, "mean_region_area_share": 0.2,
                                     "randomisation_check": {"mean_energy_in_region_randomised": 0.55}})
    assert ok is False and "no more than the randomised model's maps" in text
    assert randomisation_verdict({"randomisation_check": {"mean_rank_correlation": 0.9}})[0] is False
    assert randomisation_verdict({})[0] is None


def test_the_report_of_a_cohort_without_a_region_says_why(tmp_path):
    """The DDTI report printed 'CAM energy in signal region: None'."""
    folder = tmp_path / "run" / "explain" / "m"
    folder.mkdir(parents=True)
    (folder / "explain.json").write_text(json.dumps({"name": "m", "layer": "l", "cases": []}))
    (folder / "figure5.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    text = unescape(build_report(tmp_path / "run").read_text())
    assert "None" not in text.split("Do the maps mean something?")[1].split("</table>")[0]
    assert "not measured: no signal region is known for this cohort (only the synthetic cohort records one)" in text
