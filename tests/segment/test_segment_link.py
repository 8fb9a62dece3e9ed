"""Issue 26: a run whose masks came from `segment predict` records its link to the segmenter (RUN/prepared/
segmenter.json), and the safeguard "no test-split mask trained the segmenter" is computed from the segmenter's
record against the run's test split: a tick when its training cases and patients are all training-split ones, a
red flag naming the test-split case or the test patient's other case otherwise. The report shows the
segmenter's CV Dice and what trained it; so does the model card.

One real segmenter for the module (`segment train`, 8 epochs at 32 px, about 10 s) on 24 training cases of 12
patients; each run is the real chain: segment predict -> prepare -> the link."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from cli_run import exit_code
from segment_fixtures import box_text, nodule_cohort, train_segmenter

from ceusfusion.config import parse_config
from ceusfusion.core.fsutil import sha256_file
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.demo import demo_config
from ceusfusion.deploy.export import segmenter_card
from ceusfusion.ingest.prepare import prepare
from ceusfusion.report.html import write_report
from ceusfusion.safeguards import safeguards
from ceusfusion.segment.link import read_link, record_link
from ceusfusion.segment.predict import segment_predict
from ceusfusion.segment.record import read_record
from ceusfusion.serve.card import rois_html
from ceusfusion.study import Study

CHECK = "no test-split mask trained the segmenter"


@pytest.fixture(scope="module")
def seg(module_tmp_factory):
    root = module_tmp_factory.mktemp("link")
    cohort, truth = nodule_cohort(root / "data")
    model = train_segmenter(cohort, root / "model", epochs=8, size=32, lr=3e-3)
    return {"root": root, "cohort": cohort, "truth": truth, "model": model}


def predicted_run(seg, name: str, edit, via: str = "library"):
    """A run prepared from `segment predict`'s manifest: ``edit(df)`` makes the manifest it segments (the cases
    without a mask get one, box-prompted from their mask's box)."""
    df = pd.read_csv(seg["cohort"], dtype=str)
    df["image_box"] = [box_text(seg["truth"][c]) for c in df["case_id"]]
    df = edit(df)
    manifest = seg["cohort"].parent / f"{name}.csv"
    df.to_csv(manifest, index=False)
    out, run = seg["root"] / f"{name}_masks", seg["root"] / f"{name}_run"
    segment_predict(manifest, seg["model"], out, device="cpu")
    if via == "cli":
        assert exit_code(["prepare", str(out / "cohort.csv"), "--out", str(run), "--size", "32"]) == 0
    elif via == "study":  # the study's prepare stage, as `ceusfusion study` runs it
        Study(parse_config(demo_config(run, out / "cohort.csv", quick=True)), progress=False)._prepare()
    else:
        prepare(out / "cohort.csv", run, progress=False)
        record_link(run)
    return run


def without_masks(cases):
    def edit(df):
        df.loc[df["case_id"].isin(cases), "image_mask"] = ""
        return df
    return edit


def test_a_segmenter_trained_on_training_cases_gets_the_tick_and_its_dice_in_the_report(seg, capsys):
    run = predicted_run(seg, "clean", without_masks(["c20", "c21", "c24", "c25", "c26", "c27"]), via="cli")
    assert "6 predicted mask(s) from the segmenter" in capsys.readouterr().out
    link = read_link(run)
    (f,) = link.segmenters
    rec = read_record(seg["model"])
    assert f.problem is None and f.trained_on == [f"c{i:02d}" for i in range(24)] and f.n_patients() == 12
    assert sorted(f.pictures) == [f"{c} image" for c in ("c20", "c21", "c24", "c25", "c26", "c27")]
    assert set(f.cv) == {"box", "auto"} and len(f.cv_folds["box"]) == 2 and f.cv == rec.cv
    check = safeguards(run)[CHECK]
    assert check["ok"] is True and "24 cases of 12 patients" in check["reason"], check
    assert "4 test-split cases of 2 patients" in check["reason"]
    html = write_report(run, safeguards=safeguards(run)).read_text()
    assert "trained on the masks of 24 training-split cases of 12 patients" in html
    assert f"{rec.cv['box']['dice']:.3f}" in html and "box-prompted" in html and "Dice per fold" in html
    assert f"{rec.cv_folds['box'][0]['dice']:.3f}, {rec.cv_folds['box'][1]['dice']:.3f}" in html
    assert "<span class=ok>✔</span> <b>" + CHECK in html
    rois = html[html.index("region of interest came from"):html.index("mask(s) were predicted by")]
    assert "predicted mask box" in rois and ".000" not in rois  # case counts, not 0.000
    card = segmenter_card(RunLayout(run))
    assert card[0]["trained_cases"] == 24 and card[0]["test_cases_in_training"] == [] and card[0]["model"] == "model"
    assert str(seg["root"]) not in json.dumps(card)  # a card travels: no path of this disk
    shown = rois_html({"roi_sources": {"image": {"manual_mask": {"train": 22}}}, "segmenters": card})
    assert "no test-split case or patient among its training" in shown and "manual mask 22" in shown


def test_a_test_split_case_among_its_training_cases_is_a_red_flag_naming_it(seg):
    def edit(df):  # the run re-split: patient p00 (c00, c01, both trained the segmenter) now in the test split
        df.loc[df["case_id"].isin(["c00", "c01"]), ["split", "image_mask"]] = ["test", ""]
        return df
    check = safeguards(predicted_run(seg, "leak", edit))[CHECK]
    assert check["ok"] is False and "test-split case(s): c00, c01" in check["reason"], check


def test_a_test_patients_other_case_among_its_training_cases_is_a_red_flag(seg):
    def edit(df):  # c00 and c01 (patient p00) trained it; the run has a third case of p00, in its test split
        extra = df[df["case_id"] == "c00"].assign(case_id="x00", split="test", image_mask="")
        return pd.concat([df[~df["case_id"].isin(["c00", "c01"])], extra])
    check = safeguards(predicted_run(seg, "patient", edit))[CHECK]
    assert check["ok"] is False and "x00 (its patient's case c00), x00 (its patient's case c01)" in check["reason"]


def test_no_predicted_mask_is_not_applicable_and_a_lost_record_is_unknown(seg):
    run = predicted_run(seg, "manual", lambda df: df)  # every case has its manual mask: nothing predicted
    assert read_link(run) is None and not RunLayout(run).segmenter_link.exists()
    assert safeguards(run)[CHECK] == {"ok": None, "reason": "no ROI came from a segmenter"}
    run = predicted_run(seg, "lost", without_masks(["c24"]))
    (seg["root"] / "lost_masks" / "summary.json").unlink()  # the chain to the record broken: say so, never tick
    record_link(run)
    check = safeguards(run)[CHECK]
    assert check["ok"] is False and "no summary.json of `segment predict`" in check["reason"]
    assert "unknown" in check["reason"] and "\n" not in check["reason"] and str(seg["root"]) not in check["reason"]
    RunLayout(run).segmenter_link.unlink()  # a run prepared before links were recorded
    assert safeguards(run)[CHECK]["ok"] is False and "recorded no link" in safeguards(run)[CHECK]["reason"]


def test_a_retrained_segmenter_is_not_the_one_that_made_the_masks(seg):
    run = predicted_run(seg, "retrained", without_masks(["c25"]))
    moved = seg["root"] / "model_copy"
    shutil.copytree(seg["model"], moved)
    summary = seg["root"] / "retrained_masks" / "summary.json"
    data = json.loads(summary.read_text())
    data["model"] = str(moved)
    data["model_sha256"] = "0" * 64  # what the record's sha256 was when predict ran: not today's
    summary.write_text(json.dumps(data))
    (f,) = record_link(run).segmenters
    assert "changed after `segment predict`" in f.problem and "retrained" in f.problem
    check = safeguards(run)[CHECK]
    assert check["ok"] is False and "model_copy/segmenter.json changed" in check["reason"]
    assert str(seg["root"]) not in check["reason"] and str(seg["root"]) not in write_report(run).read_text()


def test_the_studys_prepare_stage_records_the_link_too(seg):
    run = predicted_run(seg, "study", without_masks(["c26"]), via="study")
    (f,) = read_link(run).segmenters
    assert f.pictures == ["c26 image"] and f.record_sha256 == sha256_file(seg["model"] / "segmenter.json")
    assert safeguards(run)[CHECK]["ok"] is True
