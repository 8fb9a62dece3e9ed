"""A run directory for the report's tests, made in seconds: predictions evaluated by the real `evaluate`
(patients with two cases each, so the CIs are clustered), plus the records that the other stages leave
(cv_ranking.csv, fusion.json and its figures, explain.json with and without a signal region, manifest.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.fsutil import savefig
from ceusfusion.evaluate.evaluate import evaluate
from ceusfusion.figures.curves import roc_figure
from ceusfusion.figures.fusion import feature_weights_figure

MODELS = ("DL_image_resnet18", "DL_video_resnet18")
METHODS = {"DL_image_resnet18": "bootstrap bias-corrected CV (BBC-CV)", "DL_video_resnet18": "one candidate, no selection"}


def predictions(run: Path, n: int = 120, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    y = np.repeat((rng.random(n // 2) < 0.35).astype(int), 2)  # two cases per patient, one outcome
    sets = np.where(np.arange(n) < 80, "train", "test")
    latent = rng.normal(y, 1.0)
    paths = []
    for k, name in enumerate(MODELS):
        prob = 1 / (1 + np.exp(-(latent + rng.normal(0, 0.5 + k, n) - 1)))
        df = pd.DataFrame({"case_id": [f"p{i:03d}" for i in range(n)], "set": sets, "group": [f"g{i // 2:03d}" for i in range(n)],
                           "fold": np.where(sets == "train", np.arange(n) % 5, -1), "y": y, "prob": prob,
                           "scoring": np.where(sets == "train", "out-of-fold", "refit on all training cases")})
        path = run / "predictions" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
        paths.append(path)
    return paths


def other_records(run: Path) -> None:
    """What select, fuse, explain and study would have written beside the evaluation."""
    ranking = pd.DataFrame({"name": MODELS, "modality": ["image", "video"], "cv_auc_mean": [0.7, 0.68]})
    ranking.to_csv(run / "evaluation" / "cv_ranking.csv", index=False)
    for name, modality, auc in ranking.itertuples(index=False):
        (run / "models" / name).mkdir(parents=True)
        (run / "models" / name / "summary.json").write_text(json.dumps(
            {"name": name, "modality": modality, "arch": "resnet18", "cv_auc_mean": auc, "select": "last",
             "test_scoring_mode": "refit", "class_weight": "none",
             "weights_used": "a/very/long/path/without/spaces/that/would/push/the/table/off/the/page.safetensors"}))
    savefig(roc_figure([{"name": MODELS[0], "fpr": [0, 1], "tpr": [0, 1], "auc": 0.5, "ci": None}]),
            run / "evaluation" / "figures" / "cv_roc_image.png")
    fusion = run / "fusion"
    (fusion / "figures").mkdir(parents=True)
    (fusion / "fusion.json").write_text(json.dumps({"name": "DL_combined", "n_train": 80, "n_train_pos": 28,
                                                   "chosen_classifier": "LogisticRegression",
                                                   "lasso": {"n_features_in": 1024, "n_selected": 3}}))
    sel = pd.DataFrame({"feature": ["DL_image_resnet18__f0001", "DL_video_resnet18__f0002", "age"],
                        "coefficient": [0.5, -0.3, 0.1], "selected": True})
    savefig(feature_weights_figure(sel), fusion / "figures" / "feature_weights.png")
    for name, region in ((MODELS[0], True), (MODELS[1], False)):
        folder = run / "explain" / name
        folder.mkdir(parents=True)
        d = {"name": name, "layer": "encoder.layer4", "randomisation_check": {"mean_rank_correlation": 0.12},
             "cases": [{"case_id": "p100", "set": "test", "label": 1, "prob": 0.8}]}
        if region:  # the synthetic cohort's signal region: less energy inside than its area share
            d.update(mean_cam_energy_in_region=0.21, mean_region_area_share=0.30)
            d["randomisation_check"]["mean_energy_in_region_randomised"] = 0.25
        (folder / "explain.json").write_text(json.dumps(d))
        savefig(roc_figure([{"name": name, "fpr": [0, 1], "tpr": [0, 1], "auc": 0.5, "ci": None}]), folder / "p100.png")
    checks = {"patient-level split (no patient in both training and test)": {"ok": True, "reason": "60 patient groups"},
              "training folds grouped by patient": {"ok": False, "reason": "a patient in two folds"},
              "pretraining saw no test case": {"ok": None, "reason": "no self-supervised pretraining"}}
    (run / "manifest.json").write_text(json.dumps({"safeguards": checks, "config": {"title": "A test study"}}))


def make_report_run(run: Path) -> Path:
    paths = predictions(run)
    selection = {m: {"auc": 0.7, "ci": [0.6, 0.8], "method": METHODS[m], "n_candidates": 3 - k}
                 for k, m in enumerate(MODELS)}
    evaluate(paths, run / "evaluation", n_boot=200, selection=selection)
    other_records(run)
    return run
