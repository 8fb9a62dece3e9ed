"""Are two run directories the same study? Predictions, metrics and selection compared number by number.

Used to show that a change of where code lives did not change what it computes: run the demo on
the old and the new code with the same seed and ``--threads 1`` (one thread: no reduction-order
differences), then

    python bench/compare_runs.py RUN_A RUN_B [--tol 1e-6]

It prints the largest probability difference per predictions file, every metrics.json number that
differs by more than ``--tol``, and whether selection.json agrees; the exit status is 1 on any
difference beyond the tolerance.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd


def _numbers(obj, prefix=""):
    """Flatten a JSON document to {path: number or string}."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def compare_predictions(a: Path, b: Path, tol: float) -> list[str]:
    bad = []
    names_a = {p.name for p in (a / "predictions").glob("*.csv")}
    names_b = {p.name for p in (b / "predictions").glob("*.csv")}
    if names_a != names_b:
        bad.append(f"predictions files differ: {sorted(names_a ^ names_b)}")
    for name in sorted(names_a & names_b):
        pa = pd.read_csv(a / "predictions" / name, dtype={"case_id": str}).sort_values(["set", "case_id"]).reset_index(drop=True)
        pb = pd.read_csv(b / "predictions" / name, dtype={"case_id": str}).sort_values(["set", "case_id"]).reset_index(drop=True)
        if not pa[["case_id", "set", "y"]].equals(pb[["case_id", "set", "y"]]):
            bad.append(f"{name}: different cases, sets or labels")
            continue
        d = float((pa["prob"] - pb["prob"]).abs().max())
        print(f"{name}: {len(pa)} rows, max |prob difference| {d:.3g}")
        if d > tol:
            bad.append(f"{name}: probabilities differ by up to {d:.3g}")
    return bad


def compare_json(a: Path, b: Path, rel: str, tol: float) -> list[str]:
    ja, jb = (json.loads((r / rel).read_text()) for r in (a, b))
    na, nb = dict(_numbers(ja)), dict(_numbers(jb))
    bad = [f"{rel}: {k} only in one run" for k in sorted(set(na) ^ set(nb)) if not k.startswith("inputs")]
    for k in sorted(set(na) & set(nb)):
        if k.startswith("inputs"):
            continue  # the paths of the files read
        x, y = na[k], nb[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if not (math.isnan(x) and math.isnan(y)) and abs(x - y) > tol:
                bad.append(f"{rel}: {k} {x} vs {y}")
        elif x != y:
            bad.append(f"{rel}: {k} {x!r} vs {y!r}")
    print(f"{rel}: {len(set(na) & set(nb))} values compared")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args(argv)
    bad = compare_predictions(args.a, args.b, args.tol)
    bad += compare_json(args.a, args.b, "evaluation/metrics.json", args.tol)
    sa, sb = (json.loads((r / "selection.json").read_text())["best"] for r in (args.a, args.b))
    print(f"selection: {sa} vs {sb}")
    if sa != sb:
        bad.append(f"selection differs: {sa} vs {sb}")
    print("\n".join(bad) if bad else f"same study (tolerance {args.tol:g})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
