"""Benchmark: the first result on the `ceusfusion serve` page for a 30 s CEUS video, against `predict` in-process.

Both routes score the same patient's files (a synthetic 30 s, 15 fps CEUS video with its mask, a B-mode still
with its mask) with the same bundle, in this run:

- baseline: ``deploy.predict.predict`` called in this process (Grad-CAM overlays on, as the page has them);
- page: ``ceusfusion serve`` started as its own process, a headless Chromium (Playwright, the system browser)
  opens the page, picks the four files, clicks Predict and waits until the probabilities are shown. The time
  is from the click to the result on the page: upload, verification, prediction, overlays, rendering.

The first run of each route is cold (a fresh server process: its first inference). Prints both, the warm
medians, and the ratio page / predict. Target: the first page result under 5 s on 2 CPU cores.
Without chromium or playwright, the page is replaced by the API it calls (said in the output).

    .venv/bin/python bench/serve_latency.py [--bundle BUNDLE] [--repeat 3] [--size 320] [--fps 15]

Without ``--bundle`` a tiny synthetic study is run and exported first (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FIELDS = ("image", "image_mask", "video", "video_mask")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def tiny_bundle(work: Path) -> Path:
    from rich.console import Console

    from ceusfusion.demo import run_demo
    from ceusfusion.deploy.export import export

    run_demo(work / "run", Console(record=True, width=160), n=48, quick=True, progress=False)
    return export(work / "run", work / "bundle")


def patient(work: Path, size: int, fps: float, duration: float) -> dict[str, Path]:
    """One synthetic patient with a ``duration`` s CEUS video (the synth module's generative model)."""
    import pandas as pd

    from ceusfusion.synthetic.synth import SynthConfig, generate

    cohort = generate(work / "patient", SynthConfig(n=4, seed=7, size=size, fps=fps, duration=duration), workers=1)
    row = pd.read_csv(cohort).iloc[0]
    return {k: cohort.parent / row[k] for k in FIELDS}


def baseline(bundle: Path, files: dict, repeat: int) -> tuple[list[float], dict]:
    from ceusfusion.deploy.predict import predict

    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            res = predict(bundle, files["image"], files["image_mask"], files["video"], files["video_mask"], out=out)
            times.append(time.perf_counter() - t)
    return times, res


def start_server(bundle: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ceusfusion.cli", "serve", "--bundle", str(bundle), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/api/model", timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the server did not start: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not answer within 120 s")


def page_times(url: str, files: dict, repeat: int, chromium: str) -> tuple[list[float], list[float]]:
    """Click-to-result times on the page, and the probabilities it showed on the last run."""
    from playwright.sync_api import sync_playwright

    times, shown = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_page()
        for _ in range(repeat):
            page.goto(url + "/")
            page.wait_for_selector("body[data-card=loaded]")
            for k in FIELDS:
                page.set_input_files(f"#{k}", str(files[k]))
            t = time.perf_counter()
            page.click("#predict")
            page.wait_for_selector("body[data-state=done]", timeout=120_000)
            times.append(time.perf_counter() - t)
            shown = [float(e.get_attribute("data-prob")) for e in page.query_selector_all("td.prob[data-prob]")]
        browser.close()
    return times, shown


def api_times(url: str, files: dict, repeat: int) -> tuple[list[float], list[float]]:
    """The same through the API the page calls (no browser on this machine)."""
    times, probs = [], []
    for _ in range(repeat):
        b = uuid.uuid4().hex
        raw = b"".join(f"--{b}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{files[k].name}\"\r\n\r\n".encode()
                       + files[k].read_bytes() + b"\r\n" for k in FIELDS) + f"--{b}--\r\n".encode()
        req = urllib.request.Request(url + "/api/predict", data=raw,
                                     headers={"Content-Type": f"multipart/form-data; boundary={b}"})
        t = time.perf_counter()
        res = json.loads(urllib.request.urlopen(req, timeout=120).read())
        times.append(time.perf_counter() - t)
        probs = [m["prob"] for m in res["models"].values() if m.get("available")]
    return times, probs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=320, help="video frame side (px)")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--duration", type=float, default=30.0)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        bundle = a.bundle or tiny_bundle(work)
        files = patient(work, a.size, a.fps, a.duration)
        print(f"patient: {a.duration:.0f} s CEUS video, {a.size}x{a.size} px at {a.fps:g} fps "
              f"({files['video'].stat().st_size / 1e6:.1f} MB), bundle {bundle}")
        base, res = baseline(bundle, files, a.repeat)
        proc, url = start_server(bundle)
        try:
            chromium = shutil.which("chromium") or shutil.which("chromium-browser")
            try:
                import playwright.sync_api  # noqa: F401

                route = "page (headless Chromium, click to result shown)" if chromium else None
            except ImportError:
                route = None
            if route:
                page, shown = page_times(url, files, a.repeat, chromium)
            else:
                route = "API /api/predict (no chromium/playwright here: the page's own request, without the browser)"
                page, shown = api_times(url, files, a.repeat)
        finally:
            proc.terminate()
            proc.wait(10)
        want = [m["prob"] for m in res["models"].values() if m.get("available")]
        same = "yes" if shown == want else f"NO ({shown} vs {want})"
        print(f"predict in-process : first {base[0]:.2f} s, warm median {statistics.median(base[1:] or base):.2f} s")
        print(f"{route}: first {page[0]:.2f} s, warm median {statistics.median(page[1:] or page):.2f} s")
        print(f"ratio page / predict: first {page[0] / base[0]:.2f}, warm {statistics.median(page[1:] or page) / statistics.median(base[1:] or base):.2f}")
        print(f"same probabilities shown as predict: {same}")
        print(f"target (first page result < 5 s): {'met' if page[0] < 5 else 'NOT met'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
