"""A fake prepared run whose discriminative signal sits at a known place (for the explain tests).

Positives have a bright disk in one of the four quadrants (drawn per case);
negatives get the same added intensity spread evenly over the image, so the
mean brightness says nothing and the label is readable only from the local
disk. The disk (grown by 30 %) is the signal region of a positive case, in
prepared-cache space, like the synthetic cohort's margin mask; negatives have
none. The disk (grown by 30 %) is returned as the signal
region per case, in prepared-cache space, like the synthetic cohort's margin mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.fsutil import write_csv
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.ingest import cache

FAKE_PARAMS = {"fake": True}


def make_region_run(root, n_train: int = 48, n_test: int = 16, size: int = 48, frames: int = 3, radius: float = 0.13,
                    seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    run = Path(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    rows, regions = [], {}
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        label = i % 2 if split == "train" else (i // 1) % 2
        cid = f"case{i:03d}"
        qy, qx = rng.integers(0, 2, 2)
        cy = (0.27 + 0.46 * qy) * size + rng.uniform(-2, 2)
        cx = (0.27 + 0.46 * qx) * size + rng.uniform(-2, 2)
        r = size * radius
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        disk = 1.0 / (1.0 + np.exp((np.sqrt(d2) - r) / 1.0))
        if label:
            regions[cid] = d2 <= (1.3 * r) ** 2
        added = 80.0 * (disk if label else np.full_like(disk, disk.mean()))

        def frame(s):
            return np.clip(70 + rng.normal(0, 20, (size, size)) + s * added, 0, 255).astype(np.uint8)

        arrays = {"image": frame(1.0),
                  "video": np.stack([frame((t + 1) / frames) for t in range(frames)]),
                  "times": np.arange(frames, dtype=np.float64), "frame_index": np.arange(frames, dtype=np.int64)}
        cache.save_case(run, cid, record=cache.case_entry(f"h{i}", FAKE_PARAMS), **arrays)
        rows.append({"case_id": cid, "label": label, "split": split, "group": cid, "center": "A",
                     "has_image": 1, "has_video": 1, "hash": f"h{i}"})
    write_csv(RunLayout(run).prepared_index, pd.DataFrame(rows, columns=cache.INDEX_COLUMNS))
    cache.write_run_record(run, 1, FAKE_PARAMS, {})
    return run, regions
