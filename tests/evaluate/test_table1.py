"""Table 1 (issue 15 item 6): Fisher's exact test for sparse r x c tables as R computes it, a seeded
Monte Carlo only when too large, and missing values counted instead of dropped silently."""

from __future__ import annotations

import importlib
import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ceusfusion.cli import main
from ceusfusion.core.errors import CeusError
from ceusfusion.stats import table1
from ceusfusion.stats.table1 import (
    analysed_and_excluded,
    categorical_test,
    fisher_exact_rxc,
    fisher_test,
)

t1 = importlib.import_module("ceusfusion.stats.table1")  # the module: `ceusfusion.stats.table1` is also the function
REFERENCE = json.loads((Path(__file__).parent / "data" / "fisher_rxc_reference.json").read_text())
LOCATION = np.array(REFERENCE["tables"]["t4x2_loc"]["table"])  # 4 levels x 2 classes, expected counts down to 0.56


@pytest.mark.parametrize("name", sorted(REFERENCE["tables"]))
def test_fisher_rxc_agrees_with_r(name):
    """R's fisher.test p-values (R script and version in the JSON), to 1e-6, in either orientation."""
    ref = REFERENCE["tables"][name]
    table = np.array(ref["table"])
    assert fisher_exact_rxc(table) == pytest.approx(ref["p"], abs=1e-6)
    assert fisher_exact_rxc(table.T) == pytest.approx(ref["p"], abs=1e-6)


def _brute_force_p(table: np.ndarray) -> Fraction:
    """Every table with the observed margins, in exact rational arithmetic; ties count (R's rule)."""
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    n = int(table.sum())

    def prob(t):
        num = math.prod(math.factorial(int(v)) for v in (*rows, *cols))
        return Fraction(num, math.factorial(n) * math.prod(math.factorial(int(v)) for v in t.ravel()))

    p_obs, total = prob(table), Fraction(0)
    free = [range(min(int(rows[i]), int(cols[j])) + 1) for i in range(len(rows) - 1) for j in range(len(cols) - 1)]
    for cells in itertools.product(*free):
        t = np.zeros_like(table)
        t[:-1, :-1] = np.reshape(cells, (len(rows) - 1, len(cols) - 1))
        t[:-1, -1] = rows[:-1] - t[:-1, :-1].sum(axis=1)
        t[-1, :] = cols - t[:-1, :].sum(axis=0)
        if (t >= 0).all():
            p = prob(t)
            total += p if p <= p_obs else 0
    return total


def test_fisher_rxc_agrees_with_brute_force_enumeration():
    rng = np.random.default_rng(5)
    for shape in [(3, 2), (2, 3), (3, 3), (4, 2), (2, 4), (3, 3)]:
        table = rng.integers(0, 4, size=shape)
        table[0, 0] += 1  # no all-zero table
        assert fisher_exact_rxc(table) == pytest.approx(float(_brute_force_p(table)), abs=1e-12), table


def test_scipy_default_rxc_is_a_monte_carlo_not_this_exact_test():
    """Why the code has its own exact test: scipy's r x c Fisher draws random tables (unseeded)."""
    p_scipy = {float(sps.fisher_exact(LOCATION).pvalue) for _ in range(4)}
    assert len(p_scipy) > 1  # changes from call to call
    assert fisher_exact_rxc(LOCATION) == pytest.approx(REFERENCE["tables"]["t4x2_loc"]["p"], abs=1e-12)


def _location_cohort(table=LOCATION) -> pd.DataFrame:
    """Training cases whose location x label table is ``table``, and a plain test set."""
    rows = [(f"L{i}", k) for i, counts in enumerate(table) for k in (0, 1) for _ in range(int(counts[k]))]
    df = pd.DataFrame(rows, columns=["location", "label"]).assign(split="train")
    test = pd.DataFrame({"location": ["L0", "L1"] * 10, "label": [0] * 10 + [1] * 10, "split": "test"})
    df = pd.concat([df, test], ignore_index=True)
    return df.assign(case_id=[f"c{i}" for i in range(len(df))])


def test_sparse_rxc_variable_gets_fishers_exact_not_chi_square():
    df = _location_cohort()
    assert sps.contingency.expected_freq(LOCATION).min() < 1
    t = table1(df, columns=["location"])
    assert t.attrs["tests"]["location / train"] == "Fisher's exact (r×c)"
    p = t.loc[t.Characteristic == "location", "Training set P value"].item()
    assert p == f"{REFERENCE['tables']['t4x2_loc']['p']:.3f}" == "0.010"
    assert p != f"{sps.chi2_contingency(LOCATION).pvalue:.3f}"  # the old chi-square: 0.008
    assert t.attrs["tests"]["location / test"] == "chi-square"  # 2 levels, expected counts 5 and up


def test_too_large_table_falls_back_to_a_seeded_monte_carlo(monkeypatch):
    exact = REFERENCE["tables"]["t4x2_loc"]["p"]
    name, p = fisher_test(LOCATION, seed=3, max_work=10)
    assert name == f"Fisher's exact (Monte Carlo, B={t1.MC_RESAMPLES}, seed 3)"
    assert fisher_test(LOCATION, seed=3, max_work=10) == (name, p)  # reproducible
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / t1.MC_RESAMPLES) + 1e-4
    with pytest.raises(t1.TableTooLarge):
        fisher_exact_rxc(LOCATION, max_work=10)
    monkeypatch.setattr(t1, "MAX_WORK", 10)  # and Table 1 records which test it used
    t = table1(_location_cohort(), columns=["location"], seed=3)
    assert t.attrs["tests"]["location / train"] == name


def test_categorical_test_keeps_2x2_and_chi_square_choices():
    assert categorical_test(np.array([[6, 2], [1, 4]]))[0] == "Fisher's exact"
    assert categorical_test(np.array([[30, 20], [25, 28]]))[0] == "chi-square"
    assert categorical_test(np.array([[30, 20], [25, 28], [10, 12]]))[0] == "chi-square"
    assert categorical_test(np.array([[3, 0], [2, 0]]))[0] == "none"


def test_missing_values_are_counted_per_class_and_tests_use_the_rest():
    rng = np.random.default_rng(0)
    n = 80
    df = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "label": np.arange(n) % 2,
                       "split": ["train"] * 60 + ["test"] * 20, "age": rng.normal(50, 8, n).round(),
                       "sex": rng.choice(["F", "M"], n)})
    df.loc[[0, 2, 3, 61], "age"] = np.nan  # train: two negatives, one positive; test: one positive
    df.loc[[5], "sex"] = np.nan
    t = table1(df, columns=["age", "sex"], class_names=("OLNM-", "OLNM+"))
    chars = t.Characteristic.tolist()
    assert chars == ["age", "  Missing", "sex", "  F", "  M", "  Missing"]
    age_missing = t.iloc[1].tolist()
    assert age_missing == ["  Missing", "2", "1", "", "0", "1", ""]
    assert t.iloc[5].tolist()[1:4] == ["0", "1", ""]
    assert t.attrs["missing"] == {"age": {"train": {"OLNM-": 2, "OLNM+": 1}, "test": {"OLNM-": 0, "OLNM+": 1}},
                                  "sex": {"train": {"OLNM-": 0, "OLNM+": 1}, "test": {"OLNM-": 0, "OLNM+": 0}}}
    assert "non-missing" in t.attrs["note"]
    tr = df[df.split == "train"].dropna(subset=["age"])
    a, b = (tr.loc[tr.label == k, "age"].to_numpy() for k in (0, 1))
    test_name = t.attrs["tests"]["age / train"]
    p = sps.ttest_ind(a, b).pvalue if test_name == "t-test" else sps.mannwhitneyu(a, b).pvalue
    assert t.iloc[0, 3] == f"{p:.3f}"
    # level percentages are of the class's non-missing cases: 29 positives have a sex
    k = int(((df.split == "train") & (df.label == 1) & (df.sex == "F")).sum())
    assert t.iloc[3, 2] == f"{k} ({100 * k / 29:.2f})"


def test_no_missing_row_without_missing_values():
    t = table1(_location_cohort(), columns=["location"])
    assert "  Missing" not in t.Characteristic.tolist() and t.attrs["missing"] == {}


def test_analysed_and_excluded():
    df = _location_cohort()
    used, left = analysed_and_excluded(df, ["c0", "c1", "c5"])
    assert used.case_id.tolist() == ["c0", "c1", "c5"] and len(left) == len(df) - 3
    with pytest.raises(CeusError, match="1 analysed case.*not in the cohort: nope"):
        analysed_and_excluded(df, ["c0", "nope"])


def test_cli_table1_writes_the_tests_used(tmp_path):
    _location_cohort().to_csv(tmp_path / "cohort.csv", index=False)
    with pytest.raises(SystemExit) as e:
        main(["table1", str(tmp_path / "cohort.csv"), "--out", str(tmp_path / "t1.csv"), "--seed", "2"])
    assert e.value.code in (0, None)
    side = json.loads((tmp_path / "t1.tests.json").read_text())
    assert side["tests"]["location / train"] == "Fisher's exact (r×c)" and side["missing"] == {}
