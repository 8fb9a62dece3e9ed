"""bench/baselines.py: pixel → PCA → LR baselines on a fake prepared run (signal, folds, test rows)."""

import sys

import numpy as np
import pytest
from fake_run import make_fake_run
from paths import ROOT  # noqa: E402

from ceusfusion.models.data import load_cached
from ceusfusion.models.ensemble import make_folds
from ceusfusion.models.train import safe_auc

sys.path.insert(0, str(ROOT / "bench"))
import baselines  # noqa: E402


@pytest.fixture(scope="module")
def run(module_tmp_factory):
    return make_fake_run(module_tmp_factory.mktemp("run"), n_train=40, n_test=10, size=16, frames=3, signal=1.0)


@pytest.mark.parametrize("kind", baselines.KINDS)
def test_baseline_learns_the_planted_signal_on_the_training_folds(run, kind):
    pred = baselines.pixel_baseline(run, kind, folds=4, seed=0, size=16, n_components=5)
    tr, te = pred[pred["set"] == "train"], pred[pred["set"] == "test"]
    assert len(tr) == 40 and len(te) == 10 and (te["fold"] == -1).all()
    assert safe_auc(tr["y"].to_numpy(), tr["prob"].to_numpy()) > 0.7
    data = load_cached(run, "image" if kind == "middle" else "video", 16)
    idx = np.flatnonzero(data.split == "train")
    assert tr["fold"].tolist() == make_folds(data, idx, 4, 0).tolist()  # the deep models' folds


def test_no_signal_gives_chance_and_fold_mismatch_is_caught(tmp_path):
    run = make_fake_run(tmp_path, n_train=40, n_test=0, size=16, frames=3, signal=0.0)
    pred = baselines.pixel_baseline(run, "meanstd", folds=4, seed=0, size=16, n_components=5)
    assert safe_auc(pred["y"].to_numpy(), pred["prob"].to_numpy()) < 0.8
    folds = pred[["case_id", "fold"]].copy()
    folds.to_csv(tmp_path / "folds.csv", index=False)
    baselines.check_same_folds(pred, tmp_path / "folds.csv")
    folds["fold"] = (folds["fold"] + 1) % 4
    folds.to_csv(tmp_path / "folds.csv", index=False)
    with pytest.raises(RuntimeError, match="folds differ"):
        baselines.check_same_folds(pred, tmp_path / "folds.csv")
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.pixel_baseline(run, "nope", folds=4, seed=0, size=16)
