"""Inputs of the fusion stage: features files joined on case_id, clinical covariates, perfusion parameters.

Nothing here learns from data: imputation and one-hot encoding are fitted later,
inside the training part of each CV fold. The patient group of every row comes
with the features (their ``group`` column, from the prepared index); a cohort,
when given, must agree with it, and fills it in for old files without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import sha256_file
from ceusfusion.fusion.features import GROUP_COLUMN, feature_names, joined_column, read_features
from ceusfusion.ingest.cohort import load_cohort


@dataclass
class FusionData:
    """The joined training/test table and what each column is."""

    frame: pd.DataFrame  # case_id, set, y, group, then feature columns
    deep: list[str]
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    groups: pd.Series | None = None  # patient group per row, aligned with frame (None: the case_id)
    inputs: list[dict] = field(default_factory=list)
    group_source: str = "case_id"  # where groups come from: features, cohort or case_id (see GROUP_SOURCES)

    def __post_init__(self):
        if self.groups is None:  # no group known: every case is its own patient
            self.groups = pd.Series(self.frame["case_id"].astype(str).to_numpy(), index=self.frame.index)
            self.group_source = "case_id"

    @property
    def columns(self) -> list[str]:
        return self.deep + self.numeric + self.categorical


def _cases(ids, limit: int = 5) -> str:
    ids = sorted(map(str, ids))
    return ", ".join(ids[:limit]) + (f" (and {len(ids) - limit} more)" if len(ids) > limit else "")


# --------------------------------------------------------------------------- features files


def _merge(base: pd.DataFrame, df: pd.DataFrame, path, first, drop_missing: bool) -> pd.DataFrame:
    """Inner join of one more features table on case_id; cases, sets and labels must agree."""
    a, b = set(base["case_id"]), set(df["case_id"])
    if a != b and not drop_missing:
        miss = [f"{len(a - b)} missing from {path}: {_cases(a - b)}"] if a - b else []
        miss += [f"{len(b - a)} only in {path}: {_cases(b - a)}"] if b - a else []
        raise CeusError(f"feature files cover different cases ({'; '.join(miss)}); "
                        "pass --drop-missing to keep only the shared cases")
    m = base.merge(df, on="case_id", how="inner", suffixes=("", "__other"))
    bad = m["case_id"][(m["set"] != m["set__other"]) | (m["y"] != m["y__other"])]
    if len(bad):
        raise CeusError(f"{path}: set or label disagrees with {first} for {len(bad)} case(s): {_cases(bad)}")
    return m.drop(columns=["set__other", "y__other"])


def _merge_groups(m: pd.DataFrame, path, group_file, has_group: bool) -> pd.DataFrame:
    """One group column after a join: it must agree when both files have one; a file without takes the other's."""
    other = f"{GROUP_COLUMN}__other"
    if has_group and group_file is not None:
        bad = m["case_id"][m[GROUP_COLUMN] != m[other]]
        if len(bad):
            raise CeusError(f"{path}: patient group disagrees with {group_file} for {len(bad)} case(s): "
                            f"{_cases(bad)}; features files must come from the same prepared index")
    elif has_group:
        m[GROUP_COLUMN] = m[other]
    return m.drop(columns=[other])


def join_features(paths: list[str | Path], drop_missing: bool = False) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """Join feature files on case_id; columns become '<model>__<column>' so they stay traceable.

    The frame keeps one ``group`` column; each input record says where its file's groups came from
    (``groups``: "file", or "case_id" for an old file without the column)."""
    if not paths:
        raise CeusError("no --features file given")
    base, cols, inputs, names, group_file = None, [], [], set(), None
    for path in paths:
        df, meta = read_features(path)
        name = str(meta["name"])
        if name in names:
            raise CeusError(f"{path}: model name {name!r} is used by another features file; names must be unique")
        names.add(name)
        feats = feature_names(df)
        df = df.rename(columns={c: joined_column(name, c) for c in feats})
        inputs.append({"kind": "features", "path": str(path), "sha256": sha256_file(path), "meta": meta,
                       "n_features": len(feats), "n_cases": len(df),
                       "groups": "file" if meta["has_group"] else "case_id (no group column: an older file)"})
        if base is None:
            base = df
        else:
            base = _merge_groups(_merge(base, df, path, paths[0], drop_missing), path, group_file, meta["has_group"])
        group_file = path if meta["has_group"] and group_file is None else group_file
        cols += [joined_column(name, c) for c in feats]
    return base.reset_index(drop=True), cols, inputs


# --------------------------------------------------------------------------- cohort: groups and clinical covariates


def _aligned_cohort(frame: pd.DataFrame, cohort) -> pd.DataFrame:
    """The cohort rows of the frame's cases, in frame order; labels and splits must agree with the features."""
    co = load_cohort(cohort).copy()
    co["case_id"] = co["case_id"].astype(str)
    missing = sorted(set(frame["case_id"]) - set(co["case_id"]))
    if missing:
        raise CeusError(f"{cohort}: {len(missing)} case(s) with features are not in the cohort: {_cases(missing)}")
    co = co.set_index("case_id").loc[frame["case_id"]]
    bad = frame["case_id"][frame["y"].to_numpy() != co["label"].to_numpy()]
    if len(bad):
        raise CeusError(f"{cohort}: label disagrees with the features for {len(bad)} case(s): {_cases(bad)}")
    if "split" in co.columns:
        s = co["split"].astype(str).to_numpy()
        bad = frame["case_id"][(s != frame["set"].to_numpy()) & (co["split"].notna().to_numpy())]
        if len(bad):
            raise CeusError(f"{cohort}: split disagrees with the features' set for {len(bad)} case(s): {_cases(bad)}")
    return co


def _add_clinical(frame: pd.DataFrame, co: pd.DataFrame, cohort, col: str) -> tuple[str, bool]:
    """Add column clin__<col> to the frame; returns its name and whether it is numeric."""
    if col not in co.columns:
        raise CeusError(f"{cohort}: clinical column {col!r} not found (columns: {', '.join(map(str, co.columns))})")
    raw = co[col]
    if raw.isna().all():
        raise CeusError(f"{cohort}: clinical column {col!r} is empty")
    num = pd.to_numeric(raw, errors="coerce")
    name = f"clin__{col}"
    if num.notna().sum() == raw.notna().sum():  # every given value is a number
        frame[name] = num.astype(float).replace([np.inf, -np.inf], np.nan).to_numpy()
        return name, True
    # missing is its own category; the encoder is fitted inside the pipeline
    frame[name] = raw.fillna("missing").astype(str).to_numpy(dtype=object)
    return name, False


def add_cohort(frame: pd.DataFrame, cohort, clinical: list[str]) -> tuple[pd.Series, list[str], list[str], dict]:
    """The cohort's patient groups and clinical columns (added to ``frame``): (groups, numeric, categorical,
    input record)."""
    co = _aligned_cohort(frame, cohort)
    groups = pd.Series(co["group"].astype(str).to_numpy(), index=frame.index)
    numeric, categorical = [], []
    for col in clinical:
        name, is_num = _add_clinical(frame, co, cohort, col)
        (numeric if is_num else categorical).append(name)
    record = {"kind": "cohort", "path": str(cohort), "sha256": sha256_file(cohort), "clinical": clinical}
    return groups, numeric, categorical, record


# --------------------------------------------------------------------------- perfusion parameters


def add_perfusion(frame: pd.DataFrame, perfusion) -> tuple[list[str], dict]:
    """Perfusion columns perf__<param> (added to ``frame``): (their names, input record)."""
    path = Path(perfusion)
    if not path.is_file():
        raise CeusError(f"{path}: perfusion file not found")
    pf = pd.read_csv(path, dtype={"case_id": str})
    if "case_id" not in pf.columns:
        raise CeusError(f"{path}: missing column case_id")
    if pf["case_id"].duplicated().any():
        raise CaseError(pf["case_id"][pf["case_id"].duplicated()].iloc[0], str(path), "case_id appears more than once")
    # A case without a row (e.g. no usable video) gets its parameters imputed inside the pipeline.
    missing = sorted(set(frame["case_id"]) - set(pf["case_id"]))
    pf = pf.set_index("case_id").reindex(frame["case_id"])
    pcols = []
    for col in pf.columns:
        vals = pd.to_numeric(pf[col], errors="coerce")
        if vals.notna().sum() != pf[col].notna().sum():
            raise CeusError(f"{path}: perfusion column {col!r} is not numeric")
        vals = vals.astype(float).replace([np.inf, -np.inf], np.nan)  # treated as missing
        if vals.notna().any():  # an all-empty parameter carries nothing
            frame[f"perf__{col}"] = vals.astype(float).to_numpy()
            pcols.append(f"perf__{col}")
    record = {"kind": "perfusion", "path": str(path), "sha256": sha256_file(path), "columns": pcols,
              "cases_without_row": missing}
    return pcols, record


def _cohort_groups(frame: pd.DataFrame, cohort_groups: pd.Series, from_features: bool, cohort) -> str:
    """Check the features' groups against the cohort's (or take the cohort's); returns the group source."""
    if not from_features:  # old features files without a group column: the cohort knows the patients
        frame[GROUP_COLUMN] = cohort_groups.to_numpy()
        return "cohort"
    bad = frame["case_id"][frame[GROUP_COLUMN].to_numpy() != cohort_groups.to_numpy()]
    if len(bad):
        raise CeusError(f"{cohort}: patient group disagrees with the features files for {len(bad)} case(s): "
                        f"{_cases(bad)}; pass the cohort the features were prepared from")
    return "features"


GROUP_SOURCES = {  # FusionData.group_source -> what it means (for fusion.json)
    "features": "the features files' group column (the prepared index)",
    "cohort": "the cohort's group column (the features files have none)",
    "case_id": "none known: every case is its own patient (features files without a group column, no cohort)",
}


def load_inputs(features: list[str | Path], cohort: str | Path | None = None, clinical: list[str] | None = None,
                perfusion: str | Path | None = None, drop_missing: bool = False) -> FusionData:
    """Deep features joined with optional clinical covariates (cohort manifest) and perfusion parameters.

    The patient groups always come with the data: from the features files, checked against the
    cohort when one is given; from the cohort for old files without a group column; else the case_id."""
    frame, deep, inputs = join_features(list(features), drop_missing=drop_missing)
    numeric: list[str] = []
    categorical: list[str] = []
    from_features = any(i["meta"]["has_group"] for i in inputs)
    source = "features" if from_features else "case_id"
    clinical = list(clinical or [])
    if clinical and cohort is None:
        raise CeusError("--clinical needs --cohort COHORT.csv to read the covariates from")
    if cohort is not None:
        cohort_groups, numeric, categorical, record = add_cohort(frame, cohort, clinical)
        source = _cohort_groups(frame, cohort_groups, from_features, cohort)
        inputs.append({**record, "groups": "checked: agrees with the features" if from_features else "used"})
    if perfusion is not None:
        pcols, record = add_perfusion(frame, perfusion)
        numeric += pcols
        inputs.append(record)
    groups = frame[GROUP_COLUMN].astype(str).copy()
    return FusionData(frame=frame, deep=deep, numeric=numeric, categorical=categorical, groups=groups,
                      inputs=inputs, group_source=source)
