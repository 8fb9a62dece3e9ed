"""A fake run directory with a prepared cache (RUN/prepared/) and a weak planted signal.

Lets training, feature, fusion and explain tests run without ``prepare``:
positives carry a faint bright blob whose contrast washes in over the
keyframes (video) or is present in the still (image), on top of noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.fsutil import write_csv
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.ingest import cache

FAKE_PARAMS = {"fake": True}  # the prepare parameters recorded for a fake cache (in each case and the run's record)


def make_fake_run(root, n_train: int = 40, n_test: int = 12, size: int = 40, frames: int = 3,
                  colour: bool = False, signal: float = 1.0, pos_rate: float = 0.4, seed: int = 0,
                  group_size: int = 2, with_image: bool = True, with_video: bool = True) -> Path:
    """Write RUN/prepared/{index.csv, keyframes.json, cases/*.npz} under ``root`` and return the run path.

    ``signal`` scales the planted blob (0 = no signal). Every ``group_size``
    consecutive training cases share a patient group (same label).
    """
    run = Path(root)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    rows = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        split = "train" if i < n_train else "test"
        group = f"g{i // group_size:03d}" if split == "train" else f"t{i:03d}"
        if split == "train" and i % group_size:
            label = rows[-1]["label"]
        else:
            label = int(rng.random() < pos_rate)
        cid = f"case{i:03d}"
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        r = size * rng.uniform(0.12, 0.2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        base = rng.uniform(60, 110)
        arrays = {}

        def frame(strength):
            img = base + rng.normal(0, 25, (size, size)) + 70 * blob * strength
            img = np.clip(img, 0, 255).astype(np.uint8)
            return np.repeat(img[..., None], 3, -1) if colour else img

        amp = 0.25 + signal * 0.6 * label
        if with_image:
            arrays["image"] = frame(amp)
        if with_video:
            arrays["video"] = np.stack([frame(amp * (t + 1) / frames) for t in range(frames)])
            arrays["times"] = np.arange(frames, dtype=np.float64) * 2.0
            arrays["frame_index"] = np.arange(frames, dtype=np.int64) * 10
        cache.save_case(run, cid, record=cache.case_entry(f"fake{i}", FAKE_PARAMS), **arrays)
        rows.append({"case_id": cid, "label": label, "split": split, "group": group, "center": "A",
                     "has_image": with_image, "has_video": with_video, "hash": f"fake{i}"})
    # both classes must be present in training
    df = pd.DataFrame(rows, columns=cache.INDEX_COLUMNS)
    write_csv(RunLayout(run).prepared_index, df)
    cache.write_run_record(run, 1, FAKE_PARAMS, {})
    return run
