"""The prepared cache of a run directory (``RUN/prepared/``): one place for its paths and I/O.

``prepare`` writes it; training, features, explain and predict read it.
Layout and array shapes: docs/contracts.md.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import atomic_path, restore_frame

INDEX_COLUMNS = ["case_id", "label", "split", "group", "center", "has_image", "has_video", "hash"]


def prepared_dir(run: str | Path) -> Path:
    return Path(run) / "prepared"


def case_path(run: str | Path, case_id: str) -> Path:
    return prepared_dir(run) / "cases" / f"{case_id}.npz"


RECORD_KEY = "prepare_record"  # inside each case's .npz: the JSON record of how its arrays were made


def save_case(run: str | Path, case_id: str, record: dict | None = None, **arrays: np.ndarray) -> Path:
    """Write one case's arrays atomically (uncompressed: loading speed matters more than disk).

    ``record`` (the input hash and keyframe entry) goes inside the same file, so the cache's record of a
    case can never describe arrays from another run (an interrupted prepare with other parameters).
    """
    path = case_path(run, case_id)
    if record is not None:
        arrays[RECORD_KEY] = np.array(json.dumps(record, default=_plain))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def _plain(o):
    """numpy scalars in a record become JSON numbers."""
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _open(path: Path, case_id: str, keys=None) -> dict[str, np.ndarray]:
    """The arrays of one case file (``keys``: only those); a file that is not plain arrays is one line."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if keys is None or k in keys}
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CaseError(case_id, str(path), f"not a readable prepared case ({first}); run `ceusfusion prepare` again") from None


def load_case(run: str | Path, case_id: str) -> dict[str, np.ndarray]:
    """The arrays of one prepared case (its record left out: see :func:`case_record`)."""
    path = case_path(run, case_id)
    if not path.is_file():
        raise CeusError(f"case {case_id}: no prepared arrays at {path} (run `ceusfusion prepare` first)")
    arrays = _open(path, case_id)
    arrays.pop(RECORD_KEY, None)
    return arrays


def case_record(run: str | Path, case_id: str) -> dict | None:
    """The record saved with a case's arrays; None when there is none or it cannot be read (then the
    case is prepared again, never trusted)."""
    path = case_path(run, case_id)
    if not path.is_file():
        return None
    try:
        raw = _open(path, case_id, keys={RECORD_KEY}).get(RECORD_KEY)
        rec = json.loads(str(raw)) if raw is not None and raw.ndim == 0 else None
    except (CeusError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def read_index(run: str | Path) -> pd.DataFrame:
    """The table of successfully prepared cases (case_id, label, split, group, ...)."""
    path = prepared_dir(run) / "index.csv"
    if not path.is_file():
        raise CeusError(f"{path} not found (run `ceusfusion prepare` first)")
    df = restore_frame(pd.read_csv(path, dtype={"case_id": str, "group": str, "split": str, "center": str}))
    return df
