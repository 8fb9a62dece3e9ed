"""The prepared cache of a run directory (``RUN/prepared/``): its I/O and the check that trusts no stale case.

``prepare`` writes it; training, features and explain read it (through :class:`Prepared`). Paths come from
``core.runlayout.RunLayout``. Layout and array shapes: docs/contracts.md.

Why each case is checked: a prepare killed half-way with other parameters (``--margin 0.1`` over a
``--margin 0.5`` cache) leaves arrays of both runs beside the old ``index.csv`` and ``keyframes.json``.
Each case's record (inside its own ``.npz``, written atomically with the arrays) holds the parameters it
was made with and their fingerprint; the run-level record (``keyframes.json``, written last) holds the
run's. A reader refuses a case whose record disagrees, naming the case and the parameter.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import atomic_path, restore_frame, write_json
from ceusfusion.core.runlayout import RunLayout

INDEX_COLUMNS = ["case_id", "label", "split", "group", "center", "has_image", "has_video", "hash"]
RECORD_KEY = "prepare_record"  # inside each case's .npz: the JSON record of how its arrays were made
AGAIN = "run `ceusfusion prepare` again (it redoes only the stale cases)"


def case_path(run: str | Path, case_id: str) -> Path:
    return RunLayout(run).prepared_case(case_id)


def params_fingerprint(params: dict) -> str:
    """One short hash of the prepare parameters (everything that defines the arrays): equal → same arrays."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=_plain).encode()).hexdigest()[:16]


def case_entry(hash: str, params: dict, **entry) -> dict:
    """A case's record: its input hash, the parameters it was made with and their fingerprint, the rest."""
    return {"hash": hash, "params": params, "fingerprint": params_fingerprint(params), **entry}


def save_case(run: str | Path, case_id: str, record: dict | None = None, **arrays: np.ndarray) -> Path:
    """Write one case's arrays atomically (uncompressed: loading speed matters more than disk).

    ``record`` (the input hash, the parameters and their fingerprint, the keyframe entry) goes inside the
    same file, so the cache's record of a case can never describe arrays from another run.
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


def _parse_record(raw: np.ndarray | None) -> dict | None:
    try:
        rec = json.loads(str(raw)) if raw is not None and raw.ndim == 0 else None
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def read_case_file(run: str | Path, case_id: str) -> tuple[dict[str, np.ndarray], dict | None]:
    """One case's arrays and its record, unchecked (prepare and tests; a stage reads through :class:`Prepared`)."""
    path = case_path(run, case_id)
    if not path.is_file():
        raise CeusError(f"case {case_id}: no prepared arrays at {path} (run `ceusfusion prepare` first)")
    arrays = _open(path, case_id)
    return arrays, _parse_record(arrays.pop(RECORD_KEY, None))


def load_case(run: str | Path, case_id: str) -> dict[str, np.ndarray]:
    """The arrays of one prepared case, checked against the run's record (see :class:`Prepared`)."""
    return Prepared(run).load(case_id)


def case_record(run: str | Path, case_id: str) -> dict | None:
    """The record saved with a case's arrays; None when there is none or it cannot be read (then the
    case is prepared again, never trusted)."""
    path = case_path(run, case_id)
    if not path.is_file():
        return None
    try:
        return _parse_record(_open(path, case_id, keys={RECORD_KEY}).get(RECORD_KEY))
    except CeusError:
        return None


def read_index(run: str | Path) -> pd.DataFrame:
    """The table of successfully prepared cases (case_id, label, split, group, ...)."""
    path = RunLayout(run).prepared_index
    if not path.is_file():
        raise CeusError(f"{path} not found (run `ceusfusion prepare` first)")
    dtype = {"case_id": str, "group": str, "split": str, "center": str, "hash": str}
    return restore_frame(pd.read_csv(path, dtype=dtype))


# --------------------------------------------------------------------------- the run-level record


@dataclass(frozen=True)
class RunRecord:
    """``keyframes.json``: the parameters of the last complete prepare, their fingerprint, each case's entry."""

    version: int
    params: dict
    cases: dict

    @property
    def fingerprint(self) -> str:
        return params_fingerprint(self.params)


def write_run_record(run: str | Path, version: int, params: dict, cases: dict) -> None:
    """Written last by ``prepare``: it commits the run (every case's record then agrees with it)."""
    write_json(RunLayout(run).keyframes, {"version": version, "params": params,
                                          "fingerprint": params_fingerprint(params), "cases": cases})


def read_run_record(run: str | Path) -> RunRecord:
    path = RunLayout(run).keyframes
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CeusError(f"{path} not found: the prepare did not finish; {AGAIN}") from None
    except (OSError, ValueError) as exc:
        raise CeusError(f"{path}: not a readable prepare record ({str(exc).splitlines()[0][:120]}); {AGAIN}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not isinstance(raw.get("cases", {}), dict):
        raise CeusError(f"{path}: not a prepare record (no 'params'); {AGAIN}")
    return RunRecord(int(raw.get("version", 1)), raw["params"], raw.get("cases", {}))


def _differing(mine: dict, run: dict) -> str:
    """The parameters on which a case's record and the run's differ, as ``name=case's (run: run's)``."""
    keys = sorted(set(mine) | set(run), key=str)
    return ", ".join(f"{k}={mine.get(k)!r} (run: {run.get(k)!r})" for k in keys if mine.get(k) != run.get(k))


def check_case(case_id: str, record: dict | None, run: RunRecord, index_hash: str, where: Path) -> None:
    """Refuse a case whose record is missing, was made with other parameters than the run's record, or is
    not the one ``index.csv`` lists: the arrays of an interrupted prepare are never trained on."""
    if record is None:
        raise CaseError(case_id, str(where), f"has no record of how it was prepared (an older or interrupted prepare); {AGAIN}")
    params = record.get("params")
    if isinstance(params, dict) and record.get("fingerprint", params_fingerprint(params)) != run.fingerprint:
        raise CaseError(case_id, str(where), f"prepared with other parameters than the run's record keyframes.json: "
                        f"{_differing(params, run.params) or 'fingerprint'} (an interrupted prepare?); {AGAIN}")
    if str(record.get("hash")) != str(index_hash):
        raise CaseError(case_id, str(where), f"its arrays are not the ones index.csv lists (hash {record.get('hash')} "
                        f"against {index_hash}: an interrupted prepare?); {AGAIN}")


class Prepared:
    """``RUN/prepared/`` for a stage that reads arrays: the index and the run's record read once, every case
    checked (:func:`check_case`) as it is loaded."""

    def __init__(self, run: str | Path):
        self.layout = RunLayout(run)
        self.index = read_index(run)
        self.record = read_run_record(run)
        self._hash = dict(zip(self.index["case_id"].astype(str), self.index["hash"]))

    def load(self, case_id: str) -> dict[str, np.ndarray]:
        where = self.layout.prepared_case(case_id)
        if str(case_id) not in self._hash:
            raise CaseError(case_id, str(where), f"not listed in {self.layout.prepared_index}; {AGAIN}")
        arrays, record = read_case_file(self.layout.root, case_id)
        check_case(case_id, record, self.record, self._hash[str(case_id)], where)
        return arrays
