"""Checkpoints are one unit: a kill at any point of the write leaves a complete epoch to resume from."""

from pathlib import Path

import pytest
import torch

from ceusfusion.core import runtime
from ceusfusion.core.errors import CeusError
from ceusfusion.core.runtime import checkpoint_exists, load_checkpoint, save_checkpoint


def _epoch(k: int) -> tuple[dict, dict]:
    return {"w": torch.full((3,), float(k))}, {"epoch": k}


def _loaded_epoch(folder: Path) -> tuple[int, float]:
    tensors, state = load_checkpoint(folder)
    return state["epoch"], float(tensors["w"][0])


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way catches it."""


def test_a_kill_while_the_tensors_are_written_keeps_the_previous_epoch(tmp_path, monkeypatch):
    ck = tmp_path / "fold0" / "checkpoint"
    save_checkpoint(ck, *_epoch(1))
    real = runtime.save_file

    def half_written(tensors, path, **kw):
        real(tensors, path, **kw)
        Path(path).write_bytes(Path(path).read_bytes()[:10])
        raise Killed

    monkeypatch.setattr(runtime, "save_file", half_written)
    with pytest.raises(Killed):
        save_checkpoint(ck, *_epoch(2))
    monkeypatch.setattr(runtime, "save_file", real)
    assert _loaded_epoch(ck) == (1, 1.0)
    save_checkpoint(ck, *_epoch(2))
    assert _loaded_epoch(ck) == (2, 2.0)
    assert sorted(p.name for p in ck.parent.iterdir()) == ["checkpoint"]  # no temporary folder left


class _KillAt:
    """Raise :class:`Killed` at the n-th rename or folder removal of a save (0: never)."""

    def __init__(self, monkeypatch):
        self.n, self.at, self.mp = 0, 0, monkeypatch
        real_rename, real_rmtree = Path.rename, runtime.shutil.rmtree
        monkeypatch.setattr(Path, "rename", self._wrap(real_rename))
        monkeypatch.setattr(runtime.shutil, "rmtree", self._wrap(real_rmtree))

    def _wrap(self, fn):
        def op(*a, **k):
            self.n += 1
            if self.n == self.at:
                raise Killed
            return fn(*a, **k)
        return op

    def save(self, ck: Path, epoch: int, at: int) -> bool:
        """Save ``epoch``, killed at operation ``at``; True when the save completed."""
        self.n, self.at = 0, at
        try:
            save_checkpoint(ck, *_epoch(epoch))
            return True
        except Killed:
            return False


def test_a_kill_at_any_step_of_two_saves_leaves_one_complete_epoch(tmp_path, monkeypatch):
    """Issue 16: a kill during the per-epoch write left files from two epochs. Every rename and removal of
    two consecutive saves is a kill point (and a second kill may hit the save after a first one): resume
    always finds one complete epoch, the newest that was fully written or the one before, never a mix."""
    kill = _KillAt(monkeypatch)
    for first in range(1, 6):
        for second in range(6):
            ck = tmp_path / f"{first}-{second}" / "checkpoint"
            kill.save(ck, 1, 0)
            done2 = kill.save(ck, 2, first)
            done3 = kill.save(ck, 3, second)
            assert checkpoint_exists(ck), (first, second)
            epoch, w = _loaded_epoch(ck)
            newest = 3 if done3 else (2 if done2 else 1)
            assert w == float(epoch) and epoch >= max(1, newest - 1) and epoch <= 3, (first, second, epoch)
            assert kill.save(ck, 4, 0) and _loaded_epoch(ck) == (4, 4.0)
            assert sorted(p.name for p in ck.parent.iterdir()) == ["checkpoint"], (first, second)


def test_a_damaged_checkpoint_is_one_line(tmp_path):
    ck = tmp_path / "checkpoint"
    save_checkpoint(ck, *_epoch(1))
    (ck / runtime.CHECKPOINT_TENSORS).write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(CeusError, match="not a readable safetensors file") as e:
        load_checkpoint(ck)
    assert str(ck) in str(e.value) and "\n" not in str(e.value)
    (ck / runtime.CHECKPOINT_STATE).write_text("{")
    with pytest.raises(CeusError, match="unreadable"):
        load_checkpoint(ck)
