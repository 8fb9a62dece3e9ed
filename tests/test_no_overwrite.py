"""Issue 25: evaluate, fuse and explain-figure never write over a file ceusfusion did not create (unless
--force), never over their own input (even with --force), and rewrite their own outputs freely."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from cli_run import exit_code

USER = b"the user's own file\n"


def _one_line_error(capsys, *needles) -> None:
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err, err
    flat = " ".join(err.split())  # rich wraps long lines on narrow terminals
    assert len(err.strip().splitlines()) <= 3, err  # one message (wrapped at most)
    for n in needles:
        assert " ".join(str(n).split()) in flat, (n, err)


def _predictions(path, n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "set": ["train"] * 30 + ["test"] * (n - 30),
                  "fold": [i % 3 for i in range(n)], "y": y,
                  "prob": np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)}).to_csv(path, index=False)
    return path


def _features(path, n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    df = pd.DataFrame(rng.normal(size=(n, 4)) + y[:, None], columns=[f"f{i:04d}" for i in range(4)])
    df.insert(0, "y", y)
    df.insert(0, "set", ["train"] * 30 + ["test"] * (n - 30))
    df.insert(0, "case_id", [f"c{i}" for i in range(n)])
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {b"ceusfusion": json.dumps({"name": "DL_image_x", "arch": "x"}).encode()}
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}), path)
    return path


def test_evaluate_refuses_a_users_file_and_its_own_input(tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    pred = _predictions(out / "table2.csv")  # the case: the input is named like an output
    before = pred.read_bytes()
    for force in ([], ["--force"]):
        assert exit_code(["evaluate", str(pred), "--out", str(out), "--no-figures", *force]) == 2
        _one_line_error(capsys, pred, "input")
    assert pred.read_bytes() == before
    (tmp_path / "m.csv").write_bytes(pred.read_bytes())
    (out / "metrics.json").write_bytes(USER)
    args = ["evaluate", str(tmp_path / "m.csv"), "--out", str(out), "--no-figures", "--no-nomogram"]
    assert exit_code(args) == 2
    _one_line_error(capsys, "metrics.json", "did not write", "--force")
    assert (out / "metrics.json").read_bytes() == USER
    assert exit_code(args + ["--force"]) == 0
    assert json.loads((out / "metrics.json").read_text())["sets"]  # table2.csv, no input now, replaced too
    assert exit_code(args) == 0  # a rerun over its own outputs


def test_fuse_refuses_a_users_file_and_its_own_input(tmp_path, capsys):
    out = tmp_path / "fu"
    (out / "predictions").mkdir(parents=True)
    feats = _features(tmp_path / "DL_image_x.parquet")
    args = ["fuse", str(feats), "--out", str(out), "--classifiers", "lr", "--folds", "2", "--inner-folds", "2",
            "--fast", "--n-cs", "3"]
    for name in ("fusion.json", "cv_results.csv"):
        (out / name).write_bytes(USER)
        assert exit_code(args) == 2
        _one_line_error(capsys, name, "did not write", "--force")
        assert (out / name).read_bytes() == USER
        (out / name).unlink()
    own_input = out / "cv_results.csv"  # a features file given under an output's name
    own_input.write_bytes(feats.read_bytes())
    for force in ([], ["--force"]):
        assert exit_code([*args, "--features", str(own_input), *force]) == 2
        _one_line_error(capsys, own_input, "input")
    assert own_input.read_bytes() == feats.read_bytes()
    own_input.unlink()
    (out / "fusion.json").write_bytes(USER)
    assert exit_code(args + ["--force"]) == 0
    assert "chosen_classifier" in json.loads((out / "fusion.json").read_text())
    assert exit_code(args) == 0  # a rerun over its own outputs


def test_explain_figure_refuses_a_users_figure_and_its_own_input(tmp_path, capsys, monkeypatch):
    import ceusfusion.explain.results as results

    def fake_figure(image, video, out, outcome=None):  # the claim is under test, not the drawing
        png, svg = out.with_suffix(".png"), out.with_suffix(".svg")
        png.write_bytes(b"png"), svg.write_bytes(b"svg")
        return png, svg

    monkeypatch.setattr(results, "figure5_from_folders", fake_figure)
    img, vid = tmp_path / "img", tmp_path / "vid"
    for d in (img, vid):
        (d / "arrays").mkdir(parents=True)
        (d / "explain.json").write_text('{"cases": []}')
        (d / "arrays" / "c1.npz").write_bytes(b"arrays")
    (tmp_path / "fig.svg").write_bytes(USER)
    args = ["explain-figure", "--image", str(img), "--video", str(vid), "--out"]
    assert exit_code(args + [str(tmp_path / "fig.png")]) == 2
    _one_line_error(capsys, "fig.svg", "did not write", "--force")
    assert (tmp_path / "fig.svg").read_bytes() == USER and not (tmp_path / "fig.png").exists()
    words = tmp_path / "words.svg"  # an --outcome file whose name the figure would take
    words.write_bytes(USER)
    for force in ([], ["--force"]):
        assert exit_code(args + [str(tmp_path / "words"), "--outcome", str(words), *force]) == 2
        _one_line_error(capsys, words, "input")
    assert words.read_bytes() == USER and not (tmp_path / "words.png").exists()
    assert exit_code(args + [str(tmp_path / "fig"), "--force"]) == 0
    assert (tmp_path / "fig.svg").read_bytes() == b"svg"
    assert exit_code(args + [str(tmp_path / "fig")]) == 0  # a rerun over its own outputs
