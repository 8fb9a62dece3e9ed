"""A small segmenter for the tests that need a real one (annotate's proposals, a run's link to its segmenter and the
safeguard): bright elliptic nodules on speckle, patients of two cases each, trained by the real `segment train`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from ingest_fixtures import write_sitk_mask, write_video
from PIL import Image

from ceusfusion.core.runtime import threads
from ceusfusion.segment.train import SegmentSettings, segment_train

H, W = 72, 88


def nodule(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A speckled frame with a bright elliptic nodule, and its mask."""
    cy, cx = rng.uniform(22, H - 22), rng.uniform(24, W - 24)
    ry, rx = rng.uniform(8, 15), rng.uniform(9, 18)
    yy, xx = np.mgrid[:H, :W]
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img = np.clip(rng.normal(60, 18, (H, W)) + 110 * m, 0, 255).astype(np.uint8)
    return img, m


def box_text(m: np.ndarray) -> str:
    ys, xs = np.nonzero(m)
    return f"{xs.min()},{ys.min()},{xs.max() - xs.min() + 1},{ys.max() - ys.min() + 1}"


def nodule_cohort(root: Path, n_train: int = 24, n_test: int = 4, clip: bool = False) -> tuple[Path, dict]:
    """(cohort.csv, {case: true mask}): cases c00.. with masks, two per patient (p00, p01, ...), the last
    ``n_test`` in the test split; ``clip``: a test-split case 'vid' with a 12-frame clip (4 fps) and no mask."""
    rng = np.random.default_rng(1)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows, truth = [], {}
    for i in range(n_train + n_test):
        cid = f"c{i:02d}"
        img, m = nodule(rng)
        truth[cid] = m
        Image.fromarray(img).save(root / "img" / f"{cid}.png")
        mask = write_sitk_mask(root / "img" / f"{cid}_mask.nii.gz", m).relative_to(root)
        rows.append({"case_id": cid, "label": i % 2, "split": "test" if i >= n_train else "train", "group": f"p{i // 2:02d}",
                     "image": f"img/{cid}.png", "image_mask": str(mask)})
    if clip:
        frame, truth["vid"] = nodule(np.random.default_rng(9))
        write_video(root / "img" / "vid.avi", np.stack([frame] * 12), fps=4.0)
        rows.append({"case_id": "vid", "label": 0, "split": "test", "group": "pvid", "video": "img/vid.avi"})
    pd.DataFrame(rows).to_csv(root / "cohort.csv", index=False)
    return root / "cohort.csv", truth


def train_segmenter(cohort: Path, out: Path, epochs: int = 20, size: int = 64, lr: float = 1e-3) -> Path:
    """`segment train` on one thread (CI runs two test workers on two cores): 2 folds, a random start.
    The defaults reach a Dice of about 0.97 on ``nodule_cohort`` in about 30 s; 8 epochs at 32 px with lr 3e-3
    about 0.9 (box-prompted) in 10 s."""
    st = SegmentSettings(weights="none", size=size, epochs=epochs, folds=2, batch=4, seed=0, device="cpu", lr=lr)
    with threads(1):
        segment_train(cohort, out, st)
    return out
