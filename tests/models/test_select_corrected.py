"""select: the chosen architecture's out-of-fold AUC beside its selection-corrected value (BBC-CV)."""

import json

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ceusfusion.models.select import select


def write_candidates(run, names, seed, n=150, signal=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    (run / "predictions").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        prob = 1 / (1 + np.exp(-(rng.normal(size=n) + (signal or {}).get(name, 0.0) * y)))
        pd.DataFrame({"case_id": [f"c{j:03d}" for j in range(n)], "set": "train", "fold": np.arange(n) % 3,
                      "y": y, "prob": prob}).to_csv(run / "predictions" / f"{name}.csv", index=False)
        folds = [roc_auc_score(y[np.arange(n) % 3 == k], prob[np.arange(n) % 3 == k]) for k in range(3)]
        (run / "models" / name).mkdir(parents=True, exist_ok=True)
        (run / "models" / name / "summary.json").write_text(json.dumps(
            {"name": name, "modality": "image", "cv_auc_mean": float(np.mean(folds)), "cv_auc_std": 0.0}))


def test_the_best_of_five_noise_models_is_corrected_towards_chance(tmp_path):
    gaps = []
    for seed in range(4):
        run = tmp_path / f"r{seed}"
        names = [f"DL_image_a{i}" for i in range(5)]
        write_candidates(run, names, seed)
        rec = select(run, figures=False)
        corr = rec["selection_corrected"]["image"]
        assert corr["model"] == rec["best"]["image"] and corr["n_candidates"] == 5 and "BBC-CV" in corr["method"]
        gaps.append(corr["raw_auc"] - corr["auc"])
        assert json.loads((run / "selection.json").read_text())["selection_corrected"]["image"]["auc"] == corr["auc"]
    assert np.mean(gaps) > 0.02  # the raw best-of-five is optimistic on noise; the corrected value is not


def test_one_candidate_needs_no_correction(tmp_path):
    write_candidates(tmp_path, ["DL_image_only"], 0, signal={"DL_image_only": 1.0})
    corr = select(tmp_path, figures=False)["selection_corrected"]["image"]
    assert corr["n_candidates"] == 1 and "no selection" in corr["method"] and corr["auc"] > 0.6
