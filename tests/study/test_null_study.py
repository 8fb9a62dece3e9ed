"""Pure noise in, chance out (issue 23): on permuted labels every number the report shows for the training set is
at chance once corrected, and the test scale is measured.

The deep models are stood in for by noise scores (three architectures per modality, out-of-fold rows and test
rows on one scale), so the test runs the real select → score features → fuse → internal validation → evaluate
stages in seconds per seed; bench/null_study.py runs whole studies (deep training included) the same way.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fake_run import make_fake_run
from sklearn.metrics import roc_auc_score

from ceusfusion.core.fsutil import write_csv, write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.evaluate.evaluate import evaluate
from ceusfusion.fusion.extract import score_features
from ceusfusion.fusion.inputs import load_inputs
from ceusfusion.fusion.pipeline import FusionConfig, fuse
from ceusfusion.fusion.validation import internal_validation
from ceusfusion.models.select import select

pytestmark = pytest.mark.slow
ARCHS = ("a", "b", "c")
SEEDS = (0, 1, 2)


def noise_candidates(run, seed: int) -> None:
    """Three noise 'architectures' per modality: summary.json, folds.csv and predictions as train writes them."""
    layout = RunLayout(run)
    idx = pd.read_csv(layout.prepared / "index.csv", dtype={"case_id": str, "group": str})
    rng = np.random.default_rng(seed)
    y = idx["label"].astype(int).to_numpy()
    tr = (idx["split"] == "train").to_numpy()
    fold = np.where(tr, pd.factorize(idx["group"])[0] % 3, -1)
    for modality in ("image", "video"):
        for arch in ARCHS:
            name = f"DL_{modality}_{arch}"
            prob = 1 / (1 + np.exp(-rng.normal(-0.5, 1.0, len(idx))))
            write_csv(layout.predictions(name), pd.DataFrame(
                {"case_id": idx["case_id"], "set": idx["split"], "fold": fold, "y": y, "prob": prob}))
            aucs = [roc_auc_score(y[fold == k], prob[fold == k]) for k in range(3)]
            write_json(layout.model(name) / "summary.json", {"name": name, "modality": modality, "arch": arch,
                                                             "cv_auc_mean": float(np.mean(aucs)), "folds": 3})
            write_csv(layout.model(name) / "folds.csv", pd.DataFrame({"case_id": idx["case_id"][tr], "fold": fold[tr]}))


def null_study(tmp_path, seed: int) -> dict:
    """One permuted-label study through the stage functions; the numbers the report would show."""
    run = make_fake_run(tmp_path / f"s{seed}", n_train=240, n_test=80, size=8, frames=2, signal=0.0, pos_rate=0.35,
                        seed=seed, group_size=2)
    layout = RunLayout(run)
    idx = pd.read_csv(layout.prepared / "index.csv", dtype=str)
    write_csv(layout.cohort, idx[["case_id", "label", "split", "group"]])
    noise_candidates(run, seed)
    best = select(run, figures=False)["best"]
    feats = [score_features(run, best[m]) for m in ("image", "video")]
    # two families, one flexible (knn memorises its rows); one nested-CV repeat keeps the test in seconds
    cfg = FusionConfig(classifiers=["lr", "knn"], folds=3, inner_folds=3, fast=True, seed=seed, validation_repeats=1)
    res = fuse(feats, layout.fusion, cfg=cfg, figures=False)
    write_csv(layout.predictions("DL_combined"), res.predictions)
    iv = internal_validation(load_inputs(feats), cfg, res.summary["chosen_family"], seed=seed, model=res.model)
    sel = json.loads(layout.selection.read_text())["selection_corrected"]
    selection = {r["model"]: r for r in sel.values()} | {"DL_combined": res.summary["selection_corrected"]}
    names = [best["image"], best["video"], "DL_combined"]
    m = evaluate([layout.predictions(n) for n in names], layout.evaluation, seed=seed, cohort=layout.cohort,
                 figures=False, validation=iv, selection=selection)
    train, test = m["sets"]["train"]["models"], m["sets"]["test"]["models"]
    return {"corrected": {n.rsplit("_", 1)[0] if n != "DL_combined" else n: train[n]["selection_corrected"]["auc"]
                          for n in names},
            "raw": {n: train[n]["auc"] for n in names}, "c_index": iv["indexes"]["C"]["index_corrected"],
            "method": iv["method"], "scale_measured": all(test[n].get("scale", {}).get("ok") is not None for n in names)}


@pytest.fixture(scope="module")
def null_runs(module_tmp_factory):
    tmp = module_tmp_factory.mktemp("null")
    return [null_study(tmp, seed) for seed in SEEDS]


def test_every_corrected_training_auc_is_at_chance_on_average(null_runs):
    for model in ("DL_image", "DL_video", "DL_combined"):
        mean = np.mean([r["corrected"][model] for r in null_runs])
        assert abs(mean - 0.5) < 0.07, (model, [r["corrected"][model] for r in null_runs])


def test_the_corrected_c_index_is_at_chance_and_says_how(null_runs):
    assert abs(np.mean([r["c_index"] for r in null_runs]) - 0.5) < 0.07, [r["c_index"] for r in null_runs]
    assert all("nested" in r["method"].lower() for r in null_runs)  # three families compared: not Harrell's bootstrap


def test_the_test_scale_is_measured_for_every_model(null_runs):
    assert all(r["scale_measured"] for r in null_runs)
