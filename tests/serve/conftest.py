"""The serve tests' shared fixture: one tiny synthetic study, exported once per test module."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console

from ceusfusion.demo import run_demo
from ceusfusion.deploy.export import export

FIELDS = ("image", "image_mask", "video", "video_mask")


@pytest.fixture(scope="module")
def tiny_study(module_tmp_factory):
    """(run, bundle, two test patients' files {field: path}): a 48-patient study (about 20 s), exported."""
    root = module_tmp_factory.mktemp("serve")
    run_demo(root / "run", Console(record=True, width=160), n=48, quick=True, progress=False)
    bundle = export(root / "run", root / "bundle")
    d = root / "run" / "data"
    rows = pd.read_csv(d / "cohort.csv").query("split == 'test'").iloc[:2]
    return root / "run", bundle, [{k: d / r[k] for k in FIELDS} for _, r in rows.iterrows()]
