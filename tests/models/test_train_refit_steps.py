"""The refitted model trains like a fold: the same optimiser steps on the same LR schedule in steps
(issue 23 item 3), stopping mid-epoch when its longer epochs do not divide the folds' step count, and
resumably so."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from fake_run import make_fake_run

import ceusfusion.models.train as T
from ceusfusion.models.train import REFIT_MATCH, TrainConfig, refit_plan, train

torch.set_num_threads(1)

# 24 training cases, 2 folds of 12: a fold epoch is 3 steps of 4, the refit's 6 steps
CFG = dict(modality="image", arch="resnet18", weights="none", epochs=3, folds=2, batch_size=4, crop=16, seed=3,
           lr=3e-3)


@pytest.fixture(scope="module")
def small_run(module_tmp_factory):
    return make_fake_run(module_tmp_factory.mktemp("run"), n_train=24, n_test=6, size=20, frames=2, group_size=1,
                         with_video=False)


def counted_train(run, monkeypatch, **kw) -> tuple[dict, list[list[float]]]:
    """train(), with the learning rate of every optimiser step, one list per epoch in training order."""
    epochs, real = [], T.train_epoch

    def counting(net, opt, lossf, batches, sched, clip, world=1):
        lrs = []

        def seen():
            for b in batches:
                lrs.append(opt.param_groups[0]["lr"])
                yield b
        out = real(net, opt, lossf, seen(), sched, clip, world)
        epochs.append(lrs)
        return out

    monkeypatch.setattr(T, "train_epoch", counting)
    return train(run, TrainConfig(**{**CFG, **kw}), progress=False), epochs


def test_the_refit_takes_a_folds_steps_on_a_folds_schedule(small_run, monkeypatch):
    summary, epochs = counted_train(small_run, monkeypatch, name="steps")
    folds = pd.read_csv(small_run / "models" / "steps" / "folds.csv")
    assert folds["fold"].value_counts().tolist() == [12, 12]
    fold0, fold1, refit = epochs[:3], epochs[3:6], epochs[6:]
    steps = [sum(map(len, e)) for e in (fold0, fold1, refit)]
    assert steps == [9, 9, 9]  # not 18: the refit's 6-step epochs, 1.5 of them
    assert [len(e) for e in refit] == [6, 3]  # the last epoch stopped mid-way
    np.testing.assert_allclose(sum(refit, []), sum(fold0, []), rtol=1e-12)  # the same LR at every step
    assert summary["fold_steps"] == [9, 9] and summary["refit_steps"] == 9 and summary["refit_epochs"] == 2
    assert summary["refit_step_plan"] == {"steps_per_epoch": 6, "schedule_total": 9, "warmup": 3, "stop": 9,
                                          "epochs": 2}
    assert summary["refit_matched"] == REFIT_MATCH["last"]
    hist = pd.read_csv(small_run / "models" / "steps" / "full" / "history.csv")
    assert len(hist) == 2


def test_a_refit_stopped_mid_epoch_resumes_to_the_same_model(small_run):
    whole = train(small_run, TrainConfig(**CFG, name="whole"), progress=False)
    # 3 + 3 fold epochs, then the refit's first: interrupted before its partial second epoch
    assert train(small_run, TrainConfig(**CFG, name="cut"), progress=False, max_epochs_this_call=7) is None
    ckpt = small_run / "models" / "cut" / "full" / "checkpoint" / "state.json"
    assert json.loads(ckpt.read_text())["step"] == 6
    resumed = train(small_run, TrainConfig(**CFG, name="cut"), resume=True, progress=False)
    a = pd.read_csv(small_run / "predictions" / "whole.csv")
    b = pd.read_csv(small_run / "predictions" / "cut.csv")
    np.testing.assert_allclose(a["prob"], b["prob"], rtol=0, atol=1e-6)
    assert resumed["refit_steps"] == whole["refit_steps"] == 9


def test_a_refit_checkpoint_of_another_step_plan_starts_again(small_run):
    assert train(small_run, TrainConfig(**CFG, name="old"), progress=False, max_epochs_this_call=7) is None
    ckpt = small_run / "models" / "old" / "full" / "checkpoint" / "state.json"
    state = json.loads(ckpt.read_text())
    state.pop("plan")  # a refit begun by a version that trained it for the folds' epoch count
    ckpt.write_text(json.dumps(state))
    train(small_run, TrainConfig(**CFG, name="old"), resume=True, progress=False)
    whole = small_run / "predictions" / "whole.csv"
    if not whole.is_file():
        train(small_run, TrainConfig(**CFG, name="whole"), progress=False)
    a, b = pd.read_csv(whole), pd.read_csv(small_run / "predictions" / "old.csv")
    np.testing.assert_allclose(a["prob"], b["prob"], rtol=0, atol=1e-6)


def test_under_select_best_the_refit_stops_at_the_median_kept_step():
    cfg = TrainConfig(**{**CFG, "select": "best"})
    results = [{"best_epoch": 1}, {"best_epoch": 3}, {"best_epoch": 2}]
    plan = refit_plan(cfg, [12, 12, 16], 20, results)  # 3, 3 and 4 steps per fold epoch: kept at 3, 9, 8
    assert (plan.total, plan.warmup, plan.stop, plan.per_epoch, plan.epochs) == (10, 3, 8, 5, 2)
    last = refit_plan(TrainConfig(**CFG), [12, 12, 16], 20, results)
    assert (last.total, last.stop) == (10, 10)
