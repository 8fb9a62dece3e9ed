"""Shared test set-up. The tests mirror the stage packages (tests/ingest, tests/models, ...); the helpers
they share (fake runs, fixtures, the in-process CLI) live here in tests/, which is put on sys.path."""

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def fake_run(tmp_path):
    """A factory for a tiny prepared run directory (see fake_run.make_fake_run for the options)."""
    from fake_run import make_fake_run  # tests/ is on sys.path only once this file has run

    return lambda **kw: make_fake_run(tmp_path / "run", **kw)
