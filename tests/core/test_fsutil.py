"""Atomic writes: complete files only, usual permissions, nothing left behind on failure."""

import os
import stat

import pytest

from ceusfusion.core.fsutil import atomic_path, write_text


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
