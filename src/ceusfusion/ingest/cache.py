"""The prepared cache of a run directory (``RUN/prepared/``): one place for its paths and I/O.

``prepare`` writes it; training, features, explain and predict read it.
Layout and array shapes: docs/contracts.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import atomic_path

INDEX_COLUMNS = ["case_id", "label", "split", "group", "center", "has_image", "has_video", "hash"]


def prepared_dir(run: str | Path) -> Path:
    return Path(run) / "prepared"


def case_path(run: str | Path, case_id: str) -> Path:
    return prepared_dir(run) / "cases" / f"{case_id}.npz"


def save_case(run: str | Path, case_id: str, **arrays: np.ndarray) -> Path:
    """Write one case's arrays atomically (uncompressed: loading speed matters more than disk)."""
    path = case_path(run, case_id)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def load_case(run: str | Path, case_id: str) -> dict[str, np.ndarray]:
    path = case_path(run, case_id)
    if not path.is_file():
        raise CeusError(f"case {case_id}: no prepared arrays at {path} (run `ceusfusion prepare` first)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_index(run: str | Path) -> pd.DataFrame:
    """The table of successfully prepared cases (case_id, label, split, group, ...)."""
    path = prepared_dir(run) / "index.csv"
    if not path.is_file():
        raise CeusError(f"{path} not found (run `ceusfusion prepare` first)")
    df = pd.read_csv(path, dtype={"case_id": str, "group": str, "split": str, "center": str})
    return df
