"""The features-parquet contract: one writer, one reader, and the column-naming rules.

A features file (``RUN/features/<name>.parquet``) is a table ``case_id, set, y,
group, f0000, f0001, ...`` with the producer's metadata as JSON in the parquet schema
metadata under ``ceusfusion`` (at least ``name``; a file without it is named
after its stem). ``group`` is the patient group of the prepared index: it travels
with the features so that every cross-validation of the fusion stage keeps a
patient's nodules on one side of each split. A file written before ``group``
existed still reads; each case is then its own patient, and the metadata says
so (``has_group`` False). The fusion stage joins several files on ``case_id`` and
prefixes each feature column with its model name (``<name>__f0000``) so that
every column stays traceable. A score-level input (``<name>_score``) has one
column, the logit of the model's probability.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import atomic_path

META_KEY = b"ceusfusion"  # schema-metadata key of the producer's JSON metadata
ID_COLUMNS = ("case_id", "set", "y")  # required in every file
GROUP_COLUMN = "group"  # the patient group (string); absent from old files
NOT_FEATURES = (*ID_COLUMNS, GROUP_COLUMN)  # every other column is a feature
SCORE_SUFFIX = "_score"
SCORE_CLIP = 1e-6  # probabilities are clipped to [SCORE_CLIP, 1 - SCORE_CLIP] before the logit


# --------------------------------------------------------------------------- column names


def feature_columns(dim: int) -> list[str]:
    """The feature columns of one model's file: f0000, f0001, ..."""
    return [f"f{j:04d}" for j in range(dim)]


SCORE_COLUMN = feature_columns(1)[0]  # the one column of a score-level input


def feature_names(df: pd.DataFrame) -> list[str]:
    """The feature columns of a features table (everything but case_id, set, y, group), in file order."""
    return [c for c in df.columns if c not in NOT_FEATURES]


def joined_column(name: str, col: str) -> str:
    """A feature column once joined with other files: '<model name>__<column>'."""
    return f"{name}__{col}"


def score_name(name: str) -> str:
    """The model name of a score-level input made from model ``name``."""
    return f"{name}{SCORE_SUFFIX}"


def is_score_name(name: str) -> bool:
    """Whether a features file's model name is a score-level input."""
    return str(name).endswith(SCORE_SUFFIX)


def score_logit(prob) -> np.ndarray | np.float32:
    """Score feature of probabilities: float32 logit after clipping to [1e-6, 1 - 1e-6] (scalar in, scalar out)."""
    p = np.clip(np.asarray(prob, dtype=np.float64), SCORE_CLIP, 1 - SCORE_CLIP)
    return np.log(p / (1 - p)).astype(np.float32)


# --------------------------------------------------------------------------- writer and reader


def write_features(path, df: pd.DataFrame, meta: dict) -> Path:
    """Write the features table as parquet (atomically), metadata as JSON under ``ceusfusion``."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _read_meta(path: Path, table: pa.Table) -> dict:
    raw = (table.schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        raise CeusError(f"{path}: the 'ceusfusion' schema metadata is not valid JSON") from None
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta.setdefault("name", path.stem)
    return meta


def _check_table(path: Path, df: pd.DataFrame) -> list[str]:
    """Columns, unique case ids, numeric features, set/label values; returns the feature columns."""
    missing = [c for c in ID_COLUMNS if c not in df.columns]
    if missing:
        raise CeusError(f"{path}: missing column(s) {', '.join(missing)} "
                        "(expected case_id, set, y, group (optional), f0000, ...)")
    df["case_id"] = df["case_id"].astype(str)
    dup = df["case_id"][df["case_id"].duplicated()]
    if len(dup):
        raise CaseError(dup.iloc[0], str(path), "case_id appears more than once")
    feats = feature_names(df)
    if not feats:
        raise CeusError(f"{path}: no feature columns besides case_id, set, y, group")
    for c in feats:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise CeusError(f"{path}: feature column {c!r} is not numeric")
    for cid, s, y in zip(df["case_id"], df["set"], df["y"]):
        if s not in ("train", "test"):
            raise CaseError(cid, str(path), f"set must be 'train' or 'test', got {s!r}")
        if pd.isna(y) or float(y) not in (0.0, 1.0):
            raise CaseError(cid, str(path), f"y must be 0 or 1, got {y!r}")
    vals = df[feats].to_numpy(dtype=float)
    bad = ~np.isfinite(vals)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CaseError(df["case_id"].iloc[r], str(path), f"non-finite value in feature column {feats[c]!r}")
    return feats


def _fill_group(df: pd.DataFrame) -> bool:
    """Put the patient group (str) after y: empty values and a file without the column get the case_id.

    Returns whether the file had the column (False: an old file, one case = one patient)."""
    has = GROUP_COLUMN in df.columns
    g = df.pop(GROUP_COLUMN) if has else pd.Series(np.nan, index=df.index, dtype=object)
    g = g.where(g.notna() & (g.astype(str).str.strip() != ""), df["case_id"]).astype(str)
    df.insert(df.columns.get_loc("y") + 1, GROUP_COLUMN, g)
    return has


def read_features(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """One features parquet: validated table (``group`` always present) and its `ceusfusion` metadata
    (name falls back to the stem; ``has_group`` says whether the file had its own group column)."""
    path = Path(path)
    if not path.is_file():
        raise CeusError(f"{path}: features file not found")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise CeusError(f"{path}: cannot read as parquet ({str(exc).splitlines()[0]})") from None
    meta = _read_meta(path, table)
    df = table.to_pandas()
    _check_table(path, df)
    df["y"] = df["y"].astype(int)
    df["set"] = df["set"].astype(str)
    meta["has_group"] = _fill_group(df)
    return df, meta
