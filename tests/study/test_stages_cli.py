"""The per-stage commands of the README finish a study on their own, without `ceusfusion study`:
synth → validate → prepare → train → select → features → fuse → evaluate → explain → export → predict,
and the bundle's prediction for a test patient equals the run's own test probability."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cli_run import exit_code

pytestmark = pytest.mark.slow


def _ok(argv: list[str]) -> None:
    assert exit_code(argv) == 0, argv


def test_stage_commands_end_to_end(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    _ok(["synth", "--out", str(data), "--n", "60", "--size", "48", "--fps", "2", "--duration", "12", "--workers", "1"])
    cohort = data / "cohort.csv"
    _ok(["validate", str(cohort)])
    assert exit_code(["prepare", str(cohort), "--out", str(run), "--size", "40"]) == 0
    common = ["--run", str(run), "--arch", "resnet18", "--weights", "none", "--epochs", "1", "--folds", "2",
              "--crop", "32", "--batch-size", "8", "--no-progress", "--threads", "1"]
    _ok(["train", "--modality", "image", *common])
    _ok(["train", "--modality", "video", *common])
    _ok(["select", "--run", str(run)])
    best = json.loads((run / "selection.json").read_text())["best"]
    assert best == {"image": "DL_image_resnet18", "video": "DL_video_resnet18"}
    feats = []
    for name in best.values():
        _ok(["features", "--model", str(run / "models" / name), "--device", "cpu"])
        feats.append(str(run / "features" / f"{name}.parquet"))
    _ok(["fuse", *feats, "--out", str(run / "fusion"), "--classifiers", "lr", "--folds", "2", "--inner-folds", "2", "--fast"])
    preds = [str(run / "predictions" / f"{n}.csv") for n in best.values()] + [str(run / "fusion" / "predictions" / "DL_combined.csv")]
    _ok(["evaluate", *preds, "--out", str(run / "evaluation"), "--no-figures"])
    _ok(["explain", "--model", str(run / "models" / best["video"]), "--per-class", "1", "--device", "cpu"])
    assert (run / "explain" / best["video"] / "explain.json").is_file()
    _ok(["export", str(run), "--out", str(tmp_path / "bundle")])

    row = pd.read_csv(cohort).query("split == 'test'").iloc[0]
    capsys.readouterr()
    _ok(["predict", "--bundle", str(tmp_path / "bundle"), "--image", str(data / row["image"]),
         "--image-mask", str(data / row["image_mask"]), "--video", str(data / row["video"]),
         "--video-mask", str(data / row["video_mask"]), "--json"])
    res = json.loads(capsys.readouterr().out)
    for name, path in zip([*best.values(), "DL_combined"], preds):
        run_prob = pd.read_csv(path, dtype={"case_id": str}).set_index("case_id").loc[str(row["case_id"]), "prob"]
        assert abs(res["models"][name]["prob"] - run_prob) < 1e-5, name
