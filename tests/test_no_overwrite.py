"""Issue 25: evaluate, fuse and explain-figure never write over a file ceusfusion did not create (unless
--force), never over their own input (even with --force), and rewrite their own outputs freely."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
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


# ----------------------------------------------------------------------------- every command that takes --out

@dataclass
class Case:
    """One command's two trials: ``user`` run against a folder holding a user's file (``user_file``) with the
    name it would write; ``own`` (with each of ``force`` too) with --out pointing at its input ``input_file``."""

    user: list
    user_file: Path
    own: list | None = None
    input_file: Path | None = None
    force: tuple = ("--force",)
    says: str | None = None  # what the refusal names (default: the user's file)
    own_says: str = "this command's input"


def out_commands() -> set[str]:
    """Every command of the app (sub-apps included) that has an --out option, introspected (duck-typed: typer
    may bring its own copy of click)."""
    import typer.main

    from ceusfusion.cli import app

    found = set()

    def walk(cmd, name):
        if hasattr(cmd, "commands"):
            for sub_name, sub in cmd.commands.items():
                walk(sub, f"{name} {sub_name}".strip())
        elif any("--out" in getattr(p, "opts", ()) for p in cmd.params):
            found.add(name)

    walk(typer.main.get_command(app), "")
    return found


def _cohort(d: Path, name: str = "cohort.csv", video: bool = False) -> Path:
    from ingest_fixtures import write_avi, write_png

    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(6):
        write_png(d / f"img{i}.png", np.full((20, 24), 30 * i, np.uint8))
        row = {"case_id": f"c{i}", "label": i % 2, "split": "train" if i < 4 else "test", "age": 40 + i,
               "image": f"img{i}.png"}
        if video:
            row["video"] = write_avi(d / f"v{i}.avi", n=6).name
        rows.append(row)
    pd.DataFrame(rows).to_csv(d / name, index=False)
    return d / name


def _run_with_model(d: Path) -> Path:
    """A run folder made by `study` (its record lists the stage folders) with a model folder and stage records."""
    from ceusfusion.core.fsutil import claim
    from ceusfusion.core.runlayout import RunLayout

    L = RunLayout(d / "run")
    claim(L.root, files=[L.report, *L.stage_files], folders=list(L.stage_folders))
    config = json.dumps({"name": "m", "modality": "image", "arch": "resnet18", "input_mode": "single", "frames": 1,
                         "frame_channels": 1, "image_size": 8, "crop": 8, "folds": 2, "pretrained": False})
    for f, text in ((L.model("m") / "config.json", config), (L.metrics, '{"sets": {}}'), (L.selection, "{}"),
                    (L.keyframes, "{}"), (L.prepared_index, "case_id\n")):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return L.root


def _explain_folders(d: Path):
    img, vid = d / "img", d / "vid"
    for f in (img, vid):
        (f / "arrays").mkdir(parents=True)
        (f / "explain.json").write_text('{"cases": []}')
    return img, vid


def case_split(d):
    cohort = _cohort(d / "data")
    return Case(["split", cohort, "--out", d / "mine.csv"], d / "mine.csv", ["split", cohort, "--out", cohort], cohort)


def case_annotate(d):
    """The page's answers go to --out; the refusal comes before anything listens (port 9 is never opened)."""
    cohort = _cohort(d / "data")
    return Case(["annotate", cohort, "--out", d / "boxes.csv", "--port", "9"], d / "boxes.csv",
                ["annotate", cohort, "--out", cohort, "--port", "9"], cohort, force=("--force",))


SEGMENT_ARGS = ["--epochs", "1", "--folds", "2", "--size", "32", "--weights", "none", "--device", "cpu"]


def case_segment__train(d):
    cohort = _cohort(d / "data")
    own = _cohort(d / "own", name="segmenter.json")  # a manifest named like the model's record
    return Case(["segment", "train", cohort, "--out", d / "seg", *SEGMENT_ARGS], d / "seg" / "segmenter.json",
                ["segment", "train", own, "--out", d / "own", *SEGMENT_ARGS], own)


def case_segment__predict(d):
    """A segmenter's record is all predict reads before it claims its outputs (no network is built)."""
    from ceusfusion.segment.record import SegmenterRecord, write_record

    model = d / "model"
    model.mkdir()
    write_record(model, SegmenterRecord(encoder="x", decoder=[8], size=32, context=0.2, mean=0.0, std=1.0,
                                        fold_files=["fold0.safetensors"], settings={}, weights={}, cohort="c.csv",
                                        cohort_sha256="0" * 64, trained_on=[], pictures=[], test_cases=[], cv={}))
    cohort = _cohort(d / "data")
    args = ["--model", model, "--device", "cpu"]
    return Case(["segment", "predict", cohort, "--out", d / "sp", *args], d / "sp" / "cohort.csv",
                ["segment", "predict", cohort, "--out", cohort.parent, *args], cohort)


def case_synth(d):
    return Case(["synth", "--out", d / "syn", "--n", "4", "--size", "32", "--workers", "1"], d / "syn" / "cohort.csv")


def case_prepare(d):
    cohort = _cohort(d / "data")
    return Case(["prepare", cohort, "--out", d / "run", "--size", "16"], d / "run" / "cohort.csv",
                ["prepare", cohort, "--out", cohort.parent, "--size", "16"], cohort)


def case_pretrain(d):
    cohort = _cohort(d / "data", video=True)
    own = _cohort(d / "own", name="w.json", video=True)  # a manifest named like the weights' sidecar
    args = ["--size", "16", "--epochs", "1", "--batch-size", "4", "--frames-per-video", "2", "--device", "cpu"]
    return Case(["pretrain", cohort, "--out", d / "w.safetensors", *args], d / "w.json",
                ["pretrain", own, "--out", d / "own" / "w.safetensors", *args], own, force=("--overwrite",))


def case_evaluate(d):
    (d / "ev").mkdir(), (d / "own").mkdir()
    return Case(["evaluate", _predictions(d / "p.csv"), "--out", d / "ev", "--no-figures"], d / "ev" / "metrics.json",
                ["evaluate", _predictions(d / "own" / "table2.csv"), "--out", d / "own", "--no-figures"], d / "own" / "table2.csv")


def case_table1(d):
    cohort = _cohort(d / "data")
    return Case(["table1", cohort, "--out", d / "t1.csv"], d / "t1.csv", ["table1", cohort, "--out", cohort], cohort)


def case_features(d):
    run = _run_with_model(d)
    model = run / "models" / "m"
    return Case(["features", "--model", model, "--out", d / "f.parquet", "--device", "cpu"], d / "f.parquet",
                ["features", "--model", model, "--out", model / "config.json", "--device", "cpu"], model / "config.json")


def case_fuse(d):
    (d / "fu").mkdir(), (d / "own").mkdir()
    feats = _features(d / "DL_image_x.parquet")
    args = ["--classifiers", "lr", "--folds", "2", "--inner-folds", "2", "--fast", "--n-cs", "3"]
    own = _features(d / "own" / "cv_results.csv")
    return Case(["fuse", feats, "--out", d / "fu", *args], d / "fu" / "fusion.json",
                ["fuse", own, "--out", d / "own", *args], own)


def case_explain(d):
    run = _run_with_model(d)
    model = run / "models" / "m"
    (d / "ex").mkdir()
    return Case(["explain", "--model", model, "--out", d / "ex", "--device", "cpu"], d / "ex" / "explain.json",
                ["explain", "--model", model, "--out", model, "--device", "cpu"], model / "config.json",
                says="ex: this folder holds files that ceusfusion did not write")


def case_explain_figure(d):
    img, vid = _explain_folders(d)
    words = d / "words.svg"
    words.write_bytes(USER)
    args = ["explain-figure", "--image", img, "--video", vid, "--out"]
    return Case([*args, d / "fig.png"], d / "fig.svg", [*args, d / "words", "--outcome", words], words)


def case_report(d):
    run = _run_with_model(d)
    return Case(["report", "--run", run, "--out", d / "r.html"], d / "r.html",
                ["report", "--run", run, "--out", run / "evaluation" / "metrics.json"], run / "evaluation" / "metrics.json")


def case_export(d):
    run = _run_with_model(d)
    return Case(["export", run, "--out", d / "bundle"], d / "bundle" / "bundle.json", ["export", run, "--out", run],
                run / "selection.json", force=("--overwrite",), says="bundle exists")


def case_predict(d):
    (d / "bundle").mkdir()
    (d / "bundle" / "bundle.json").write_text("{}")
    img = d / "q" / "prediction.json"  # an input named like the output
    img.parent.mkdir()
    img.write_bytes(USER)
    return Case(["predict", "--bundle", d / "bundle", "--image", d / "x.png", "--out", d / "p"], d / "p" / "prediction.json",
                ["predict", "--bundle", d / "bundle", "--image", img, "--out", d / "q"], img)


def case_demo(d):
    return Case(["demo", "--out", d / "demo", "--n", "8"], d / "demo" / "report.html")


# case_<command> (a '_' for a '-'), case_<group>__<command> for a sub-command ("segment train")
CASES = {name.removeprefix("case_").replace("__", " ").replace("_", "-"): fn for name, fn in dict(globals()).items()
         if name.startswith("case_") and callable(fn)}
NO_INPUT = {"synth": "generates a cohort: it reads no input", "demo": "generates its cohort: it reads no input"}


def test_every_command_with_out_is_walked():
    """A new command with --out fails here until it has a case above (or a reason not to)."""
    assert out_commands() == set(CASES), "give every command that takes --out a case_* in this file"


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_command_writes_over_a_users_file_or_its_own_input(name, tmp_path, capsys):
    case = CASES[name](tmp_path)
    case.user_file.parent.mkdir(parents=True, exist_ok=True)
    case.user_file.write_bytes(USER)
    assert exit_code([str(a) for a in case.user]) == 2, name
    _one_line_error(capsys, case.says or case.user_file.name)
    assert case.user_file.read_bytes() == USER
    if case.own is None:
        assert name in NO_INPUT
        return
    before = case.input_file.read_bytes()
    for extra in ((), *((f,) for f in case.force)):
        assert exit_code([str(a) for a in case.own] + list(extra)) == 2, (name, extra)
        _one_line_error(capsys, case.own_says)
        assert case.input_file.read_bytes() == before, (name, extra)


def test_a_per_stage_command_on_a_study_run_folder_needs_no_force(tmp_path, capsys):
    """Issue 25: `evaluate --out RUN/evaluation` on a folder `study` made was refused without --force (the study's
    record is one level up); it goes through now, and a user's file in a folder the study did not make is still kept."""
    run = _run_with_model(tmp_path)
    (run / "evaluation" / "metrics.json").write_text('{"sets": {}}')  # the study's
    args = ["evaluate", str(_predictions(tmp_path / "p.csv")), "--no-figures", "--no-nomogram", "--out"]
    assert exit_code(args + [str(run / "evaluation")]) == 0
    assert json.loads((run / "evaluation" / "metrics.json").read_text())["sets"]
    (run / "mine").mkdir()
    (run / "mine" / "metrics.json").write_bytes(USER)
    assert exit_code(args + [str(run / "mine")]) == 2
    _one_line_error(capsys, "metrics.json", "did not write")
    assert (run / "mine" / "metrics.json").read_bytes() == USER
