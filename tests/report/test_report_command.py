"""`ceusfusion report --run RUN` (issue 24): the report of a run built command by command, without `study`;
it never writes over a file ceusfusion did not create."""

from __future__ import annotations

from cli_run import exit_code
from fake_run import make_fake_run


def _stage_by_stage_run(tmp_path):
    """prepared cache → train → select → evaluate, each by its own command (as tests/study/test_stages_cli.py)."""
    run = make_fake_run(tmp_path / "run", n_train=16, n_test=6, size=20, frames=2, with_video=False)
    assert exit_code(["train", "--run", str(run), "--modality", "image", "--arch", "resnet18", "--weights", "none",
                      "--epochs", "1", "--folds", "2", "--crop", "16", "--batch-size", "8", "--no-progress",
                      "--threads", "1", "--device", "cpu"]) == 0
    assert exit_code(["select", "--run", str(run)]) == 0
    assert exit_code(["evaluate", str(run / "predictions" / "DL_image_resnet18.csv"), "--out", str(run / "evaluation"),
                      "--no-figures"]) == 0
    return run


def test_report_rebuilds_the_report_of_a_stage_by_stage_run(tmp_path, capsys):
    run = _stage_by_stage_run(tmp_path)
    assert not (run / "report.html").exists()  # no stage writes one
    capsys.readouterr()
    assert exit_code(["report", "--run", str(run), "--title", "Stage by stage"]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    text = (run / "report.html").read_text()
    assert "<title>Stage by stage</title>" in text
    assert "Table 2. Performance" in text and "DL_image_resnet18" in text and "Youden threshold" in text
    # the safeguards come from the run's records (no study manifest here), one marker each
    assert "training folds grouped by patient" in text and "<ul class=checks>" in text
    assert exit_code(["report", "--run", str(run)]) == 0  # its own report.html it may replace


def test_report_refuses_to_overwrite_a_file_it_did_not_write(tmp_path, capsys):
    run = make_fake_run(tmp_path / "run", n_train=4, n_test=2, size=16, frames=2, with_video=False)
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    assert exit_code(["report", "--run", str(run), "--out", str(mine)]) == 2
    assert "did not write" in capsys.readouterr().err and mine.read_text() == "<p>my notes</p>"
    assert exit_code(["report", "--run", str(run), "--out", str(mine), "--force"]) == 0
    assert "<h1>ceusfusion study report</h1>" in mine.read_text()


def test_report_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cohort.csv").write_text("case_id,label\n")
    for folder in (tmp_path / "data", tmp_path / "absent"):
        assert exit_code(["report", "--run", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and ("nothing to report" in err or "no such run directory" in err)
    assert not (tmp_path / "data" / "report.html").exists()
