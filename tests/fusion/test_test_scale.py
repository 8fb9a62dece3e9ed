"""Issue 15 item 3: test rows on the training rows' scale, by construction.

Train and test are exchangeable here (same generator, same size), so a test row
should look like a training row: the spread of the deep model's test logits and
of its test features must match the out-of-fold training rows' (ratio 0.76-1.15: one model's
spread on 80 cases moves 0.83-1.03 between CPUs).
The mean of the fold models (``test_scoring: fold-mean``) shrinks it to about 0.7.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from fake_run import make_fake_run

from ceusfusion.fusion.extract import extract_features
from ceusfusion.fusion.features import feature_names
from ceusfusion.models.train import TrainConfig, train

torch.set_num_threads(1)


def _spread_ratios(run, name: str) -> tuple[float, float]:
    """(test/train SD of the logits, test/train total SD of the penultimate features)."""
    pred = pd.read_csv(run / "predictions" / f"{name}.csv")
    p = pred["prob"].clip(1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    lr = logit[pred["set"] == "test"].std() / logit[pred["set"] == "train"].std()
    df, _ = extract_features(run, name)
    f = feature_names(df)
    var = {s: df.loc[df["set"] == s, f].var().sum() for s in ("train", "test")}
    return float(lr), float(np.sqrt(var["test"] / var["train"]))


@pytest.mark.slow
# measured (BENCHMARKS.md, "Test margins"; logits, features): refit 1.03, 1.03 at one thread, 0.92, 0.98 at two,
# 0.83, 0.97 with AVX2 kernels; fold-mean 0.71, 0.72; 0.70, 0.69; 0.68, 0.70. The refit's lower bound sits between
# the two (a refit that shrinks like the fold mean, or the old refit with more optimiser steps at about 0.5, fails);
# 0.85 failed on AVX2 kernels
@pytest.mark.parametrize("scoring,lo,hi", [("refit", 0.76, 1.15), ("fold-mean", 0.0, 0.85)])
def test_test_logits_and_features_have_the_training_rows_spread(tmp_path, scoring, lo, hi):
    run = make_fake_run(tmp_path, n_train=80, n_test=80, size=24, frames=2, group_size=1, with_video=False,
                        signal=1.0, pos_rate=0.4, seed=2)
    cfg = TrainConfig(modality="image", arch="resnet18", weights="none", epochs=4, folds=3, batch_size=16, crop=16,
                      lr=1e-3, seed=0, test_scoring=scoring)
    train(run, cfg, progress=False)
    logits, feats = _spread_ratios(run, cfg.name)
    assert lo <= logits <= hi and lo <= feats <= hi, (scoring, logits, feats)
