"""Issue 25: a cohort value that a spreadsheet would run as a formula is written as text (OWASP), and the
package's own readers get the original value back."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
from cli_run import exit_code
from ingest_fixtures import write_png

from ceusfusion.core.fsutil import read_csv_exact, write_csv
from ceusfusion.ingest.cache import read_index
from ceusfusion.ingest.cohort import read_manifest

EVIL = "=cmd|' /C calc'!A0"
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def _cells(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [c for row in csv.reader(f) for c in row]


def _safe(path) -> None:
    bad = [c for c in _cells(path) if c.startswith(DANGEROUS) and not _number(c)]
    assert not bad, (path, bad)


def _number(c: str) -> bool:
    try:
        float(c)
        return True
    except ValueError:
        return False


def test_write_csv_neutralises_text_and_read_csv_exact_restores_it(tmp_path):
    values = [EVIL, "+1+1", "-2+3", "@SUM(A1)", "\tx", "'=already quoted", "''@two", "plain", "'plain", None]
    df = pd.DataFrame({"t": values, "n": [-1.5] * len(values), "neg_text": ["-0.5"] * len(values),
                       "=evil header": range(len(values))})
    write_csv(tmp_path / "a.csv", df)
    _safe(tmp_path / "a.csv")
    back = read_csv_exact(tmp_path / "a.csv")
    assert list(back.columns) == list(df.columns)
    assert back["t"].tolist()[:-1] == values[:-1] and pd.isna(back["t"].iloc[-1])
    assert back["n"].dtype == float and (back["n"] == -1.5).all()  # numbers stay numbers
    assert (back["neg_text"] == -0.5).all()  # a plain number cannot run a formula: left as it is


def test_prepare_cohort_and_index_and_evaluate_subgroups_are_safe(tmp_path):
    img = np.zeros((24, 24), np.uint8)
    img[6:18, 6:18] = 200
    write_png(tmp_path / "a.png", img)
    n = 8
    ids = [f"c{i}" for i in range(n)]  # case ids are checked filesystem-safe: no leading = or -
    centres = [EVIL if i % 2 else "@home" for i in range(n)]
    cohort = tmp_path / "cohort.csv"
    pd.DataFrame({"case_id": ids, "label": [i % 2 for i in range(n)], "image": ["a.png"] * n,
                  "center": centres, "split": ["train"] * 6 + ["test"] * 2}).to_csv(cohort, index=False)
    run = tmp_path / "run"
    assert exit_code(["prepare", str(cohort), "--out", str(run), "--size", "16"]) == 0
    for path in (run / "cohort.csv", run / "prepared" / "index.csv"):
        _safe(path)
    m = read_manifest(run / "cohort.csv")
    assert m["case_id"].tolist() == ids and m["center"].tolist() == centres
    idx = read_index(run)
    assert sorted(idx["case_id"]) == sorted(ids) and set(idx["center"]) == set(centres)

    pred = tmp_path / "m.csv"
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    cids = ids + [f"x{i}" for i in range(40 - n)]
    pd.DataFrame({"case_id": cids, "set": ["train"] * 30 + ["test"] * 10, "fold": 0, "y": y,
                  "prob": np.clip(0.3 * y + rng.uniform(0, 0.7, 40), 0, 1)}).to_csv(pred, index=False)
    big = pd.DataFrame({"case_id": cids, "label": y, "center": [EVIL if i % 2 else "@home" for i in range(40)]})
    big.to_csv(tmp_path / "big.csv", index=False)
    out = tmp_path / "ev"
    assert exit_code(["evaluate", str(pred), "--out", str(out), "--cohort", str(tmp_path / "big.csv"),
                      "--no-figures", "--no-nomogram"]) == 0
    assert (out / "subgroups.csv").is_file()
    assert any(EVIL in c for c in _cells(out / "subgroups.csv"))
    for path in out.glob("*.csv"):
        _safe(path)
    sub = read_csv_exact(out / "subgroups.csv")
    assert EVIL in set(sub.astype(str).values.ravel())
