"""Benchmark: keyframes + ROI arrays for the pocus videos vs `ffmpeg -vf fps=0.5` to PNG.

Both routes run in this process on the same videos, one after the other
(alternating, ``--repeat`` times, best time of each kept).
Prints both totals and the ratio ours / ffmpeg (target: <= 0.5).

    .venv/bin/python bench/keyframes.py [--data ../shared/data/pocus] [--size 256] [--limit N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ceusfusion.ingest.prepare import PrepareParams, prepare_video  # noqa: E402


def ours(videos: list[Path], params: PrepareParams) -> float:
    t = time.perf_counter()
    for v in videos:
        arrays, _, _ = prepare_video(v, None, params)
        assert arrays["video"].shape[0] == params.frames
    return time.perf_counter() - t


def ffmpeg(videos: list[Path], exe: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        for i, v in enumerate(videos):
            out = Path(tmp) / f"v{i}"
            out.mkdir()
            subprocess.run([exe, "-nostdin", "-loglevel", "error", "-i", str(v), "-vf", "fps=0.5", str(out / "OUT%03d.png")], check=True)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pocus")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    exe = shutil.which("ffmpeg")
    if exe is None:
        sys.exit("ffmpeg not found (apt-get install -y ffmpeg)")
    cases = pd.read_csv(a.data / "cases.csv")
    videos = [a.data / v for v in cases["video"]][: a.limit]
    params = PrepareParams(size=a.size)
    t_ours = t_ff = float("inf")
    for _ in range(a.repeat):  # alternate, so that a change in machine load hits both routes
        t_ours = min(t_ours, ours(videos, params))
        t_ff = min(t_ff, ffmpeg(videos, exe))
    print(f"videos: {len(videos)}  size: {a.size}")
    print(f"ceusfusion keyframes+ROI: {t_ours:.2f} s   ffmpeg fps=0.5 -> PNG: {t_ff:.2f} s")
    print(f"ratio ours/ffmpeg: {t_ours / t_ff:.3f}  (target <= 0.5)")


if __name__ == "__main__":
    main()
