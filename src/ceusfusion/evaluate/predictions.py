"""Prediction files, the interface between models and statistics: read and checked in one place.

Either predictions CSVs (``case_id, set, fold, y, prob``; the model name is the file stem) or one wide
CSV (``y``, optional ``set`` and ``case_id``, one column per model). Every problem names the file,
the column and the lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import read_csv_exact

PRED_COLUMNS = ("case_id", "set", "fold", "y", "prob")


def _lines(mask: pd.Series) -> str:
    lines = (np.flatnonzero(mask.to_numpy()) + 2).tolist()  # header is line 1
    return ", ".join(map(str, lines[:10])) + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")


def _check_column(df: pd.DataFrame, col: str, path, numeric: bool = True) -> pd.Series:
    s = pd.to_numeric(df[col], errors="coerce") if numeric else df[col]
    bad = s.isna() | (np.isinf(s) if numeric else False)
    if bad.any():
        raise CeusError(f"{path}: missing or non-numeric values in column {col!r} at lines {_lines(bad)}")
    return s


def _check_y(y: pd.Series, path) -> pd.Series:
    bad = ~y.isin([0, 1])
    if bad.any():
        raise CeusError(f"{path}: column 'y' must be 0 or 1; lines {_lines(bad)} are not")
    return y.astype(int)


def load_predictions(paths: list[str | Path]) -> pd.DataFrame:
    """Long table: model, case_id, set, y, prob (one row per model and patient)."""
    if not paths:
        raise CeusError("no prediction files given")
    frames = []
    for path in map(Path, paths):
        df = read_csv_exact(path)
        df.columns = [str(c).strip() for c in df.columns]
        if "y" not in df.columns:
            raise CeusError(f"{path}: no 'y' column (expected case_id, set, fold, y, prob or a wide table with y)")
        frames.extend(_predictions(df, path) if "prob" in df.columns else _wide(df, path))
    out = pd.concat(frames, ignore_index=True)
    names = [f["model"].iloc[0] for f in frames]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CeusError(f"model name(s) {dup} given twice; rename one of the files/columns")
    return out


def _predictions(df: pd.DataFrame, path: Path) -> list[pd.DataFrame]:
    if "case_id" not in df.columns:
        raise CeusError(f"{path}: no 'case_id' column")
    y = _check_y(_check_column(df, "y", path), path)
    prob = _check_column(df, "prob", path)
    case = _check_column(df, "case_id", path, numeric=False).astype(str)
    sets = df["set"].astype(str).str.strip() if "set" in df.columns else pd.Series("all", index=df.index)
    if "set" in df.columns:
        _check_column(df, "set", path, numeric=False)
    dup = pd.Series(list(zip(case, sets))).duplicated(keep=False)
    if dup.any():
        raise CeusError(f"{path}: case_id repeated within a set at lines {_lines(dup)}")
    return [pd.DataFrame({"model": path.stem, "case_id": case, "set": sets, "y": y, "prob": prob.astype(float), "file": str(path)})]


def _wide(df: pd.DataFrame, path: Path) -> list[pd.DataFrame]:
    y = _check_y(_check_column(df, "y", path), path)
    sets = df["set"].astype(str).str.strip() if "set" in df.columns else pd.Series("all", index=df.index)
    case = df["case_id"].astype(str) if "case_id" in df.columns else pd.Series([f"row{i + 1}" for i in range(len(df))])
    models = [c for c in df.columns if c not in ("y", "set", "case_id", "fold")]
    if not models:
        raise CeusError(f"{path}: no model columns besides y/set/case_id")
    return [pd.DataFrame({"model": m, "case_id": case, "set": sets, "y": y, "prob": _check_column(df, m, path).astype(float),
                          "file": str(path)}) for m in models]
