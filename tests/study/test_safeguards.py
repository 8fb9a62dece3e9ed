"""The report's safeguards are computed from the stages' records, and say why when one does not hold."""

from __future__ import annotations

import json

import pandas as pd
from fake_run import make_fake_run

from ceusfusion.core.fsutil import write_csv, write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.safeguards import safeguards

HONEST = {"select": "last", "test_scoring_mode": "refit", "class_weight": "none"}


def _records(tmp_path, summary: dict, fusion_grouped=True, split_groups=False, fold_groups=False) -> RunLayout:
    """A run with one selected model, its folds, a cohort, metrics and fusion.json, as the stages write them."""
    run = make_fake_run(tmp_path, n_train=12, n_test=4, size=8, frames=2, group_size=2)
    layout = RunLayout(run)
    idx = pd.read_csv(layout.prepared / "index.csv", dtype=str)
    cohort = idx[["case_id", "label", "split", "group"]].copy()
    if split_groups:  # a test case shares a training patient's group
        cohort.loc[cohort["split"] == "test", "group"] = cohort["group"].iloc[0]
    write_csv(layout.cohort, cohort)
    tr = idx[idx["split"] == "train"].reset_index(drop=True)
    fold = [(i // 2) % 2 for i in range(len(tr))]  # groups of two, kept together
    if fold_groups:
        fold[1] = 1 - fold[0]
    write_csv(layout.model("m") / "folds.csv", pd.DataFrame({"case_id": tr["case_id"], "fold": fold}))
    write_json(layout.model("m") / "summary.json", summary)
    write_json(layout.selection, {"source": "cross-validation", "rule": "mean CV AUC", "best": {"image": "m"}})
    write_json(layout.metrics, {"sets": {"test": {"models": {"m": {"threshold_source": "train"}}}}})
    write_json(layout.fusion / "fusion.json", {"lasso": {"folds": [{}, {}]},
                                               "cv": {"folds": 2, "grouped": fusion_grouped}})
    return layout


def test_an_honest_run_passes_every_check_with_a_reason(tmp_path):
    checks = safeguards(_records(tmp_path, HONEST).root)
    assert all(c["reason"] for c in checks.values())
    assert [k for k, c in checks.items() if c["ok"] is not True] == ["pretraining saw no test case"]  # none was done
    json.dumps(checks)  # goes into manifest.json


def test_each_broken_safeguard_is_a_cross_with_its_reason(tmp_path):
    old = {"select": "best"}  # a model trained before these were recorded: best epoch, fold mean, weighted loss
    checks = safeguards(_records(tmp_path, old, fusion_grouped={"outer": True, "lasso": False},
                                 split_groups=True, fold_groups=True).root)
    bad = {k: c["reason"] for k, c in checks.items() if c["ok"] is False}
    assert "optimistic" in bad["out-of-fold scores not chosen on the cases they score"]
    assert "mean of the fold models" in bad["test set scored once, after training, on the out-of-fold scale"]
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
