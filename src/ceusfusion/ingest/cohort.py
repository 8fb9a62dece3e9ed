"""The cohort manifest: schema, validation, leakage checks and splits.

One row per patient (see DESIGN.md). Paths are relative to the manifest's
folder. Validation collects every problem at once, each naming the row, the
case, the column and what is wrong, so a user fixes a file in one pass.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import restore_frame
from ceusfusion.io.image import read_image
from ceusfusion.io.mask import read_mask
from ceusfusion.ingest.roi import MASK_ORIGINS, parse_xywh, xywh_box
from ceusfusion.io.video import probe_video

DELIMITERS = {";": "';'", "\t": "tab", "|": "'|'"}  # what a spreadsheet may save instead of commas

REQUIRED = ("case_id", "label")
FILE_COLUMNS = ("image", "image_mask", "video", "video_mask")
BOX_COLUMNS = ("image_box", "video_box", "video_box_time")  # a box instead of (or beside) a mask; BOXES.csv's columns
ROI_SOURCE_COLUMNS = ("image_roi_source", "video_roi_source")  # how a given mask was made (roi.MASK_ORIGINS)
RESERVED = REQUIRED + ("split", "group", "center") + FILE_COLUMNS + BOX_COLUMNS + ROI_SOURCE_COLUMNS
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Problem:
    row: int | None  # 1-based data row (header excluded); None for cohort-wide problems
    case_id: str | None
    column: str | None
    problem: str

    def line(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.case_id:
            where.append(f"case {self.case_id}")
        if self.column:
            where.append(f"column {self.column}")
        return f"{', '.join(where) or 'cohort'}: {self.problem}"


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV as strings (ids like '007' stay ids); clear error if unreadable.

    The header is checked first: pandas would rename a repeated column (``label.1``, then fused as a
    covariate) and read a ';'-separated file as one column.
    """
    path = Path(path)
    if path.is_dir():
        raise CeusError(f"{path}: is a folder, not a cohort manifest (give the CSV file)")
    if not path.is_file():
        raise CeusError(f"{path}: cohort manifest not found")
    check_header(path)
    try:
        df = restore_frame(pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]))  # write_csv's quotes
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CeusError(f"{path}: cannot read the manifest as CSV ({str(exc).splitlines()[0]})") from None
    df.columns = [c.strip() for c in df.columns]
    return df


def check_header(path: Path) -> None:
    """Refuse a header with a repeated column, or one that is a single column because of its delimiter."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            names = [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, csv.Error) as exc:
        raise CeusError(f"{path}: cannot read the manifest as CSV ({exc})") from None
    repeated = [(c, n) for c, n in Counter(names).items() if n > 1 and c]
    if repeated:
        which = "; ".join(f"column {c!r} appears {n} times (columns "
                          f"{', '.join(str(i + 1) for i, x in enumerate(names) if x == c)})" for c, n in repeated)
        raise CeusError(f"{path}: {which}; each column name must be unique")
    if len(names) == 1:
        for sep, name in DELIMITERS.items():
            if sep in names[0]:
                raise CeusError(f"{path}: the header is one column {names[0][:60]!r}: the delimiter looks wrong "
                                f"(the file looks {name}-separated; save it as comma-separated CSV)")


def clinical_columns(df: pd.DataFrame) -> list[str]:
    """The clinical covariates: every column outside the schema except file paths, a patient key and identifiers
    (``left_out_columns`` says which and why)."""
    from ceusfusion.stats.table1 import covariate_columns  # here: ceusfusion.stats loads scipy.stats and statsmodels (~0.7 s), which predict's import of prepare does not need
    return covariate_columns(df, [c for c in df.columns if c not in RESERVED])[0]


def left_out_columns(df: pd.DataFrame) -> dict[str, str]:
    """{column: why it is no covariate} for the columns outside the schema that are not covariates."""
    from ceusfusion.stats.table1 import covariate_columns  # here: ceusfusion.stats loads scipy.stats and statsmodels (~0.7 s), which predict's import of prepare does not need
    return covariate_columns(df, [c for c in df.columns if c not in RESERVED])[1]


ROLES = {
    "case_id": ("id", "one row per case, unique"),
    "label": ("label", "the outcome, 0 or 1"),
    "split": ("split", "train / test"),
    "group": ("group", "the patient: cases that share it are never split apart"),
    "center": ("center", "acquisition centre (split --by-center)"),
    "image": ("file (image)", "the still"),
    "image_mask": ("file (mask)", "the still's mask"),
    "video": ("file (video)", "the CEUS video"),
    "video_mask": ("file (mask)", "the video's mask"),
    "image_box": ("box", "the still's ROI box x,y,w,h (pixels), used where there is no mask"),
    "video_box": ("box", "the video's ROI box x,y,w,h (pixels) on the frame at video_box_time"),
    "video_box_time": ("box time", "seconds from the clip's start: the frame the video box or 2-D mask was drawn on"),
    "image_roi_source": ("mask origin", "how image_mask was made: manual, predicted_box or predicted_auto"),
    "video_roi_source": ("mask origin", "how video_mask was made: manual, predicted_box or predicted_auto"),
}


@dataclass
class ColumnRole:
    column: str
    role: str  # id, label, split, group, center, file (image/mask/video), covariate, ignored
    detail: str  # how it is read; for an ignored column, why


def column_roles(df: pd.DataFrame) -> list[ColumnRole]:
    """How each column of the manifest is read: its role in the schema, a covariate, or ignored and why."""
    left_out = left_out_columns(df)
    out = []
    for c in df.columns:
        if c in ROLES:
            out.append(ColumnRole(c, *ROLES[c]))
        elif c in left_out:
            out.append(ColumnRole(c, "ignored", left_out[c]))
        else:
            out.append(ColumnRole(c, "covariate", _covariate_kind(df[c])))
    return out


def _covariate_kind(s: pd.Series) -> str:
    v = s.dropna().astype(str).str.strip()
    v = v[v != ""]
    numeric = len(v) and pd.to_numeric(v, errors="coerce").notna().all()
    k = v.nunique()
    kind = (f"numeric ({k} distinct values)" if numeric and k > 10 else f"categorical ({k} levels)" if k > 1
            else f"constant ({v.iloc[0]!r} in every row)" if k else "empty")
    return kind + (f", {len(s) - len(v)} missing" if len(v) < len(s) else "")


def patient_keys(df: pd.DataFrame) -> dict[str, str]:
    """{column: why it looks like a patient key} when the manifest has no ``group`` column (else empty)."""
    if "group" in df.columns:
        return {}
    from ceusfusion.stats.table1 import patient_key_reason  # here: ceusfusion.stats loads scipy.stats and statsmodels (~0.7 s), which predict's import of prepare does not need
    ids = df["case_id"] if "case_id" in df.columns else None
    found = {c: patient_key_reason(df[c], c, ids) for c in df.columns if c not in RESERVED}
    return {c: r for c, r in found.items() if r}


def manifest_warnings(df: pd.DataFrame) -> list[str]:
    """What the manifest leaves unsaid: a patient key without a ``group`` column, file paths in a column that is not read."""
    from ceusfusion.stats.table1 import not_covariate_reason  # here: ceusfusion.stats loads scipy.stats and statsmodels (~0.7 s), which predict's import of prepare does not need
    out = []
    for c, why in patient_keys(df).items():
        crossing = ""
        if "split" in df.columns:
            side = df["split"].astype(str).str.strip()
            both = set(df.loc[side == "train", c].dropna()) & set(df.loc[side == "test", c].dropna())
            crossing = f"; {len(both)} of its values are in both train and test of this manifest's split" if both else ""
        out.append(f"no 'group' column, and column {c!r} looks like a patient key ({why}){crossing}: `split` refuses "
                   f"this manifest until told: --group {c} (its rows stay on one side) or --no-group (each row its own patient)")
    out += _orphan_origins(df)
    for c in df.columns:
        why = not_covariate_reason(df, c) if c not in RESERVED else None
        if why and why.startswith("file paths"):
            out.append(f"column {c!r} holds {why} but is not read: the file columns are {', '.join(FILE_COLUMNS)}"
                       f"{_file_column_hint(df, c)}")
    return out


def _file_column_hint(df: pd.DataFrame, column: str) -> str:
    if "mask" in column.lower():
        of = [m for m, pic in (("image_mask", "image"), ("video_mask", "video")) if pic in df.columns and m not in df.columns]
        return f" (rename it {of[0]} if these are the masks of the {of[0].split('_')[0]}s)" if of else ""
    return ""


def groups_of(df: pd.DataFrame) -> pd.Series:
    """The patient group per row; defaults to case_id where absent or empty."""
    if "group" in df.columns:
        return df["group"].fillna(df["case_id"]).astype(str)
    return df["case_id"].astype(str)


def resolve(manifest: str | Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else Path(manifest).parent / p


def absolute(manifest: str | Path, rel: str) -> Path:
    """The file's absolute path, links resolved; a link loop stays as written so that its case fails
    (with the reason) instead of the whole cohort."""
    p = resolve(manifest, rel)
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop before Python 3.13
        return Path(os.path.abspath(p))


def read_boxes(path: str | Path) -> pd.DataFrame:
    """A boxes file (BOXES.csv: case_id, image_box, video_box, video_box_time; an empty cell is no box), as strings."""
    path = Path(path)
    if not path.is_file():
        raise CeusError(f"{path}: boxes file not found")
    check_header(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CeusError(f"{path}: cannot read the boxes file as CSV ({str(exc).splitlines()[0]})") from None
    df.columns = [c.strip() for c in df.columns]
    unknown = [c for c in df.columns if c not in ("case_id",) + BOX_COLUMNS]
    if "case_id" not in df.columns or unknown:
        what = f"unknown column(s) {', '.join(map(repr, unknown))}" if unknown else "no case_id column"
        raise CeusError(f"{path}: {what}; a boxes file has the columns case_id, {', '.join(BOX_COLUMNS)}")
    return df


def merge_boxes(df: pd.DataFrame, boxes_path: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """The manifest with the boxes file's boxes: a box in the file replaces the manifest's for that case (the video
    box with its time); an empty cell keeps the manifest's. One Problem per unknown or repeated case id."""
    boxes_path = Path(boxes_path)
    try:
        boxes = read_boxes(boxes_path)
    except CeusError as exc:
        return df, [Problem(None, None, None, str(exc))]
    out, problems = df.copy(), []
    for col in BOX_COLUMNS:
        if col not in out.columns:
            out[col] = pd.Series([None] * len(out), index=out.index, dtype=object)
    where = {str(c): k for k, c in zip(out.index, out["case_id"])} if "case_id" in out.columns else {}
    seen: set[str] = set()
    for i, r in enumerate(boxes.to_dict(orient="records"), start=1):
        cid = _s(r.get("case_id"))
        if cid is None or cid not in where or cid in seen:
            why = "no case_id" if cid is None else ("repeated case" if cid in seen else "unknown case (not in the manifest)")
            problems.append(Problem(None, cid, "case_id", f"{boxes_path.name} row {i}: {why}"))
            continue
        seen.add(cid)
        for col, with_time in (("image_box", False), ("video_box", True)):
            if _s(r.get(col)) is not None and str(r[col]).strip():
                out.at[where[cid], col] = str(r[col]).strip()
                if with_time:
                    out.at[where[cid], "video_box_time"] = _s(r.get("video_box_time"))
    return out, problems


def load_cohort(path: str | Path, boxes: str | Path | None = None) -> pd.DataFrame:
    """Read and validate a manifest (with the boxes file's boxes merged in); raise one CeusError listing the problems."""
    df = read_manifest(path)
    problems = []
    if boxes is not None:
        df, problems = merge_boxes(df, boxes)
    problems += validate_table(df)
    if problems:
        lines = "; ".join(p.line() for p in problems[:5])
        more = f" (and {len(problems) - 5} more; run `ceusfusion validate`)" if len(problems) > 5 else ""
        raise CeusError(f"{path}: {len(problems)} problem(s): {lines}{more}")
    out = df.copy()
    out["label"] = out["label"].astype(int)
    out["group"] = groups_of(out)
    return out


# --------------------------------------------------------------------------- validation


def validate(path: str | Path, check_files: bool = True, boxes: str | Path | None = None) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Validate the manifest table (with the boxes file merged in) and (optionally) every file; return (table, problems)."""
    try:
        df = read_manifest(path)
    except CeusError as exc:
        return None, [Problem(None, None, None, str(exc))]
    problems = []
    if boxes is not None:
        df, problems = merge_boxes(df, boxes)
    problems += validate_table(df)
    if check_files:
        problems += validate_files(df, Path(path))
    return df, problems


def validate_table(df: pd.DataFrame) -> list[Problem]:
    """Schema, values and leakage checks that need no file access."""
    problems: list[Problem] = []
    for col in REQUIRED:
        if col not in df.columns:
            problems.append(Problem(None, None, col, "required column is missing"))
    if not any(c in df.columns for c in ("image", "video")):
        problems.append(Problem(None, None, "image/video", "the manifest needs an image or a video column"))
    if "case_id" not in df.columns:
        return problems
    if df.empty:
        problems.append(Problem(None, None, None, "the manifest holds no case (a header and no row)"))

    ids = df["case_id"]
    for i, cid in enumerate(ids, start=1):
        if pd.isna(cid):
            problems.append(Problem(i, None, "case_id", "missing value"))
        elif not SAFE_ID.match(str(cid)):
            problems.append(Problem(i, str(cid), "case_id", "not filesystem-safe (use letters, digits, '_', '-', '.')"))
    dup = ids[ids.notna() & ids.duplicated(keep=False)]
    for i, cid in dup.items():
        problems.append(Problem(int(i) + 1, str(cid), "case_id", "duplicate case_id"))

    if "label" in df.columns:
        for i, (cid, lab) in enumerate(zip(ids, df["label"]), start=1):
            if pd.isna(lab):
                problems.append(Problem(i, _s(cid), "label", "missing value"))
            elif str(lab).strip() not in ("0", "1", "0.0", "1.0"):
                problems.append(Problem(i, _s(cid), "label", f"label must be 0 or 1, got {lab!r}"))

    for col in ("image", "video"):
        if col in df.columns:
            other = "video" if col == "image" else "image"
            for i, (cid, v) in enumerate(zip(ids, df[col]), start=1):
                has_other = other in df.columns and not pd.isna(df[other].iloc[i - 1])
                if pd.isna(v) and not has_other:
                    problems.append(Problem(i, _s(cid), col, "missing value (no image and no video for this case)"))

    problems += _box_problems(df)
    if "split" in df.columns:
        for i, (cid, s) in enumerate(zip(ids, df["split"]), start=1):
            if pd.isna(s) or str(s).strip() not in ("train", "test"):
                problems.append(Problem(i, _s(cid), "split", f"split must be 'train' or 'test', got {s!r}"))
        problems += _leakage(df)
    return problems


def _box_problems(df: pd.DataFrame) -> list[Problem]:
    """The box columns' values (four whole pixels, a time in seconds), each box with its picture, and the
    mask-origin words; one Problem per bad cell. Whether a box fits its frame needs the file: validate_files."""
    out: list[Problem] = []
    for i, r in enumerate(df.to_dict(orient="records"), start=1):
        cid = _s(r.get("case_id"))
        for col in ("image_box", "video_box"):
            v, pic = r.get(col), col.split("_")[0]
            if _s(v) is None or not str(v).strip():
                continue
            try:
                parse_xywh(v)
            except CeusError as exc:
                out.append(Problem(i, cid, col, str(exc)))
            if _s(r.get(pic)) is None:
                out.append(Problem(i, cid, col, f"a box without a {pic} (column {pic} is empty)"))
        t = _s(r.get("video_box_time"))
        if t is not None and t.strip() and box_time(t) is None:
            out.append(Problem(i, cid, "video_box_time", f"must be seconds from the clip's start (a number >= 0), got {t!r}"))
        for col in ROI_SOURCE_COLUMNS:
            v = _s(r.get(col))
            if v is not None and v.strip() and v.strip() not in MASK_ORIGINS:
                out.append(Problem(i, cid, col, f"must be one of {', '.join(MASK_ORIGINS)}, got {v!r}"))
    return out


def _orphan_origins(df: pd.DataFrame) -> list[str]:
    """A mask origin without its mask (a segmentation that failed for that case): ignored, the ROI is the box or
    the whole frame, and prepare records which."""
    out = []
    for col in ROI_SOURCE_COLUMNS:
        mask = col.replace("roi_source", "mask")
        if col not in df.columns:
            continue
        given = df[col].notna() & (df[col].astype(str).str.strip() != "")
        orphans = df.loc[given & (df[mask].isna() if mask in df.columns else True), "case_id"].astype(str).tolist()
        if orphans:
            out.append(f"column {col!r} says how {mask} was made for {len(orphans)} case(s) with no {mask} "
                       f"({', '.join(orphans[:5])}{', ...' if len(orphans) > 5 else ''}): ignored, their ROI is their box or the whole frame")
    return out


def box_time(text) -> float | None:
    """video_box_time as seconds (>= 0, finite); None when it is not such a number."""
    try:
        t = float(str(text).strip())
    except ValueError:
        return None
    return t if np.isfinite(t) and t >= 0 else None


def _leakage(df: pd.DataFrame) -> list[Problem]:
    problems = []
    groups = groups_of(df)
    split = df["split"].astype(str).str.strip()
    both = sorted(set(groups[split == "train"]) & set(groups[split == "test"]))
    for g in both:
        cases = ", ".join(df.loc[groups == g, "case_id"].astype(str))
        problems.append(Problem(None, None, "group", f"group {g!r} is in both train and test (cases {cases}): patient-level leakage"))
    if "label" in df.columns:
        train_labels = set(df.loc[split == "train", "label"].astype(str).str.strip()) & {"0", "1", "0.0", "1.0"}
        classes = {int(float(v)) for v in train_labels}
        if (split == "train").any() and len(classes) < 2:
            problems.append(Problem(None, None, "label", f"the training split holds only one class ({sorted(classes)}); both 0 and 1 are needed"))
    return problems


def validate_files(df: pd.DataFrame, manifest: Path) -> list[Problem]:
    """Every referenced file exists, decodes, and every mask fits its image and is not empty."""
    problems: list[Problem] = []
    for i, row in enumerate(df.itertuples(index=False), start=1):
        r = row._asdict()
        cid = _s(r.get("case_id"))
        sizes: dict[str, tuple[int, ...]] = {}  # (H, W) per column; a video's also its frame count
        for col in FILE_COLUMNS:
            rel = r.get(col)
            if col not in df.columns or pd.isna(rel):
                continue
            path = resolve(manifest, str(rel))
            try:
                _check_one_file(col, path, sizes)
            except CeusError as exc:
                problems.append(Problem(i, cid, col, _relative_message(str(exc), path, rel)))
        for mask_col, img_col in (("image_mask", "image"), ("video_mask", "video")):
            if mask_col in sizes and img_col in sizes and tuple(sizes[mask_col]) != tuple(sizes[img_col][:2]):
                mh, mw = sizes[mask_col]
                ih, iw = sizes[img_col][:2]
                problems.append(Problem(i, cid, mask_col, f"{r[mask_col]}: mask is {mw}x{mh} px but the {img_col} is {iw}x{ih} px"))
        problems += [Problem(i, cid, col, msg) for col, msg in _boxes_in_files(r, sizes)]
    return problems


def _boxes_in_files(r: dict, sizes: dict[str, tuple]) -> list[tuple[str, str]]:
    """(column, problem) for a box outside its picture's frame, or a box time beyond the clip's last frame."""
    out = []
    for col in ("image_box", "video_box"):
        pic = sizes.get(col.split("_")[0])
        if _s(r.get(col)) is None or pic is None:
            continue
        try:
            xywh_box(parse_xywh(r[col]), pic[:2])
        except CeusError as exc:
            if "outside" in str(exc):  # a malformed box is validate_table's problem, said once
                out.append((col, str(exc)))
    t = box_time(r.get("video_box_time")) if _s(r.get("video_box_time")) is not None else None
    last = sizes.get("video_seconds")
    if t is not None and last is not None and t > last[0]:
        out.append(("video_box_time", f"{t:g} s is beyond the clip (its last frame is at {last[0]:g} s)"))
    return out


def _check_one_file(col: str, path: Path, sizes: dict[str, tuple[int, ...]]) -> None:
    """Read one file of a row, recording its size in ``sizes``; a mask is checked from its header against
    its picture (when that read) before it is decoded."""
    if col == "image":
        sizes[col] = read_image(path).shape[:2]
    elif col == "video":
        info = probe_video(path)
        sizes[col] = (info.height, info.width, info.n_frames or 0)
        if info.n_frames and info.fps:  # the last frame's time, as the decoder counts from the first frame
            sizes["video_seconds"] = ((info.n_frames - 1) / info.fps,)
        elif info.duration_s:
            sizes["video_seconds"] = (info.duration_s,)
    else:
        of = col.split("_")[0]
        pic = sizes.get(of)
        m = read_mask(path, pic[:2] if pic else None, of=of, frames=pic[2] if pic and len(pic) > 2 else None)
        sizes[col] = m.shape[-2:]
        if not m.any():
            raise CeusError(f"{path}: mask is empty (no foreground pixel)")


def _relative_message(msg: str, path: Path, rel: str) -> str:
    return msg.replace(str(path), str(rel), 1)


def _s(v) -> str | None:
    return None if pd.isna(v) else str(v)


def problems_frame(problems: list[Problem]) -> pd.DataFrame:
    return pd.DataFrame([asdict(p) for p in problems], columns=["row", "case_id", "column", "problem"])


# --------------------------------------------------------------------------- splits


NO_CENTER_CHOICES = ("train", "test")


def with_groups(df: pd.DataFrame, group: str | None = None, no_group: bool = False) -> pd.DataFrame:
    """A copy whose ``group`` column is the patient: column ``group`` (a patient key), or each row its own patient
    (``no_group``). Without either, a manifest with no ``group`` column and a column that looks like a patient key is
    refused: a split by case would put one patient's cases on both sides. ``attrs["grouping"]`` says which was used."""
    out = df.copy()
    n = len(out)
    if group is not None and no_group:
        raise CeusError("--group and --no-group exclude each other: name the patient column, or say each row is its own patient")
    if no_group:
        if "group" in out.columns:
            raise CeusError("--no-group: the manifest has a 'group' column; remove it, or split without --no-group to use it")
        out["group"] = out["case_id"]
        out.attrs["grouping"] = f"--no-group: each of the {n} cases is its own patient"
    elif group is not None:
        if group not in out.columns:
            raise CeusError(f"--group {group}: no such column (columns: {', '.join(map(str, out.columns))})")
        if group in RESERVED and group != "group":
            raise CeusError(f"--group {group}: {group!r} is a column of the schema ({ROLES[group][1]}), not a patient key")
        if group != "group" and "group" in out.columns:
            raise CeusError(f"--group {group}: the manifest already has a 'group' column; remove one of them")
        out["group"] = out[group].astype("string").str.strip().replace("", pd.NA).astype(object)
        alone = int(out["group"].isna().sum())
        out.attrs["grouping"] = (f"patients from column {group!r}: {groups_of(out).nunique()} patients for {n} cases"
                                 + (f" ({alone} case(s) without a value are each their own patient)" if alone else ""))
    else:
        keys = patient_keys(out)
        if keys:
            c = next(iter(keys))
            raise CeusError(f"column {c!r} looks like a patient key ({keys[c]}) and the manifest has no 'group' column: "
                            f"split with --group {c} to keep each patient's cases on one side, or --no-group if each row is its own patient")
        out.attrs["grouping"] = (f"patients from column 'group': {groups_of(out).nunique()} patients for {n} cases"
                                 if "group" in out.columns else f"no 'group' column: each of the {n} cases is its own patient")
    return out


def make_split(df: pd.DataFrame, test_fraction: float = 0.3, seed: int = 0, by_center: str | None = None,
               no_center: str | None = None, group: str | None = None, no_group: bool = False) -> pd.DataFrame:
    """Return a copy with a ``split`` column: grouped by patient, stratified by label.

    The patient is the ``group`` column, or the column named by ``group`` (copied to ``group`` in the result, so
    later stages keep the patients together), or each row with ``no_group``; a manifest without ``group`` whose
    column looks like a patient key needs one of the two (``with_groups``).

    ``by_center`` puts every case of that centre in test (external validation) and
    the other centres in training, so the ``center`` column must hold at least two;
    cases without a centre value are an error unless ``no_center`` ('train' or
    'test') says where they go, so none lands in training unnoticed. Otherwise
    whole groups are drawn so that each label keeps about the same share in
    train and test; a group counts as positive if any case is.
    """
    df = with_groups(df, group, no_group)
    if by_center is not None:
        return _centre_split(df, by_center, no_center)
    if no_center is not None:
        raise CeusError("--no-center applies only with --by-center")
    if not 0 < test_fraction < 1:
        raise CeusError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    out = df.copy()
    out["split"] = np.where(groups_of(out).isin(_stratified_test_groups(out, test_fraction, seed)), "test", "train")
    for side in ("train", "test"):
        if not (out["split"] == side).any():
            raise CeusError(f"--test-fraction {test_fraction} leaves the {side} set empty ({len(out)} case(s) in "
                            f"{groups_of(out).nunique()} patient group(s), split whole); choose another fraction")
    return out


def _centre_split(df: pd.DataFrame, by_center: str, no_center: str | None) -> pd.DataFrame:
    """Centre ``by_center`` in test, the other centres in train, the cases without one where asked."""
    if "center" not in df.columns:
        raise CeusError("--by-center needs a 'center' column in the manifest")
    if no_center is not None and no_center not in NO_CENTER_CHOICES:
        raise CeusError(f"--no-center must be 'train' or 'test', got {no_center!r}")
    out = df.copy()
    centre = out["center"].astype(str).str.strip().where(out["center"].notna() & (out["center"].astype(str).str.strip() != ""))
    centres = sorted(centre.dropna().unique())
    if len(centres) < 2:
        held = f"one centre ({centres[0]})" if centres else "no centre"
        raise CeusError(f"--by-center: column 'center' holds {held}; a centre split needs at least two centres: "
                        "one for test (--by-center), the other(s) for training")
    if by_center not in centres:
        raise CeusError(f"centre {by_center!r} not in the manifest (centres: {', '.join(centres)})")
    absent = centre.isna()
    if absent.any() and no_center is None:
        ids = out.loc[absent, "case_id"].astype(str).tolist()
        raise CeusError(f"{len(ids)} case(s) have no 'center' value ({', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''}): "
                        "fill it in, or say where they go with --no-center train|test")
    test = (centre == by_center) | (absent & (no_center == "test"))
    groups = groups_of(out)
    mixed = sorted(set(groups[test]) & set(groups[~test]))
    if mixed:
        raise CeusError(f"group(s) {', '.join(mixed[:5])} span centre {by_center!r} and another centre (or none)")
    out["split"] = np.where(test, "test", "train")
    return out


def _stratified_test_groups(df: pd.DataFrame, test_fraction: float, seed: int) -> set[str]:
    """Whole groups drawn per label class (seeded) until each class's test share reaches the fraction."""
    groups = groups_of(df)
    labels = pd.to_numeric(df["label"], errors="coerce")
    if labels.isna().any():
        raise CeusError("cannot split: some labels are missing or not numeric (run `ceusfusion validate`)")
    g_label = labels.groupby(groups).max().astype(int)
    g_size = groups.value_counts()
    rng = np.random.default_rng(seed)
    test_groups: set[str] = set()
    for lab in (0, 1):
        members = np.array(sorted(g_label.index[g_label == lab]))
        if len(members) == 0:
            continue
        members = members[rng.permutation(len(members))]
        target = test_fraction * g_size[members].sum()
        taken = 0
        for g in members:  # add whole groups until the case count reaches the target
            if taken + g_size[g] / 2 > target:
                break
            test_groups.add(g)
            taken += g_size[g]
    return test_groups
