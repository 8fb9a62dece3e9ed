"""The `segment` commands' defaults and their one-line refusals (no network is trained here)."""

import pandas as pd
import typer
from cli_run import exit_code

from ceusfusion.cli import app
from ceusfusion.segment.train import SegmentSettings


def test_segment_train_defaults_equal_the_settings():
    cmd = typer.main.get_command(app).commands["segment"].commands["train"]
    checked = [p.name for p in cmd.params if p.name in SegmentSettings.model_fields]
    for p in cmd.params:
        if p.name in SegmentSettings.model_fields:
            assert p.default == SegmentSettings.model_fields[p.name].default, p.name
    assert len(checked) >= 8


def test_train_refuses_a_manifest_without_split_and_predict_a_folder_without_model(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"x")
    pd.DataFrame({"case_id": ["a"], "label": [1], "image": ["a.png"]}).to_csv(tmp_path / "c.csv", index=False)
    assert exit_code(["segment", "train", str(tmp_path / "c.csv"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "no 'split' column" in err and "Traceback" not in err
    assert exit_code(["segment", "predict", str(tmp_path / "c.csv"), "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a segment model folder" in capsys.readouterr().err
    assert exit_code(["segment", "train", str(tmp_path / "c.csv"), "--out", str(tmp_path / "m"), "--size", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
