"""Input checks shared by the statistics: fail loudly, naming the rows.

A statistic computed on a NaN or on a single class is a plausible-looking
wrong number; these checks turn such inputs into one clear CeusError.
"""

from __future__ import annotations

import numpy as np

from ceusfusion.core.errors import CeusError


def _rows(idx: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"{shown}{more}"


def as_outcome(y, name: str = "y") -> np.ndarray:
    """Return y as an int8 array of 0/1; CeusError naming rows that are missing or not 0/1."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise CeusError(f"{name} must be one-dimensional, got shape {arr.shape}")
    try:
        f = arr.astype(float)
    except (TypeError, ValueError):
        raise CeusError(f"{name} must be numeric 0/1") from None
    bad = np.flatnonzero(np.isnan(f))
    if bad.size:
        raise CeusError(f"missing values in {name} at rows (0-based) {_rows(bad)}")
    bad = np.flatnonzero((f != 0) & (f != 1))
    if bad.size:
        raise CeusError(f"{name} must be 0 or 1; rows (0-based) {_rows(bad)} are not")
    return f.astype(np.int8)


def as_score(score, n: int, name: str = "score") -> np.ndarray:
    """Return a score as float64 of length n; CeusError naming missing or infinite rows."""
    try:
        arr = np.asarray(score, dtype=float)
    except (TypeError, ValueError):
        raise CeusError(f"{name} must be numeric") from None
    if arr.ndim != 1 or arr.shape[0] != n:
        raise CeusError(f"{name} has shape {arr.shape}; expected ({n},) like y")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise CeusError(f"missing or non-finite values in {name} at rows (0-based) {_rows(bad)}")
    return arr


def check_binary(y, *scores, names: tuple[str, ...] | None = None, both_classes: bool = True):
    """Validate y and the scores together; returns (y, [scores])."""
    yy = as_outcome(y)
    names = names or tuple(f"score{i + 1}" if len(scores) > 1 else "score" for i in range(len(scores)))
    ss = [as_score(s, len(yy), nm) for s, nm in zip(scores, names)]
    if both_classes:
        n1 = int(yy.sum())
        if n1 == 0 or n1 == len(yy):
            which = "no positive cases (all y = 0)" if n1 == 0 else "no negative cases (all y = 1)"
            raise CeusError(f"only one class present: {which} among {len(yy)} rows; ROC/AUC need both classes")
    return yy, ss
