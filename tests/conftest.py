"""Shared test set-up. The tests mirror the stage packages (tests/ingest, tests/models, ...); the helpers
they share (fake runs, fixtures, the in-process CLI) live here in tests/, which is put on sys.path."""

import os
import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# no weight downloads from tests (models.resolver): CI is offline, and a hub client would retry for minutes
os.environ.setdefault("CEUSFUSION_OFFLINE", "1")
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def fake_run(tmp_path):
    """A factory for a tiny prepared run directory (see fake_run.make_fake_run for the options)."""
    from fake_run import make_fake_run  # tests/ is on sys.path only once this file has run

    return lambda **kw: make_fake_run(tmp_path / "run", **kw)


class _ModuleTempFactory:
    """``tmp_path_factory`` that remembers the folders it made, so they can go with their module."""

    def __init__(self, factory):
        self.factory, self.made = factory, []

    def mktemp(self, basename: str, numbered: bool = True) -> Path:
        path = self.factory.mktemp(basename, numbered)
        self.made.append(path)
        return path

    def getbasetemp(self) -> Path:
        return self.factory.getbasetemp()


@pytest.fixture(scope="module")
def module_tmp_factory(tmp_path_factory):
    """``tmp_path_factory`` for a test module's shared fixtures, whose folders go when the module is done:
    the slow tests' trained runs and bundles add up to GBs, and CI disks can be small (CI once ran out).
    A test's own ``tmp_path`` is removed when it passes (``tmp_path_retention_policy`` in pyproject)."""
    tracked = _ModuleTempFactory(tmp_path_factory)
    yield tracked
    for path in tracked.made:
        shutil.rmtree(path, ignore_errors=True)
