"""The report's safeguards are computed from the stages' records, and say why when one does not hold."""

from __future__ import annotations

import json

import pandas as pd
from fake_run import make_fake_run

from ceusfusion.core.fsutil import write_csv, write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.safeguards import safeguards

HONEST = {"select": "last", "test_scoring_mode": "refit", "class_weight": "none"}


SCALE = {"sd_oof": 1.3, "sd_test": 1.2, "ratio": 1.2 / 1.3, "ratio_ci": [0.8, 1.1], "ok": True, "range": [0.8, 1.25],
         "citl": 0.1, "n_oof": 12, "n_test": 4}


def _records(tmp_path, summary: dict, fusion_grouped=True, split_groups=False, fold_groups=False,
             scale=SCALE, no_patients=False) -> RunLayout:
    """A run with one selected model, its folds, a cohort, metrics and fusion.json, as the stages write them."""
    run = make_fake_run(tmp_path, n_train=12, n_test=4, size=8, frames=2, group_size=2)
    layout = RunLayout(run)
    idx = pd.read_csv(layout.prepared / "index.csv", dtype=str)
    cohort = idx[["case_id", "label", "split", "group"]].copy()
    if split_groups:  # a test case shares a training patient's group
        cohort.loc[cohort["split"] == "test", "group"] = cohort["group"].iloc[0]
    if no_patients:  # a manifest without a group column: prepare writes RUN/cohort.csv without one
        cohort = cohort.drop(columns="group")
    write_csv(layout.cohort, cohort)
    tr = idx[idx["split"] == "train"].reset_index(drop=True)
    fold = [(i // 2) % 2 for i in range(len(tr))]  # groups of two, kept together
    if fold_groups:
        fold[1] = 1 - fold[0]
    write_csv(layout.model("m") / "folds.csv", pd.DataFrame({"case_id": tr["case_id"], "fold": fold}))
    write_json(layout.model("m") / "summary.json", summary)
    # train writes config.json beside it: the settings, and only those recorded when the model was trained
    config = {"name": "m", "modality": "image", "arch": "resnet18", "input_mode": "single", "frames": 1,
              "frame_channels": 1, "image_size": 8, "crop": 8, "folds": 2, "pretrained": False}
    config.update({k: summary[k] for k in ("select", "class_weight") if k in summary})
    if "test_scoring_mode" in summary:
        config["test_scoring"] = summary["test_scoring_mode"]
    write_json(layout.model("m") / "config.json", config)
    write_json(layout.selection, {"source": "cross-validation", "rule": "mean CV AUC", "best": {"image": "m"}})
    write_json(layout.metrics, {"sets": {"test": {"models": {"m": {"threshold_source": "train", "scale": scale}}}}})
    write_json(layout.fusion / "fusion.json", {"lasso": {"folds": [{}, {}]},
                                               "cv": {"folds": 2, "grouped": fusion_grouped}})
    return layout


def test_an_honest_run_passes_every_check_with_a_reason(tmp_path):
    checks = safeguards(_records(tmp_path, HONEST).root)
    assert all(c["reason"] for c in checks.values())
    assert [k for k, c in checks.items() if c["ok"] is not True] == [  # neither was done
        "pretraining saw no test case", "no test-split mask trained the segmenter"]
    json.dumps(checks)  # goes into manifest.json


def test_each_broken_safeguard_is_a_cross_with_its_reason(tmp_path):
    old = {"select": "best"}  # a model trained before these were recorded: best epoch, fold mean, weighted loss
    checks = safeguards(_records(tmp_path, old, fusion_grouped={"outer": True, "lasso": False},
                                 split_groups=True, fold_groups=True).root)
    bad = {k: c["reason"] for k, c in checks.items() if c["ok"] is False}
    assert "optimistic" in bad["out-of-fold scores not chosen on the cases they score"]
    assert "prior correction" in bad["probabilities on the cohort's prevalence"]
    assert "lasso" in bad["every fusion CV grouped by patient (outer and inner)"]
    assert "in both training and test" in bad["patient-level split (no patient in both training and test)"]
    assert "more than one fold" in bad["training folds grouped by patient"]


def test_pretraining_on_test_cases_is_a_cross_even_when_allowed(tmp_path):
    fact = {"weights": "w.safetensors", "test_overlap": ["c3"], "allowed": True, "transductive_train_frames": True}
    checks = safeguards(_records(tmp_path, {**HONEST, "pretrain_provenance": fact}).root)
    c = checks["pretraining saw no test case"]
    assert c["ok"] is False and "c3" in c["reason"] and "--allow-pretrain-overlap" in c["reason"]
    clean = {**fact, "test_overlap": []}
    c = safeguards(_records(tmp_path / "b", {**HONEST, "pretrain_provenance": clean}).root)["pretraining saw no test case"]
    assert c["ok"] is True and "transductive" in c["reason"]


def test_the_test_scale_is_ticked_from_the_measurement_only(tmp_path):
    name = "test set scored on the out-of-fold scale (measured)"
    ok = safeguards(_records(tmp_path / "a", {**HONEST, "test_scoring_mode": "fold-mean"}).root)[name]
    assert ok["ok"] is True and "0.92" in ok["reason"]  # the setting does not matter; the measurement does
    shrunk = {**SCALE, "sd_test": 0.66, "ratio": 0.66 / 1.3, "ratio_ci": [0.4, 0.62], "ok": False}
    bad = safeguards(_records(tmp_path / "b", HONEST, scale=shrunk).root)[name]
    assert bad["ok"] is False and "0.51" in bad["reason"] and "recalibrate" in bad["reason"]
    unmeasured = safeguards(_records(tmp_path / "c", HONEST, scale=None).root)[name]
    assert unmeasured["ok"] is None and "not measured" in unmeasured["reason"]


def test_without_a_patient_column_nothing_is_ticked_as_patient_grouping(tmp_path):
    checks = safeguards(_records(tmp_path, HONEST, no_patients=True).root)
    for name in ("every fusion CV grouped by patient (outer and inner)", "training folds grouped by patient",
                 "patient-level split (no patient in both training and test)"):
        assert checks[name]["ok"] is None and "grouped by case: no patient column given" in checks[name]["reason"]


def test_pretrained_weights_without_a_provenance_record_are_a_cross(tmp_path):
    fact = {"weights": "w.safetensors", "record": "absent", "test_overlap": [], "allowed": False}
    c = safeguards(_records(tmp_path, {**HONEST, "pretrain_provenance": fact}).root)["pretraining saw no test case"]
    assert c["ok"] is False and "unknown" in c["reason"]


def test_a_pretraining_record_that_matched_bytes_only_is_a_cross(tmp_path):
    fact = {"weights": "w.safetensors", "record": "present", "record_version": 1, "test_overlap_check": "bytes only",
            "test_overlap": [], "allowed": False}
    c = safeguards(_records(tmp_path, {**HONEST, "pretrain_provenance": fact}).root)["pretraining saw no test case"]
    assert c["ok"] is False and "re-encoded" in c["reason"]
    fact = {**fact, "record_version": 2, "test_overlap_check": "decoded content"}
    c = safeguards(_records(tmp_path / "b", {**HONEST, "pretrain_provenance": fact}).root)["pretraining saw no test case"]
    assert c["ok"] is True
