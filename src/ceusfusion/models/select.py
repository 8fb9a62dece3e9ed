"""``ceusfusion select``: the best model per modality by mean CV AUC inside the training split.

The test set never takes part: the ranking reads each model's summary.json (fold AUCs) and its
out-of-fold training predictions only. Writes RUN/selection.json (what ``features``, ``fuse``,
``explain`` and ``export`` follow), RUN/evaluation/cv_ranking.csv and Figure 3 (out-of-fold ROC of
every architecture, one panel per modality).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import read_csv_exact, write_csv, write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.figures.curves import roc_figure, save_figure
from ceusfusion.ingest.cache import read_index
from ceusfusion.stats import auc_ci, roc_curve
from ceusfusion.stats.selection import bbc_cv

RANK_COLUMNS = ["name", "modality", "arch", "input_mode", "weights_used", "folds", "cv_auc_mean", "cv_auc_std", "oof_auc",
                "select", "test_scoring_mode", "class_weight"]
RULE = "highest mean CV AUC inside the training split; the test set is not used"
BBC_RESAMPLES = 2000  # BBC-CV resamples of the out-of-fold predictions (milliseconds each)


def settings_text(row: dict) -> str:
    """One ranking row's settings in words (`train --summary`)."""
    return (f"{row['modality']}, {row['arch']}, {row['input_mode']}; weights {row['weights_used']}; {row['folds']} folds; "
            f"select {row['select']}; test scored by {row['test_scoring_mode']}; class weight {row['class_weight']}")


def rank_models(run, modality: str | None = None) -> pd.DataFrame:
    """Trained models of a run ranked by mean CV AUC (training split only; the test set is never used)."""
    rows = []
    for s in sorted(RunLayout(run).models.glob("*/summary.json")):
        d = json.loads(s.read_text())
        if "cv_auc_mean" not in d or (modality and d.get("modality") != modality):
            continue
        rows.append({k: d.get(k) for k in RANK_COLUMNS})
    df = pd.DataFrame(rows, columns=RANK_COLUMNS)
    return df.sort_values(["cv_auc_mean", "name"], ascending=[False, True], na_position="last").reset_index(drop=True)


def select(run, modalities: list[str] | None = None, names: set[str] | None = None, figures: bool = True) -> dict:
    """Pick the best model of each modality (among ``names`` when given) and record the choice."""
    layout = RunLayout(run)
    ranked = rank_models(run)
    if names is not None:
        ranked = ranked[ranked["name"].isin(names)]
    modalities = modalities or sorted(ranked["modality"].dropna().unique())
    if not modalities:
        raise CeusError(f"no trained model in {layout.models} to select from (train one first)")
    best, tables = {}, []
    for modality in modalities:
        df = ranked[ranked["modality"] == modality]
        if df.empty:
            raise CeusError(f"no trained {modality} model to select from")
        best[modality] = str(df.iloc[0]["name"])
        tables.append(df)
    ranking = pd.concat(tables, ignore_index=True)
    write_csv(layout.cv_ranking, ranking)
    record = {"rule": RULE, "source": "cross-validation", "best": best,
              "candidates": {m: list(t["name"]) for m, t in zip(modalities, tables)},
              "selection_corrected": {m: selection_corrected(run, list(t["name"]), best[m])
                                      for m, t in zip(modalities, tables)}}
    write_json(layout.selection, record)
    if figures:
        cv_figures(run, ranking)
    return record


def oof_matrix(run, names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The out-of-fold probabilities of every candidate on their common training cases: (n x C, y, patient group)."""
    layout = RunLayout(run)
    frames = []
    for name in names:
        pred = read_csv_exact(layout.predictions(name))
        frames.append(pred[pred["set"] == "train"].set_index("case_id")[["y", "prob"]].rename(columns={"prob": name}))
    both = pd.concat([frames[0][["y"]]] + [f[[n]] for f, n in zip(frames, names)], axis=1, join="inner")
    try:
        groups = read_index(run).set_index("case_id")["group"].astype(str)
        g = both.index.map(groups).to_numpy()
    except CeusError:  # a run assembled from predictions only: every case its own patient
        g = both.index.to_numpy()
    g = np.where(pd.isna(g), both.index.to_numpy(), g).astype(str)
    return both[names].to_numpy(float), both["y"].to_numpy(int), g


def selection_corrected(run, names: list[str], best: str) -> dict:
    """The chosen model's out-of-fold AUC corrected for having been the best of ``names`` (BBC-CV), or why not.

    A single candidate needs no correction: its out-of-fold AUC is reported as it is."""
    X, y, g = oof_matrix(run, names)
    if len(names) == 1:
        a = auc_ci(y, X[:, 0])
        return {"model": best, "auc": a.auc, "ci": list(a.ci), "raw_auc": a.auc, "n_candidates": 1,
                "method": "one candidate, no selection: the out-of-fold AUC with its DeLong CI"}
    try:
        est = bbc_cv(X, y, groups=g, B=BBC_RESAMPLES, seed=0)
    except CeusError as e:
        return {"model": best, "auc": None, "ci": None, "raw_auc": None, "n_candidates": len(names),
                "method": f"not computed: {e}"}
    raw = auc_ci(y, X[:, names.index(best)]).auc
    return {"model": best, **est.to_dict(), "raw_auc": raw, "candidates": names}


def read_selection(run) -> dict:
    """The best model per modality, as ``select`` recorded it."""
    path = RunLayout(run).selection
    if not path.is_file():
        raise CeusError(f"{path} not found: run `ceusfusion select --run {Path(run)}` first")
    return json.loads(path.read_text())["best"]


def cv_figures(run, ranking: pd.DataFrame) -> None:
    """Figure 3: out-of-fold ROC of every architecture, one panel per modality."""
    layout = RunLayout(run)
    for modality, df in ranking.groupby("modality"):
        curves = []
        for name in df["name"]:
            pred = read_csv_exact(layout.predictions(name))
            tr = pred[pred["set"] == "train"]
            y, p = tr["y"].to_numpy(), tr["prob"].to_numpy()
            roc, a = roc_curve(y, p), auc_ci(y, p)
            curves.append({"name": name, "fpr": 1 - roc.specificity, "tpr": roc.sensitivity, "auc": a.auc, "ci": a.ci})
        save_figure(roc_figure(curves, f"Cross-validated (out-of-fold) ROC, {modality} models"),
                    layout.figures / f"cv_roc_{modality}")
