"""TrainConfig.select: "last" keeps the final epoch (unbiased out-of-fold rows), "best" the best validation AUC."""

import json

import pandas as pd
import pytest
import torch
from fake_run import make_fake_run

from ceusfusion.core.errors import CeusError
from ceusfusion.models.train import TrainConfig, train

torch.set_num_threads(1)


def test_select_last_keeps_the_final_epoch_and_best_keeps_the_best(tmp_path):
    run = make_fake_run(tmp_path, n_train=16, n_test=0, size=20, frames=2, group_size=1, with_video=False)
    cfg = dict(modality="image", arch="resnet18", weights="none", epochs=4, folds=2, batch_size=4, crop=16, seed=3,
               lr=3e-3, patience=4)
    train(run, TrainConfig(**cfg, select="last", name="last"), progress=False)
    train(run, TrainConfig(**cfg, select="best", name="best"), progress=False)
    for k in range(2):
        hist = pd.read_csv(run / "models" / "last" / f"fold{k}" / "history.csv")
        last = json.loads((run / "models" / "last" / f"fold{k}" / "result.json").read_text())
        best = json.loads((run / "models" / "best" / f"fold{k}" / "result.json").read_text())
        assert last["best_epoch"] == len(hist) == 4
        assert last["auc"] == pytest.approx(hist["val_auc"].iloc[-1])
        assert best["auc"] == pytest.approx(hist["val_auc"].max())  # same seed: same trajectory
        assert best["best_epoch"] == int(hist["val_auc"].idxmax()) + 1
    assert json.loads((run / "models" / "last" / "config.json").read_text())["select"] == "last"


def test_unknown_select_and_resume_of_a_config_without_the_key(tmp_path):
    run = make_fake_run(tmp_path, n_train=16, n_test=0, size=20, frames=2, group_size=1, with_video=False)
    with pytest.raises(CeusError, match="--select"):
        TrainConfig(modality="image", select="worst")
    cfg = dict(modality="image", arch="resnet18", weights="none", epochs=1, folds=2, batch_size=4, crop=16, name="m")
    train(run, TrainConfig(**cfg), progress=False)
    path = run / "models" / "m" / "config.json"
    old = json.loads(path.read_text())
    old.pop("select")  # a model trained before the option existed
    path.write_text(json.dumps(old))
    assert train(run, TrainConfig(**cfg), resume=True, progress=False) is not None
    with pytest.raises(CeusError, match="settings differ"):
        path.write_text(json.dumps(old))
        train(run, TrainConfig(**cfg, select="last"), resume=True, progress=False)
