"""Issue 24: a crop larger than the prepared arrays is refused (it was cut down to their side without a word),
prepare's fixed box is --box (not --crop, train's crop side), and `train --summary` reads at 80 columns."""

from __future__ import annotations

import json

import pytest
from cli_run import exit_code
from fake_run import make_fake_run
from rich.console import Console

import ceusfusion.cli as cli
from ceusfusion.core.errors import CeusError
from ceusfusion.models.train import TrainConfig, train


def test_a_crop_larger_than_the_arrays_is_refused(tmp_path):
    run = make_fake_run(tmp_path, n_train=8, n_test=2, size=24, frames=2, with_video=False)
    cfg = dict(modality="image", arch="resnet18", weights="none", epochs=1, folds=2, batch_size=4, name="m")
    with pytest.raises(CeusError) as e:
        train(run, TrainConfig(**cfg, crop=32), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "--crop 32" in msg and "24 px" in msg and "--size 32" in msg and "--crop 24 or less" in msg
    assert not (run / "models" / "m").exists()  # refused before anything is written
    with pytest.raises(CeusError, match="resized by --size 20: train with --size 32 or more"):
        train(run, TrainConfig(**cfg, crop=32, size=20), progress=False)


def test_cli_crop_refusal_is_one_line(tmp_path, capsys):
    run = make_fake_run(tmp_path, n_train=8, n_test=2, size=24, frames=2, with_video=False)
    assert exit_code(["train", "--run", str(run), "--modality", "image", "--weights", "none", "--epochs", "1",
                      "--folds", "2", "--crop", "224", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--crop 224 is larger than the prepared 24 px arrays" in " ".join(err.split())


def write_summary(run, name: str, **kw) -> None:
    d = run / "models" / name
    d.mkdir(parents=True)
    rec = {"name": name, "modality": "video", "arch": "tf_efficientnet_lite0", "input_mode": "temporal",
           "weights_used": "imagenet", "folds": 5, "cv_auc_mean": 0.7123, "cv_auc_std": 0.0456, "oof_auc": 0.7012,
           "select": "last", "test_scoring_mode": "refit", "class_weight": "none", **kw}
    (d / "summary.json").write_text(json.dumps(rec))


def test_train_summary_reads_at_80_columns(tmp_path, monkeypatch):
    names = ["DL_video_tf_efficientnet_lite0_temporal", "DL_image_densenet121"]
    write_summary(tmp_path, names[0])
    write_summary(tmp_path, names[1], modality="image", arch="densenet121", input_mode="single", cv_auc_mean=0.65)
    rec = Console(width=80, record=True, color_system=None)
    monkeypatch.setattr(cli, "console", rec)
    assert exit_code(["train", "--run", str(tmp_path), "--summary"]) == 0
    text = rec.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text  # nothing cut short
    flat = " ".join(text.split())
    for name in names:
        assert any(name in line for line in lines), name  # each name whole, on one line
    assert "0.712 ± 0.046" in flat and "0.701" in flat
    assert text.index(names[0]) < text.index(names[1])  # ranked by mean CV AUC
    assert "tf_efficientnet_lite0" in flat and "temporal" in flat and "refit" in flat


def test_prepare_names_its_fixed_box_box_not_crop(tmp_path, capsys):
    from typer.testing import CliRunner

    help_text = " ".join(CliRunner().invoke(cli.app, ["prepare", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "--box" in help_text and "--crop" not in help_text
    out = ["--out", str(tmp_path / "run")]
    assert exit_code(["prepare", str(tmp_path / "c.csv"), *out, "--box", "1,2,x,4"]) == 2
    assert "--box must be X,Y,W,H integers" in capsys.readouterr().err
    assert exit_code(["prepare", str(tmp_path / "c.csv"), *out, "--crop", "1,2,x,4"]) == 2  # the old name still reads
    err = " ".join(capsys.readouterr().err.split())
    assert "prepare --crop is deprecated: it is --box X,Y,W,H" in err and "--box must be" in err
    assert exit_code(["prepare", str(tmp_path / "c.csv"), *out, "--crop", "1,2,3,4", "--box", "1,2,3,4"]) == 2
