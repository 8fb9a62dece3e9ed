"""Atomic file writes, content hashes, and what a command may overwrite.

Every stage writes to a temporary name in the destination folder and renames
it when complete, so a later stage never reads a half-written file and an
interrupted run leaves the previous output intact.

A command never writes over a file it did not create (unless the user passes
``--force``), nor ever over its own input: before writing, it ``claim``s its
outputs, which checks them and adds them to ``.ceusfusion-files`` in the
output folder, the record of what ceusfusion created there (a folder's files are also the tool's when the
record of an enclosing folder, e.g. the run a ``study`` made, lists them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the usual permissions
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


# ----------------------------------------------------------------------------- spreadsheet formula injection

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may read as the start of a formula (OWASP)
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _needs_quote(v: str) -> bool:
    """True when ``v`` (quotes we added left aside) starts like a formula and is not a plain number ("-0.5")."""
    bare = v.lstrip("'")
    return bare.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(bare)


def neutralise_cell(v):
    """OWASP CSV-injection guard: a text cell starting with = + - @ tab or CR gets a leading ``'`` so that a
    spreadsheet shows it as text; numbers (and text that is a plain number) are left alone. A cell that already
    starts with quotes before such a character gets one more, so :func:`restore_cell` is its exact inverse."""
    return "'" + v if isinstance(v, str) and _needs_quote(v) else v


def restore_cell(v):
    """The value :func:`neutralise_cell` was given (the package's own CSV readers call this)."""
    return v[1:] if isinstance(v, str) and v.startswith("'") and _needs_quote(v) else v


def _text_columns(df: pd.DataFrame) -> list:
    return [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)]


def neutralise_frame(df):
    """A copy of ``df`` (DataFrame or Series) whose text cells, header and index pass :func:`neutralise_cell`."""
    if isinstance(df, pd.Series):
        df = df.to_frame()
    if not isinstance(df, pd.DataFrame):
        return df
    df = df.copy()
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype(object)
    for c in _text_columns(df):
        df[c] = df[c].map(neutralise_cell)
    if not isinstance(df.columns, pd.MultiIndex):
        df.columns = [neutralise_cell(c) for c in df.columns]
    if not isinstance(df.index, pd.MultiIndex) and df.index.dtype == object:
        df.index = df.index.map(neutralise_cell)
    return df


def restore_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`neutralise_frame` on a frame read back from a CSV the tool wrote (text cells and header)."""
    for c in _text_columns(df):
        col = df[c]
        if col.map(lambda v: isinstance(v, str) and v.startswith("'")).any():
            df[c] = col.map(restore_cell)
    if not isinstance(df.columns, pd.MultiIndex):
        df.columns = [restore_cell(c) for c in df.columns]
    return df


def write_csv(path: str | os.PathLike, df, **kwargs) -> None:
    """Write a pandas DataFrame atomically (no index unless asked), its text cells safe to open in a
    spreadsheet (:func:`neutralise_frame`; :func:`read_csv_exact` reads back the original values)."""
    kwargs.setdefault("index", False)
    df = neutralise_frame(df)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def savefig(fig, path: str | os.PathLike, **kwargs) -> None:
    """Save a matplotlib figure atomically; the format follows the suffix."""
    path = Path(path)
    kwargs.setdefault("bbox_inches", "tight")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", **kwargs)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(o: Any):
    try:

        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_csv_exact(path, **kwargs) -> pd.DataFrame:
    """Read a CSV with correctly rounded floats (pandas < 3 needs float_precision="round_trip"), text cells as
    :func:`write_csv` was given them (its formula-guard quote removed)."""
    if int(pd.__version__.split(".")[0]) < 3:
        kwargs.setdefault("float_precision", "round_trip")
    try:
        return restore_frame(pd.read_csv(path, **kwargs))
    except FileNotFoundError:
        raise CeusError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CeusError(f"{path}: cannot read as CSV ({str(exc).splitlines()[0]})") from None


# ----------------------------------------------------------------------------- what the tool may overwrite

RECORD = ".ceusfusion-files"  # in a folder the tool writes to: what it created there (relative paths, folders end in /)


def _relative(path: str | os.PathLike, root: str | os.PathLike) -> str | None:
    """``path`` relative to ``root`` (lexically, symlinks not followed), or None when it is outside."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return None if rel == ".." or rel.startswith(".." + os.sep) else Path(rel).as_posix()


def created_entries(root: str | os.PathLike) -> set[str]:
    """What this tool recorded creating under ``root``; an unreadable record counts as none."""
    try:
        entries = json.loads((Path(root) / RECORD).read_text(encoding="utf-8")).get("created", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {e for e in entries if isinstance(e, str)}


def _listed(path: str | os.PathLike, root: str | os.PathLike, entries: set[str] | None = None) -> bool:
    """True when the record of ``root`` (or ``entries`` read from it) lists ``path`` or a folder above it."""
    rel = _relative(path, root)
    if rel is None:
        return False
    entries = created_entries(root) if entries is None else entries
    parts = rel.split("/")
    return rel in entries or "./" in entries or any("/".join(parts[:k]) + "/" in entries for k in range(1, len(parts) + 1))


def was_created(path: str | os.PathLike, root: str | os.PathLike, entries: set[str] | None = None) -> bool:
    """True when the record of ``root`` (or ``entries`` read from it) lists ``path`` or a folder above it, or
    the record of a folder enclosing ``root`` does: ``evaluate --out RUN/evaluation`` on a folder that ``study``
    made (and recorded in RUN's record) is the tool's own. An enclosing record counts only when no symlink lies
    between its folder and ``path`` (a planted ``RUN/evaluation -> elsewhere`` is not the run's)."""
    if _listed(path, root, entries):
        return True
    for folder in Path(os.path.abspath(root)).parents:
        if (folder / RECORD).is_file() and symlink_below(path, folder) is None and _listed(path, folder):
            return True
    return False


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def inside_folder(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` (links resolved) is ``folder`` or lies beneath it, ``folder`` being a real folder."""
    if not os.path.isdir(folder):
        return False
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def symlink_below(path: str | os.PathLike, root: str | os.PathLike) -> Path | None:
    """The first symlink among ``path`` and its folders below ``root`` (root itself may be a link), or None:
    a planted ``RUN/evaluation -> elsewhere`` would carry every write out of the folder the record covers."""
    rel = _relative(path, root)
    if rel is None or rel == ".":
        return None
    p = Path(root)
    for part in rel.split("/"):
        p = p / part
        if p.is_symlink():
            return p
    return None


def check_not_input(path: str | os.PathLike, inputs=()) -> None:
    """Refuse ``path`` when it is one of ``inputs``, lies inside an input folder, or holds an input: never, even
    with ``--force``, does a command write over what it reads."""
    for src in inputs:
        if same_file(path, src) or inside_folder(path, src) or inside_folder(src, path):
            where = "is" if same_file(path, src) else "is inside" if inside_folder(path, src) else "holds"
            raise CeusError(f"{path}: {where} this command's input {src}; refusing to write over it (choose another --out)")


def check_writable(path: str | os.PathLike, root: str | os.PathLike, force: bool = False, inputs=(),
                   flag: str = "--force") -> None:
    """Refuse to write over a file the tool did not create under ``root`` (unless ``force``, the command's
    ``flag``), and over an input of the command (ever; an input folder, such as the model a command reads,
    protects everything beneath it): a careless ``--out`` must not destroy the user's data."""
    path = Path(path)
    check_not_input(path, inputs)
    link = symlink_below(path, root)
    if link is not None:
        raise CeusError(f"{link}: a symlink inside the output folder {root}; refusing to write through it "
                        "(its target may hold files ceusfusion did not write): replace it with a real folder")
    if force or not os.path.lexists(path) or was_created(path, root):
        return
    what = "folder holds files that" if path.is_dir() and not path.is_symlink() else "file"
    raise CeusError(f"{path}: this {what} ceusfusion did not write; refusing to overwrite "
                    f"(choose another output, or pass {flag} to replace it)")


def record_created(root: str | os.PathLike, files=(), folders=()) -> None:
    """Add ``files`` and ``folders`` (everything beneath them) to the record of ``root``."""
    rel_files, rel_folders = [_relative(p, root) for p in files], [_relative(p, root) for p in folders]
    if None in rel_files + rel_folders:
        raise CeusError(f"cannot record a path outside {root}")
    new = set(rel_files) | {"./" if d == "." else f"{d}/" for d in rel_folders}
    entries = created_entries(root)
    if new <= entries:
        return
    write_json(Path(root) / RECORD, {"note": "written by ceusfusion, which overwrites only what is listed here",
                                     "created": sorted(entries | new)})


def claim(root: str | os.PathLike, files=(), folders=(), force: bool = False, inputs=(), flag: str = "--force") -> None:
    """Check that the tool may write ``files`` and fill ``folders`` under ``root``, then record them, before
    writing anything: so a run killed half-way is still recognised as the tool's own on the rerun."""
    for f in files:
        check_writable(f, root, force, inputs, flag)
    for d in folders:
        d = Path(d)
        if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
            continue
        check_writable(d, root, force, inputs, flag)
    Path(root).mkdir(parents=True, exist_ok=True)
    record_created(root, files, folders)


def foreign_entries(root: str | os.PathLike) -> list[str]:
    """The names directly under ``root`` that the tool did not create (the record itself excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    entries = created_entries(root)
    return sorted(p.name for p in root.iterdir() if p.name != RECORD and not was_created(p, root, entries))


def remove_stale_temps(folder: str | os.PathLike, name: str = "*") -> int:
    """Delete the temporary files :func:`atomic_path` leaves for ``name`` (a glob) when a run is killed
    mid-write; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.glob(f".{name}.*.tmp*") if p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)
