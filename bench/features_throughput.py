"""Benchmark: feature extraction vs the backbone's bare forward pass (target ratio >= 0.95).

``extract`` (the whole function: index the cached uint8 arrays, centre crop,
normalise, forward to the penultimate node, pool, copy out) runs over every
cached case of a run with one fold model; the baseline is a bare
``model(x)`` loop over in-memory float tensors of the same shapes and batch
sizes, same threads, same ``inference_mode``. The two alternate ``--repeat``
times; the best time of each is kept. Wall-clock and process CPU time are both
reported: on a machine shared with other jobs the CPU-time ratio is the
reliable one.

    .venv/bin/python bench/features_throughput.py [--model RUN/models/NAME] [--threads 1] [--batch-size 32]

Without ``--model`` a fake run (``tests/fake_run.py``: 256 px cache, 5
keyframes) is made in a temporary folder and a resnet18 stack model is trained
on it for one epoch (the weights do not matter for speed; crop 224 does).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from ceusfusion.fusion.extract import extract, make_extractor  # noqa: E402
from ceusfusion.models.data import load_cached  # noqa: E402
from ceusfusion.models.registry import (
    load_fold_model,
    parse_model_path,  # noqa: E402
    transform_for,
)
from ceusfusion.models.train import TrainConfig, train  # noqa: E402


def fake_model(tmp: Path, arch: str, n: int, crop: int) -> Path:
    from fake_run import make_fake_run

    run = make_fake_run(tmp / "run", n_train=n - n // 4, n_test=n // 4, size=256, frames=5, seed=0)
    cfg = TrainConfig(modality="video", arch=arch, input_mode="stack", weights="none", epochs=1, folds=2,
                      batch_size=16, crop=crop, seed=0, device="cpu", name="bench")
    train(run, cfg, progress=False)
    return run / "models" / "bench"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None, help="RUN/models/NAME (default: a fake run trained here)")
    ap.add_argument("--arch", default="resnet18", help="architecture of the fake model")
    ap.add_argument("--cases", type=int, default=48, help="cases of the fake run")
    ap.add_argument("--crop", type=int, default=224, help="crop of the fake model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model_path = a.model or fake_model(Path(tmp), a.arch, a.cases, a.crop)
        run, name = parse_model_path(model_path)
        model, cfg = load_fold_model(run, name, 0)
        data = load_cached(run, cfg.modality, cfg.size)  # loaded once, as `features` does
        print(f"setup {time.perf_counter() - t0:.1f} s; {name}: {cfg.arch} {cfg.input_mode}, "
              f"{len(data)} cases, crop {cfg.crop}, batch {a.batch_size}, {a.threads} thread(s)")
        ex = make_extractor(model)
        tf = transform_for(cfg)
        n, b = len(data), a.batch_size
        shapes = [(min(b, n - s), cfg.raw["channels"], cfg.crop, cfg.crop) for s in range(0, n, b)]
        xs = [torch.randn(s, generator=torch.Generator().manual_seed(i)) for i, s in enumerate(shapes)]

        def bare() -> tuple[float, float]:
            t, c = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                for x in xs:
                    model(x)
            return time.perf_counter() - t, time.process_time() - c

        def ours() -> tuple[float, float]:
            t, c = time.perf_counter(), time.process_time()
            extract(ex, data, tf, batch_size=b)
            return time.perf_counter() - t, time.process_time() - c

        ours(), bare()  # warm-up
        t_bare, t_ours = [], []
        for _ in range(a.repeat):
            t_bare.append(bare())
            t_ours.append(ours())
    wb, cb = np.array(t_bare).T
    wo, co = np.array(t_ours).T
    print(f"bare forward : {n / wb.min():8.1f} samples/s wall, {n / cb.min():8.1f} per CPU-second (best of {a.repeat})")
    print(f"extract      : {n / wo.min():8.1f} samples/s wall, {n / co.min():8.1f} per CPU-second (best of {a.repeat})")
    print(f"ratio extract/bare = {wb.min() / wo.min():.3f} wall clock (target >= 0.95); "
          f"{cb.min() / co.min():.3f} in CPU time (robust when other jobs share the machine)")


if __name__ == "__main__":
    main()
