"""Prediction files, the interface between models and statistics: read and checked in one place.

Either predictions CSVs (``case_id, set, fold, y, prob``, optional ``scoring``; the model name is the
file stem) or one wide CSV (``y``, optional ``set`` and ``case_id``, one column per model). Every
problem names the file, the column and the lines.

``scoring`` says how a row's probability was obtained, so that no reader mistakes one kind of number
for another: ``out-of-fold`` (a model that never saw the case), ``out-of-fold, ... (optimistic)``
(something was chosen on those same cases), ``refit`` (a model fitted on every training case scoring
a case it never saw), ``apparent`` (a model scoring its own training cases). The label travels with
the numbers, from the stage that made them to Table 2.

``group`` (optional, in either format) names the patient a row belongs to when a patient has several
rows (nodules); where it is absent the cohort manifest's ``group`` is used, else the case_id
(:func:`attach_groups`). Rows of one patient are not independent, so ``evaluate`` then computes
patient-level (clustered) intervals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import read_csv_exact

PRED_COLUMNS = ("case_id", "set", "fold", "y", "prob")
SCORING_COLUMN = "scoring"  # optional: how each row was scored (see the module docstring)
GROUP_COLUMN = "group"  # optional: the patient of each row (several nodules per patient)
NOT_RECORDED = "not recorded"


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
    scoring = df[SCORING_COLUMN].fillna(NOT_RECORDED).astype(str) if SCORING_COLUMN in df.columns else NOT_RECORDED
    return [pd.DataFrame({"model": path.stem, "case_id": case, "set": sets, "y": y, "prob": prob.astype(float),
                          "file": str(path), "scoring": scoring, GROUP_COLUMN: _groups(df)})]


def _groups(df: pd.DataFrame) -> pd.Series:
    """The file's group column (labels as text; missing or blank stays missing), or all missing."""
    if GROUP_COLUMN not in df.columns:
        return pd.Series(None, index=df.index, dtype=object)
    return _labels(df[GROUP_COLUMN])


def _wide(df: pd.DataFrame, path: Path) -> list[pd.DataFrame]:
    y = _check_y(_check_column(df, "y", path), path)
    sets = df["set"].astype(str).str.strip() if "set" in df.columns else pd.Series("all", index=df.index)
    case = df["case_id"].astype(str) if "case_id" in df.columns else pd.Series([f"row{i + 1}" for i in range(len(df))])
    models = [c for c in df.columns if c not in ("y", "set", "case_id", "fold", SCORING_COLUMN, GROUP_COLUMN)]
    if not models:
        raise CeusError(f"{path}: no model columns besides y/set/case_id")
    return [pd.DataFrame({"model": m, "case_id": case, "set": sets, "y": y, "prob": _check_column(df, m, path).astype(float),
                          "file": str(path), "scoring": NOT_RECORDED, GROUP_COLUMN: _groups(df).to_numpy()}) for m in models]


def attach_groups(pred: pd.DataFrame, cohort: pd.DataFrame | None) -> pd.DataFrame:
    """Fill ``group``: the predictions' own, else the cohort manifest's (indexed by case_id), else the case_id."""
    out = pred.copy()
    g = _labels(out[GROUP_COLUMN]) if GROUP_COLUMN in out.columns else pd.Series(None, index=out.index, dtype=object)
    if cohort is not None and GROUP_COLUMN in cohort.columns:
        from_cohort = _labels(cohort[GROUP_COLUMN].reindex(out["case_id"].astype(str)))
        g = g.where(g.notna(), pd.Series(from_cohort.to_numpy(), index=out.index))
    out[GROUP_COLUMN] = g.where(g.notna(), out["case_id"].astype(str))
    return out


def _labels(values: pd.Series) -> pd.Series:
    """Groups as text (a number read as 7.0 from a CSV is the group '7'); missing or blank as None."""
    def one(v):
        if pd.isna(v):
            return None
        text = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip()
        return text or None
    return values.astype(object).map(one).astype(object)
