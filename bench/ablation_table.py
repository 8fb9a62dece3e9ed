"""One table of out-of-fold AUCs (DeLong 95% CI) and paired DeLong tests across separate benchmark runs.

    python bench/ablation_table.py LABEL=PREDICTIONS.csv ... --pair A:B ... [--out DIR] [--title TEXT]

Why: each ``bench/real_ddti.py`` run compares only the models it trained; an ablation (one recipe
change per run, on the same cases and folds) needs the paired test between runs. The predictions files
must score the same cases (DeLong pairs them by case); ``ceusfusion.evaluate`` refuses them otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="LABEL=predictions.csv (the predictions contract)")
    ap.add_argument("--pair", action="append", default=[], help="A:B, a paired DeLong test of A - B")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ablation_table"))
    ap.add_argument("--title", default="ablation")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    a = parse(argv)
    files = {}
    for item in a.models:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            sys.exit(f"{item}: expected LABEL=an existing predictions file")
        files[label] = Path(path)
    pairs = []
    for p in a.pair:
        x, sep, y = p.partition(":")
        if not sep or x not in files or y not in files:
            sys.exit(f"--pair {p}: expected A:B, two of the labels {', '.join(files)}")
        pairs.append((x, y))
    C.evaluate_table(files, a.out, pairs, a.title)


if __name__ == "__main__":
    main()
