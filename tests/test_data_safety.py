"""Issue 16, hostile files and careless paths: no code runs, nothing of the user's is overwritten or deleted,
and every refusal is one line naming the file (``error: ...``, exit 2), never a traceback.

Payload files are made here; each writes a marker file when unpickled, which must never appear.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_run import exit_code
from fake_run import make_fake_run
from ingest_fixtures import ramp_video, write_png, write_video

from ceusfusion.core import runtime
from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.ingest import cache
from ceusfusion.models import pretrain as P
from ceusfusion.models.pretrain import frames as pretrain_frames
from ceusfusion.models.train import TrainConfig, train

torch.set_num_threads(1)


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err, err
    flat = " ".join(err.split())  # rich wraps long lines on narrow terminals
    for n in needles:
        assert " ".join(str(n).split()) in flat, (n, err)
    return err


# ----------------------------------------------------------------------------- train: names and case files


def test_train_name_outside_the_run_is_refused_and_deletes_nothing(tmp_path, capsys):
    run = make_fake_run(tmp_path / "run", n_train=8, n_test=2, size=16, frames=2, with_video=False)
    victim = tmp_path / "somewhere"
    victim.mkdir()
    (victim / "config.json").write_text("{}")
    (victim / "thesis.docx").write_text("years of work")
    for name in ("../../somewhere", "../somewhere", str(victim), ".", ".."):
        code = exit_code(["train", "--run", str(run), "--modality", "image", "--weights", "none", "--epochs", "1",
                          "--name", name, "--overwrite", "--device", "cpu", "--no-progress"])
        assert code == 2, name
        _one_line_error(capsys, "is not allowed")
    assert (victim / "thesis.docx").read_text() == "years of work" and (victim / "config.json").is_file()
    assert not (run / "models").exists()


def _bad_case_run(tmp_path) -> tuple[Path, Path]:
    run = make_fake_run(tmp_path / "run", n_train=8, n_test=2, size=16, frames=2, with_video=False)
    return run, cache.case_path(run, "case003")


def test_object_array_case_npz_is_one_line_naming_the_file(tmp_path, capsys):
    run, bad = _bad_case_run(tmp_path)
    marker = tmp_path / "pwned"
    with open(bad, "wb") as f:
        np.savez(f, image=np.array([Payload(marker)], dtype=object))
    with pytest.raises(CaseError, match="case003") as e:
        cache.load_case(run, "case003")
    assert str(bad) in str(e.value) and "not a readable prepared case" in str(e.value)
    code = exit_code(["train", "--run", str(run), "--modality", "image", "--weights", "none", "--epochs", "1",
                      "--device", "cpu", "--no-progress"])
    assert code == 2
    _one_line_error(capsys, "case003", bad, "not a readable prepared case")
    assert not marker.exists()


@pytest.mark.parametrize("content", ["pickle", "npy", "truncated", "empty"])
def test_case_file_that_is_not_an_npz_is_one_line(tmp_path, content):
    run, bad = _bad_case_run(tmp_path)
    marker = tmp_path / "pwned"
    if content == "pickle":
        bad.write_bytes(pickle.dumps(Payload(marker)))
    elif content == "npy":
        with open(bad, "wb") as f:
            np.save(f, np.zeros((16, 16), np.uint8))
    elif content == "truncated":
        bad.write_bytes(bad.read_bytes()[:100])
    else:
        bad.write_bytes(b"")
    with pytest.raises(CaseError, match="not a readable prepared case") as e:
        cache.load_case(run, "case003")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    assert cache.case_record(run, "case003") is None  # prepare redoes such a case, never trusts it


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way catches it."""


def test_train_resumes_after_a_kill_while_writing_a_checkpoint(tmp_path, monkeypatch):
    """Issue 16: a kill during the per-epoch checkpoint write left files from two epochs. Killed while the
    second epoch's checkpoint is written, ``--resume`` continues and ends as an uninterrupted run."""
    run = make_fake_run(tmp_path / "run", n_train=16, n_test=4, size=20, frames=2, group_size=1, with_video=False)
    cfg = dict(modality="image", arch="resnet18", weights="none", epochs=3, folds=2, batch_size=4, crop=16, seed=3)
    train(run, TrainConfig(**cfg, name="full"), progress=False)
    real, calls = runtime.save_file, {"n": 0}

    def killed_on_second_checkpoint(tensors, path, **kw):
        if Path(path).name == runtime.CHECKPOINT_TENSORS:
            calls["n"] += 1
            if calls["n"] == 2:
                real(tensors, path, **kw)
                Path(path).write_bytes(Path(path).read_bytes()[:64])  # half written
                raise Killed
        return real(tensors, path, **kw)

    monkeypatch.setattr(runtime, "save_file", killed_on_second_checkpoint)
    with pytest.raises(Killed):
        train(run, TrainConfig(**cfg, name="cut"), progress=False)
    monkeypatch.setattr(runtime, "save_file", real)
    resumed = train(run, TrainConfig(**cfg, name="cut"), resume=True, progress=False)
    a = pd.read_csv(run / "predictions" / "full.csv")
    b = pd.read_csv(run / "predictions" / "cut.csv")
    np.testing.assert_allclose(a["prob"], b["prob"], rtol=0, atol=1e-6)
    assert resumed["cv_auc_mean"] == pytest.approx(train(run, TrainConfig(**cfg, name="full"), resume=True,
                                                          progress=False)["cv_auc_mean"])
    assert not list((run / "models" / "cut").rglob("*.tmp"))


# ----------------------------------------------------------------------------- pretrain: resume file, frame bank


def _videos(root: Path) -> list[tuple[str, Path]]:
    root.mkdir(parents=True, exist_ok=True)
    return [(f"v{i}", write_video(root / f"v{i}.avi", ramp_video(8, size=40, peak_frame=3 + i), fps=4)) for i in range(3)]


def _pretrain_cfg() -> P.PretrainConfig:
    return P.PretrainConfig(arch="resnet18", size=32, epochs=1, batch_size=8, frames_per_video=4, seed=1, device="cpu")


def test_hostile_pretrain_resume_files_never_run_and_refuse_in_one_line(tmp_path, caplog):
    vids, out = _videos(tmp_path / "v"), tmp_path / "w.safetensors"
    ck = P.ckpt_dir(out)
    ck.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"epoch": Payload(marker)}, ck / "last.pt")  # the resume file of earlier versions: never read
    folder = P.checkpoint_path(out)
    folder.mkdir()
    (folder / runtime.CHECKPOINT_STATE).write_text('{"config": {}, "epoch": 1}')
    (folder / runtime.CHECKPOINT_TENSORS).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CeusError, match="not a readable safetensors file") as e:
        P.pretrain(vids, out, _pretrain_cfg(), resume=True)
    assert str(folder / runtime.CHECKPOINT_TENSORS) in str(e.value) and "\n" not in str(e.value)
    (folder / runtime.CHECKPOINT_STATE).write_text("[1, 2")
    with pytest.raises(CeusError, match="unreadable") as e:
        P.pretrain(vids, out, _pretrain_cfg(), resume=True)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)
    runtime.remove_checkpoint(folder)
    with caplog.at_level("WARNING"):
        assert P.pretrain(vids, out, _pretrain_cfg(), resume=True)["epochs"] == 1
    assert "last.pt: checkpoint of an earlier version, not read" in caplog.text
    assert not marker.exists()


def test_foreign_frame_bank_is_ignored_not_trusted(tmp_path, caplog):
    vids, out = _videos(tmp_path / "v"), tmp_path / "w.safetensors"
    cfg = _pretrain_cfg()
    bank_file = P.ckpt_dir(out) / "frames.npz"
    bank_file.parent.mkdir()
    marker = tmp_path / "pwned"
    fp = pretrain_frames._fingerprint(vids, cfg.size, cfg.frames_per_video)
    meta = f'{{"fingerprint": "{fp}", "videos": ["v0"], "skipped": []}}'
    foreign = [dict(meta=np.array([Payload(marker)], dtype=object)),  # object array
               dict(meta=np.array(meta), frames=np.zeros((4, 7, 7), np.float32), times=np.zeros(4), video=np.zeros(4, int)),
               dict(meta=np.array(meta), frames=np.zeros((4, 32, 32), np.uint8), times=np.zeros(4), video=np.full(4, 5))]
    for arrays in foreign:
        with open(bank_file, "wb") as f:
            np.savez(f, **arrays)
        caplog.clear()
        with caplog.at_level("WARNING"):
            bank = pretrain_frames.build_bank(vids, cfg.size, cfg.frames_per_video, cache=bank_file)
        assert "unreadable frame cache, extracting again" in caplog.text and str(bank_file) in caplog.text
        assert bank.videos == ["v0", "v1", "v2"] and tuple(bank.frames.shape[1:]) == (32, 32)
    assert pretrain_frames.build_bank(vids, cfg.size, cfg.frames_per_video, cache=bank_file).videos == bank.videos
    assert not marker.exists()


# ----------------------------------------------------------------------------- never over the user's files


def _small_cohort(path: Path) -> Path:
    df = pd.DataFrame({"case_id": [f"c{i}" for i in range(20)], "label": [0, 1] * 10,
                       "split": ["train"] * 14 + ["test"] * 6, "age": np.arange(20) + 40})
    df.to_csv(path, index=False)
    return path


def test_table1_never_overwrites_its_input_or_a_foreign_file(tmp_path, capsys):
    cohort = _small_cohort(tmp_path / "cohort.csv")
    before = cohort.read_bytes()
    for force in ([], ["--force"]):
        assert exit_code(["table1", str(cohort), "--out", str(cohort), *force]) == 2
        _one_line_error(capsys, cohort, "input")
    assert cohort.read_bytes() == before
    mine = tmp_path / "mine.csv"
    mine.write_text("my own table\n")
    assert exit_code(["table1", str(cohort), "--out", str(mine)]) == 2
    _one_line_error(capsys, mine, "did not write", "--force")
    assert mine.read_text() == "my own table\n"
    (tmp_path / "t1.tests.json").write_text("{}")  # the side file is protected too
    assert exit_code(["table1", str(cohort), "--out", str(tmp_path / "t1.csv")]) == 2
    _one_line_error(capsys, "t1.tests.json")
    assert not (tmp_path / "t1.csv").exists()
    assert exit_code(["table1", str(cohort), "--out", str(mine), "--force"]) == 0
    assert "Characteristic" in mine.read_text()
    assert exit_code(["table1", str(cohort), "--out", str(mine)]) == 0  # its own output: rewritten freely


def test_synth_into_a_folder_with_the_users_files_refuses(tmp_path, capsys):
    out = tmp_path / "mydata"
    (out / "images").mkdir(parents=True)
    (out / "images" / "P0001.png").write_bytes(b"the user's scan")
    (out / "notes.txt").write_text("mine")
    args = ["synth", "--out", str(out), "--n", "4", "--size", "32", "--fps", "1", "--duration", "3", "--workers", "1"]
    for extra in ([], ["--overwrite"]):
        assert exit_code(args + extra) == 2
        _one_line_error(capsys, out, "did not write", "images", "notes.txt", "--force")
    assert (out / "images" / "P0001.png").read_bytes() == b"the user's scan" and not (out / "cohort.csv").exists()
    assert exit_code(args + ["--force"]) == 0
    assert (out / "cohort.csv").is_file() and (out / "notes.txt").read_text() == "mine"
    assert exit_code(args) == 2  # now it holds a cohort
    _one_line_error(capsys, "already holds a cohort")
    assert exit_code(args + ["--overwrite"]) == 2  # the user's notes.txt is still there
    _one_line_error(capsys, "notes.txt")
    assert exit_code(args + ["--overwrite", "--force"]) == 0
    (out / "notes.txt").unlink()
    assert exit_code(args + ["--overwrite"]) == 0  # synth's own cohort alone: --overwrite replaces it


def test_prepare_into_the_cohorts_own_folder_keeps_the_input(tmp_path, capsys):
    """Issue 16: ``prepare COHORT --out <its folder>`` rewrote the input cohort.csv (relative paths made absolute)."""
    img = np.zeros((24, 24), np.uint8)
    img[6:18, 6:18] = 200
    write_png(tmp_path / "a.png", img)
    cohort = tmp_path / "cohort.csv"
    pd.DataFrame({"case_id": ["c0", "c1"], "label": [0, 1], "image": ["a.png", "a.png"]}).to_csv(cohort, index=False)
    before = cohort.read_bytes()
    for force in ([], ["--force"]):
        assert exit_code(["prepare", str(cohort), "--out", str(tmp_path), *force]) == 2
        _one_line_error(capsys, cohort, "input")
    assert cohort.read_bytes() == before and not (tmp_path / "prepared").exists()


def test_study_into_a_folder_with_the_users_report_refuses_and_keeps_it(tmp_path):
    """`out: .` beside a user's own report.html and metrics.json: nothing is written over them."""
    from ceusfusion.config import parse_config
    from ceusfusion.study import run_study

    (tmp_path / "cohort.csv").write_text("case_id,label,split\na,0,train\n")
    (tmp_path / "report.html").write_text("<p>my report</p>")
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "metrics.json").write_text("{}")
    cfg = parse_config({"cohort": str(tmp_path / "cohort.csv"), "out": str(tmp_path)})
    with pytest.raises(CeusError) as e:
        run_study(cfg, progress=False)
    assert "\n" not in str(e.value) and "--overwrite-files" in str(e.value)
    assert (tmp_path / "report.html").read_text() == "<p>my report</p>"
    assert (tmp_path / "evaluation" / "metrics.json").read_text() == "{}"
    (tmp_path / "manifest.json").write_text("[1, 2]")  # a file of the user's named like ours
    with pytest.raises(CeusError, match="manifest.json"):
        run_study(cfg, progress=False)


def test_a_refused_weights_file_leaves_nothing_behind(tmp_path):
    """`train --weights BAD` fails before config.json / folds.csv are written, so the next run starts clean."""
    run = make_fake_run(tmp_path / "run", n_train=8, n_test=0, size=16, frames=2, group_size=1, with_video=False)
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not a tensor file")
    argv = ["train", "--run", str(run), "--modality", "image", "--weights", str(bad), "--epochs", "1", "--folds", "2",
            "--batch-size", "4", "--crop", "16", "--no-progress", "--name", "m"]
    assert exit_code(argv) == 2
    assert not (run / "models" / "m").exists()
    argv[argv.index(str(bad))] = "none"
    assert exit_code(argv) == 0  # no "already holds a model"
