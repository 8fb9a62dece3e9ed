"""Atomic writes (complete files only, usual permissions, nothing left behind on failure) and what a command may overwrite."""

import os
import stat

import pytest

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import (
    RECORD,
    atomic_path,
    check_writable,
    claim,
    created_entries,
    foreign_entries,
    record_created,
    was_created,
    write_text,
)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "out.txt"
    write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_gives_usual_permissions(tmp_path):
    p = tmp_path / "x.txt"
    write_text(p, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_check_writable_refuses_files_the_tool_did_not_create(tmp_path):
    run = tmp_path / "run"
    (run / "evaluation").mkdir(parents=True)
    users = run / "report.html"
    users.write_text("my report")
    (run / "evaluation" / "metrics.json").write_text("{}")
    check_writable(run / "new.html", run)  # nothing there: fine
    with pytest.raises(CeusError, match="report.html: this file ceusfusion did not write"):
        check_writable(users, run)
    with pytest.raises(CeusError, match="evaluation: this folder holds files that ceusfusion did not write"):
        claim(run, folders=[run / "evaluation"])
    check_writable(users, run, force=True)
    claim(run, files=[run / "figure.png"], folders=[run / "prepared"])
    (run / "prepared" / "cases").mkdir(parents=True)
    (run / "prepared" / "cases" / "a.npz").write_bytes(b"x")
    (run / "figure.png").write_bytes(b"x")
    assert was_created(run / "prepared" / "cases" / "a.npz", run) and was_created(run / "figure.png", run)
    check_writable(run / "figure.png", run)
    assert foreign_entries(run) == ["evaluation", "report.html"]
    assert not was_created(tmp_path / "outside.txt", run)
    with pytest.raises(CeusError, match="is this command's input"):
        check_writable(users, run, force=True, inputs=[users])


def test_a_symlinked_output_is_not_written_through(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    link = tmp_path / "run" / "report.html"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(CeusError, match="did not write"):
        check_writable(link, tmp_path / "run")
    assert target.read_text() == "keep"


def test_a_damaged_record_counts_as_nothing_created(tmp_path):
    (tmp_path / RECORD).write_text("{not json")
    assert created_entries(tmp_path) == set()
    record_created(tmp_path, [tmp_path / "a.csv"])
    assert created_entries(tmp_path) == {"a.csv"}


def test_claim_refuses_to_write_through_a_symlink_inside_the_output_folder(tmp_path):
    """Issue 25: `RUN/evaluation -> an outside folder` carried the study's writes out of the run, over the user's
    metrics.json there; a link anywhere below the output folder is refused, --force or not."""
    from ceusfusion.core.errors import CeusError
    from ceusfusion.core.fsutil import claim

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text("the user's")
    run = tmp_path / "run"
    run.mkdir()
    (run / "evaluation").symlink_to(outside, target_is_directory=True)
    for force in (False, True):
        with pytest.raises(CeusError, match="evaluation: a symlink inside the output folder"):
            claim(run, files=[run / "evaluation" / "metrics.json"], folders=[run / "evaluation"], force=force)
    assert (outside / "metrics.json").read_text() == "the user's"
    linked_root = tmp_path / "linked"
    linked_root.symlink_to(run, target_is_directory=True)  # the output folder itself may be a link
    claim(linked_root, files=[linked_root / "report.html"])


def test_a_file_an_enclosing_run_record_lists_is_the_tools_own(tmp_path):
    """Issue 25: `evaluate --out RUN/evaluation` on a folder `study` made was refused (the study's record is one
    level up); an enclosing record now counts, but never for a user's file it does not list, never through a
    symlink between that record and the file, and never over an input."""
    run = tmp_path / "run"
    claim(run, folders=[run / "evaluation"])  # what study records
    (run / "evaluation").mkdir()
    (run / "evaluation" / "metrics.json").write_text("the study's")
    assert was_created(run / "evaluation" / "metrics.json", run / "evaluation")
    claim(run / "evaluation", files=[run / "evaluation" / "metrics.json"])  # no --force needed
    (run / "notes").mkdir()
    (run / "notes" / "metrics.json").write_text("the user's")
    assert not was_created(run / "notes" / "metrics.json", run / "notes")
    with pytest.raises(CeusError, match="did not write"):
        claim(run / "notes", files=[run / "notes" / "metrics.json"])
    with pytest.raises(CeusError, match="input"):
        claim(run / "evaluation", files=[run / "evaluation" / "metrics.json"], inputs=[run / "evaluation" / "metrics.json"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text("the user's")
    (run / "evaluation").rename(tmp_path / "old")
    (run / "evaluation").symlink_to(outside, target_is_directory=True)  # the output folder itself is a link
    assert not was_created(run / "evaluation" / "metrics.json", run / "evaluation")
    with pytest.raises(CeusError, match="did not write"):
        claim(run / "evaluation", files=[run / "evaluation" / "metrics.json"])
    assert (outside / "metrics.json").read_text() == "the user's" and (run / "notes" / "metrics.json").read_text() == "the user's"
