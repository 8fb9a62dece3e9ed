"""Are test rows on the training rows' scale? Test/train spread ratios of a run's scores and fusion inputs.

    python bench/scale_ratio.py RUN [RUN ...]
    python bench/scale_ratio.py RUN --models NAME [NAME ...]   # each fold model's and the refit's own spread,
                                                               # and the refit's against the fold models'

For every predictions file: the ratio of the SD of the test logits to the SD of the training
(out-of-fold) logits. For every features parquet: the same ratio of the total SD (square root of
the summed column variances). When train and test are exchangeable (the synthetic cohort's random
split) a ratio near 1 means test rows meet the thresholds, scaler and classifier on the scale they
were fitted on (issue 15 item 3: 0.85-1.15); the mean of k fold models gives about 0.7.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ceusfusion.fusion.features import feature_names, read_features  # noqa: E402


def logit_ratio(path: Path) -> float:
    pred = pd.read_csv(path)
    p = pred["prob"].clip(1e-6, 1 - 1e-6)
    z = np.log(p / (1 - p))
    return float(z[pred["set"] == "test"].std() / z[pred["set"] == "train"].std())


def feature_ratio(path: Path) -> float:
    df, _ = read_features(path)
    f = feature_names(df)
    var = {s: df.loc[df["set"] == s, f].var().sum() for s in ("train", "test")}
    return float(np.sqrt(var["test"] / var["train"]))


def model_spreads(run: Path, name: str) -> None:
    """Test-logit SD of each fold model and of the refitted one, and each fold model's own out-of-fold SD:
    how much one model's scale varies between training runs."""
    import torch

    from ceusfusion.models.data import load_cached
    from ceusfusion.models.registry import load_fold_model, read_config, transform_for
    from ceusfusion.models.train import predict_probs

    cfg = read_config(run, name)
    data = load_cached(run, cfg.modality, cfg.size)
    folds = pd.read_csv(run / "models" / name / "folds.csv", dtype={"case_id": str}).set_index("case_id")["fold"]
    test = np.flatnonzero(data.split == "test")
    torch.set_num_threads(1)
    sds = {}
    for k in [*range(cfg.folds), "full"]:
        if not (run / "models" / name / (k if k == "full" else f"fold{k}")).is_dir():
            continue
        model, _ = load_fold_model(run, name, k)
        z = np.log(np.clip(p := predict_probs(model, data, test, transform_for(cfg)), 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
        sds[k] = float(z.std(ddof=1))
        line = f"  {name} model {k}: test logit SD {z.std(ddof=1):.3f}"
        own = np.array([i for i, c in enumerate(data.case_ids) if folds.get(c, -9) == k], dtype=np.int64)
        if len(own):
            q = np.clip(predict_probs(model, data, own, transform_for(cfg)), 1e-6, 1 - 1e-6)
            line += f", own out-of-fold SD {np.log(q / (1 - q)).std(ddof=1):.3f}"
        print(line)
    folds = [v for k, v in sds.items() if k != "full"]
    if "full" in sds and folds:  # the refit against the fold models on the same test cases: no split noise
        summary = json.loads((run / "models" / name / "summary.json").read_text())
        print(f"  {name} refit / mean fold-model test SD {sds['full'] / np.mean(folds):.3f} "
              f"(fold models {min(folds):.3f}-{max(folds):.3f}); optimiser steps: folds {summary.get('fold_steps')}, "
              f"refit {summary.get('refit_steps')} ({summary.get('refit_matched') or 'not recorded'})")


def main(runs: list[str]) -> None:
    for run in map(Path, runs):
        print(f"{run}")
        for p in sorted((run / "predictions").glob("*.csv")):
            print(f"  logits   {p.stem:32s} test/train SD = {logit_ratio(p):.3f}")
        for p in sorted((run / "features").glob("*.parquet")):
            print(f"  features {p.stem:32s} test/train SD = {feature_ratio(p):.3f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--models" in args:
        i = args.index("--models")
        for n in args[i + 1:]:
            model_spreads(Path(args[0]), n)
    else:
        main(args)
