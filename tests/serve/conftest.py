"""The serve tests' shared fixtures: one tiny synthetic study, exported once per test module; a page in Chromium."""

from __future__ import annotations

import shutil

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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def chromium():
    """(open_page(url, width) -> a page at ``url`` in the system's headless Chromium, the pages' script errors);
    skips where there is no browser or no playwright (never `playwright install`)."""
    if CHROMIUM is None:
        pytest.skip("no chromium browser found (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)

        def open_page(url: str, width: int = 1280):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            return page

        try:
            yield open_page, errors
        finally:
            browser.close()
