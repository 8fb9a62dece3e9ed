"""Are test rows on the training rows' scale? Test/train spread ratios of a run's scores and fusion inputs.

    python bench/scale_ratio.py RUN [RUN ...]

For every predictions file: the ratio of the SD of the test logits to the SD of the training
(out-of-fold) logits. For every features parquet: the same ratio of the total SD (square root of
the summed column variances). When train and test are exchangeable (the synthetic cohort's random
split) a ratio near 1 means test rows meet the thresholds, scaler and classifier on the scale they
were fitted on (issue 15 item 3: 0.85-1.15); the mean of k fold models gives about 0.7.
"""

from __future__ import annotations

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


def main(runs: list[str]) -> None:
    for run in map(Path, runs):
        print(f"{run}")
        for p in sorted((run / "predictions").glob("*.csv")):
            print(f"  logits   {p.stem:32s} test/train SD = {logit_ratio(p):.3f}")
        for p in sorted((run / "features").glob("*.parquet")):
            print(f"  features {p.stem:32s} test/train SD = {feature_ratio(p):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
