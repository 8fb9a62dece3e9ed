"""Input-pipeline speed: samples/s of a real training epoch over the cached data vs the same model
stepping on in-memory random tensors of the same shape (same process, same thread count).

    python bench/train_throughput.py [--run RUN] [--arch resnet18] [--size 128 --crop 112] [--threads 2]

Prints the ratio real / synthetic (target >= 0.95: the input pipeline is never the bottleneck).
Without --run it builds a fake prepared run (tests/fake_run.py) in a temporary folder.
Repeats pair a real and a synthetic epoch (alternating which goes first) and report the median ratio,
to damp noise from other load on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ceusfusion.models.backbones import build_model
from ceusfusion.models.data import load_cached
from ceusfusion.models.train import train_batches, train_epoch
from ceusfusion.models.transforms import BatchTransform


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path)
    ap.add_argument("--modality", default="video")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--input", default=None)
    ap.add_argument("--cases", type=int, default=96, help="fake run: training cases")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--size", type=int, default=128, help="cache side (fake run) / resize side (--run)")
    ap.add_argument("--crop", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        run = a.run
        if run is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from fake_run import make_fake_run

            run = make_fake_run(tmp, n_train=a.cases, n_test=0, size=a.size, frames=a.frames)
        data = load_cached(run, a.modality, a.size)
    if dev.type == "cuda":
        data.x = data.x.to(dev)
    mode = a.input or ("single" if a.modality == "image" else "stack")
    tr = np.flatnonzero(data.split == "train")
    torch.manual_seed(0)
    model, _ = build_model(a.arch, mode, data.frames, data.frame_channels, weights="none")
    cuda = dev.type == "cuda"
    model = model.to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lossf = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0, device=dev), reduction="sum")
    tf = BatchTransform(mode, data.frames, data.frame_channels, a.crop, data.size, True, dev, channels_last=cuda)
    starts = [s for s in range(0, len(tr), a.batch_size) if min(a.batch_size, len(tr) - s) >= 2]
    gen = torch.Generator().manual_seed(0)
    shape = tf(data.x[:2]).shape[1:]
    fake_x = torch.rand(a.batch_size, *shape, device=dev)
    if cuda:
        fake_x = fake_x.contiguous(memory_format=torch.channels_last)
    fake_y = (torch.rand(a.batch_size, device=dev) < 0.3).float()

    def synthetic():
        for s in starts:
            n = min(a.batch_size, len(tr) - s)
            yield fake_x[:n], fake_y[:n], n

    def timed(batches) -> float:
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_epoch(model, opt, lossf, batches, None, 1.0)
        if cuda:
            torch.cuda.synchronize()
        return sum(min(a.batch_size, len(tr) - s) for s in starts) / (time.perf_counter() - t)

    timed(synthetic())  # warm-up (allocator, AdamW state, cudnn autotune)
    real, syn, ratios = [], [], []
    for i in range(a.repeats):  # ABBA order, paired ratios: drifting load from other processes cancels out
        order = ("real", "syn") if i % 2 == 0 else ("syn", "real")
        got = {}
        for kind in order:
            got[kind] = timed(train_batches(data, tr, gen, tf, starts, a.batch_size, a.crop) if kind == "real"
                              else synthetic())
        real.append(got["real"])
        syn.append(got["syn"])
        ratios.append(got["real"] / got["syn"])
    r, s = statistics.median(real), statistics.median(syn)
    t = time.perf_counter()  # the input pipeline alone (no model): a load-independent bound on its share
    for _ in range(a.repeats):
        for x, _y, _n in train_batches(data, tr, gen, tf, starts, a.batch_size, a.crop):
            pass
    if cuda:
        torch.cuda.synchronize()
    pipe = a.repeats * sum(min(a.batch_size, len(tr) - s0) for s0 in starts) / (time.perf_counter() - t)
    print(f"device={dev} arch={a.arch} input={mode} x={tuple(shape)} batch={a.batch_size} threads={a.threads} "
          f"cases={len(tr)}")
    print(f"real epoch over cached data: {r:.1f} samples/s   in-memory random tensors: {s:.1f} samples/s")
    print(f"input pipeline alone: {pipe:.0f} samples/s, i.e. {100 * s / pipe:.2f}% of a synthetic step's time")
    print(f"ratio {statistics.median(ratios):.3f} (median of {a.repeats} paired epochs; per pair: "
          f"{', '.join(f'{x:.3f}' for x in ratios)}; target >= 0.95)")


if __name__ == "__main__":
    main()
