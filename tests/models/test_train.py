"""Cross-validated training on a fake prepared run: folds, out-of-fold predictions, signal, resume, CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from cli_run import exit_code
from fake_run import make_fake_run

from ceusfusion.core.errors import CeusError
from ceusfusion.models.data import load_cached
from ceusfusion.models.registry import load_fold_model
from ceusfusion.models.select import rank_models
from ceusfusion.models.train import TrainConfig, train
from ceusfusion.models.transforms import BatchTransform, augment_params

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(module_tmp_factory):
    """A seeded resnet18 video model on a run with a planted signal (64-case cohort, 40 px cache, 32 px crops)."""
    run = make_fake_run(module_tmp_factory.mktemp("run"), n_train=60, n_test=10, size=40, frames=3, signal=1.0)
    cfg = TrainConfig(modality="video", arch="resnet18", weights="none", epochs=4, folds=3, batch_size=16,
                      crop=32, lr=1e-3, seed=0)
    summary = train(run, cfg, progress=False)
    return run, summary


def test_planted_signal_is_learned(trained):
    run, summary = trained
    assert summary["cv_auc_mean"] > 0.6, summary
    assert len(summary["fold_auc"]) == 3


def test_folds_are_grouped_and_oof_covers_each_training_case_once(trained):
    run, _ = trained
    idx = pd.read_csv(run / "prepared" / "index.csv", dtype={"case_id": str, "group": str})
    folds = pd.read_csv(run / "models" / "DL_video_resnet18" / "folds.csv", dtype={"case_id": str})
    m = folds.merge(idx, on="case_id")
    assert set(m["case_id"]) == set(idx.loc[idx.split == "train", "case_id"])
    assert (m.groupby("group")["fold"].nunique() == 1).all()  # no group in two folds
    assert (m.groupby("fold")["label"].nunique() == 2).all()  # stratified: both classes in each fold
    pred = pd.read_csv(run / "predictions" / "DL_video_resnet18.csv", dtype={"case_id": str})
    assert list(pred.columns) == ["case_id", "set", "fold", "y", "prob", "scoring"]
    assert set(pred.loc[pred.set == "train", "scoring"]) == {"out-of-fold"}  # the label travels with the numbers
    assert set(pred.loc[pred.set == "test", "scoring"]) == {"refit on all training cases"}
    tr = pred[pred.set == "train"]
    assert tr["case_id"].is_unique and set(tr["case_id"]) == set(folds["case_id"])
    assert (tr.merge(folds, on="case_id", suffixes=("", "_f")).eval("fold == fold_f")).all()
    te = pred[pred.set == "test"]
    assert set(te["case_id"]) == set(idx.loc[idx.split == "test", "case_id"]) and (te["fold"] == -1).all()
    assert pred["prob"].between(0, 1).all()


def _test_probs(run, models) -> tuple[np.ndarray, np.ndarray]:
    """(the predictions file's test probabilities, each listed model's own test probabilities)."""
    from ceusfusion.models.registry import transform_for
    from ceusfusion.models.train import predict_probs

    data = load_cached(run, "video")
    test = np.flatnonzero(data.split == "test")
    probs = []
    for k in models:
        model, cfg = load_fold_model(run, "DL_video_resnet18", k)
        probs.append(predict_probs(model, data, test, transform_for(cfg)))
    pred = pd.read_csv(run / "predictions" / "DL_video_resnet18.csv", dtype={"case_id": str})
    te = pred[pred.set == "test"].set_index("case_id").loc[[data.case_ids[i] for i in test]]
    return te["prob"].to_numpy(), np.array(probs)


def test_test_probabilities_come_from_the_model_refitted_on_all_training_cases(trained):
    run, summary = trained
    shown, (full,) = _test_probs(run, ["full"])
    np.testing.assert_allclose(shown, full, atol=1e-6)
    # 40-case folds take 3 steps an epoch, 12 in all; the refit's 60 cases 4 an epoch: 3 epochs, the same 12 steps
    assert summary["test_scoring_mode"] == "refit" and summary["refit_epochs"] == 3
    assert summary["refit_steps"] == 12 and summary["fold_steps"] == [12, 12, 12]
    result = json.loads((run / "models" / "DL_video_resnet18" / "full" / "result.json").read_text())
    assert result["epochs_run"] == 3 and result["steps"] == 12


def test_fold_mean_scoring_is_an_explicit_choice(tmp_path):
    run = make_fake_run(tmp_path, n_train=24, n_test=6, size=24, frames=2, signal=1.0)
    cfg = TrainConfig(modality="video", arch="resnet18", weights="none", epochs=1, folds=2, batch_size=8, crop=16,
                      seed=0, test_scoring="fold-mean")
    train(run, cfg, progress=False)
    shown, probs = _test_probs(run, [0, 1])
    np.testing.assert_allclose(shown, probs.mean(0), atol=1e-6)
    assert not (run / "models" / "DL_video_resnet18" / "full").exists()


def test_outputs_and_ranking(trained):
    run, summary = trained
    d = run / "models" / "DL_video_resnet18"
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["channels"] == 3 and cfg["input_mode"] == "stack" and cfg["weights"] == "none"
    for k in range(3):
        h = pd.read_csv(d / f"fold{k}" / "history.csv")
        assert {"epoch", "train_loss", "val_loss", "val_auc", "lr"} <= set(h.columns) and len(h) >= 1
        assert (d / f"fold{k}" / "model.safetensors").is_file()
        assert not (d / f"fold{k}" / "state.json").exists()  # resume state removed once a fold is done
    ranked = rank_models(run)
    assert ranked.loc[0, "name"] == "DL_video_resnet18"
    assert ranked.loc[0, "cv_auc_mean"] == pytest.approx(summary["cv_auc_mean"])
    with pytest.raises(CeusError, match="--resume"):
        train(run, TrainConfig(modality="video", weights="none", epochs=4, folds=3, batch_size=16, crop=32, lr=1e-3),
              progress=False)


def test_resume_after_interruption_gives_the_same_predictions(tmp_path):
    run = make_fake_run(tmp_path, n_train=16, n_test=4, size=20, frames=2, group_size=1, with_video=False)
    cfg = dict(modality="image", arch="resnet18", weights="none", epochs=2, folds=2, batch_size=4, crop=16, seed=3)
    full = train(run, TrainConfig(**cfg, name="full"), progress=False)
    assert train(run, TrainConfig(**cfg, name="cut"), progress=False, max_epochs_this_call=1) is None
    d = run / "models" / "cut" / "fold0"
    assert (d / "checkpoint" / "state.json").is_file() and not (d / "oof.csv").exists()
    assert not (run / "predictions" / "cut.csv").exists()
    resumed = train(run, TrainConfig(**cfg, name="cut"), resume=True, progress=False)
    a = pd.read_csv(run / "predictions" / "full.csv")
    b = pd.read_csv(run / "predictions" / "cut.csv")
    assert a[["case_id", "set", "fold", "y"]].equals(b[["case_id", "set", "fold", "y"]])
    np.testing.assert_allclose(a["prob"], b["prob"], rtol=0, atol=1e-6)
    assert full["fold_auc"] == resumed["fold_auc"]
    with pytest.raises(CeusError, match="settings differ"):
        train(run, TrainConfig(**{**cfg, "lr": 1.0}, name="cut"), resume=True, progress=False)


def test_batch_transform_crops_flips_and_normalises():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6).to(torch.uint8)
    tf = BatchTransform("single", 1, 1, crop=4, size=6, pretrained=False)
    ev = tf(x)
    assert ev.shape == (2, 3, 4, 4) and torch.equal(ev[:, 0], ev[:, 2])  # grey replicated to RGB
    assert torch.allclose(ev[0, 0], x[0, 0, 1:5, 1:5].float() / 255)  # centre crop, values in [0, 1]
    p = augment_params(2, 6, 4, g)
    p["hflip"][:] = torch.tensor([True, False])
    p["vflip"][:] = False
    tr = tf(x, p)
    oy, ox = int(p["oy"][0]), int(p["ox"][0])
    assert torch.allclose(tr[0, 0], x[0, 0, oy:oy + 4, ox:ox + 4].flip(-1).float() / 255)
    norm = BatchTransform("stack", 5, 1, crop=4, size=6, pretrained=True)(torch.full((1, 5, 6, 6), 255, dtype=torch.uint8))
    assert norm.shape == (1, 5, 4, 4) and float(norm.mean()) == pytest.approx((1 - 0.449) / 0.226, rel=1e-3)


def test_cli_train_and_summary(tmp_path, capsys):
    run = make_fake_run(tmp_path, n_train=12, n_test=3, size=20, frames=2, group_size=1, colour=True)
    args = ["train", "--run", str(run), "--modality", "video", "--input", "temporal", "--weights", "none",
            "--epochs", "1", "--folds", "2", "--batch-size", "4", "--crop", "16", "--no-progress"]
    assert exit_code(args) == 0
    assert (run / "predictions" / "DL_video_resnet18_temporal.csv").is_file()
    cfg = json.loads((run / "models" / "DL_video_resnet18_temporal" / "config.json").read_text())
    assert cfg["frames"] == 2 and cfg["frame_channels"] == 3 and cfg["channels"] == 6
    assert exit_code(["train", "--run", str(run), "--summary"]) == 0
    assert "DL_video_resnet18_temporal" in capsys.readouterr().out
    assert exit_code(["train", "--run", str(run), "--modality", "image", "--input", "stack"]) == 2
    assert "needs keyframes" in capsys.readouterr().err


def test_precise_bn_sets_running_statistics_to_the_training_cases(tmp_path):
    """recalibrate_bn replaces momentum-lagged BatchNorm statistics by the exact mean/variance of
    the given cases under the current weights (first BN layer checked against conv1's output)."""
    from ceusfusion.models.backbones import build_model
    from ceusfusion.models.train import recalibrate_bn

    run = make_fake_run(tmp_path, n_train=10, n_test=2, size=24)
    data = load_cached(run, "image")
    torch.manual_seed(0)
    model, _ = build_model("resnet18", "single", 1, 1, (None, "none"), False, 0.0)
    tf = BatchTransform("single", 1, 1, 24, 24, False, torch.device("cpu"))
    idx = np.arange(len(data))
    model.eval()
    recalibrate_bn(model, data, idx, tf, batch_size=4)  # chunks of 4, 4, 4: equal sizes, so the mean is exact
    assert not model.training  # mode restored
    with torch.no_grad():
        z = model.encoder.conv1(tf(data.x[torch.as_tensor(idx)]))
    bn = model.encoder.bn1
    torch.testing.assert_close(bn.running_mean, z.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1  # restored
    # and training records that it was on
    assert TrainConfig().precise_bn is True
