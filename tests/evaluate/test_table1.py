"""Table 1 (issue 15 item 6): Fisher's exact test for sparse r x c tables as R computes it, a seeded
Monte Carlo only when too large, and missing values counted instead of dropped silently.

Issue 23 item 7: continuous variables by a pre-specified rule (no Shapiro pre-test), the Wilcoxon
rank-sum test exact where R's ``wilcox.test`` is, and the summary and test of every row named.
R is not installed here: the references are R's published outputs, each cited where it is used
(the examples of R's help pages ``?wilcox.test``, ``?t.test``, ``?chisq.test`` and their
well-known outputs), and exact enumerations computed in this file.
"""

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
    WELCH,
    WILCOXON_EXACT,
    WILCOXON_NORMAL,
    analysed_and_excluded,
    categorical_test,
    fisher_exact_rxc,
    fisher_test,
    welch_t_test,
    wilcoxon_rank_sum,
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
    assert t.attrs["tests"]["location / test"] == "chi-squared, Yates-corrected"  # 2x2, expected counts 5 and up


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
    assert categorical_test(np.array([[30, 20], [25, 28]]))[0] == "chi-squared, Yates-corrected"
    assert categorical_test(np.array([[30, 20], [25, 28], [10, 12]]))[0] == "chi-squared"
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
    assert t.Summary.tolist() == ["median [IQR]", "n", "n (%)", "n (%)", "n (%)", "n"]
    age_missing = t.iloc[1].tolist()
    assert age_missing == ["  Missing", "n", "2", "1", "", "", "0", "1", "", ""]
    assert t.iloc[5].tolist()[2:6] == ["0", "1", "", ""]
    assert t.attrs["missing"] == {"age": {"train": {"OLNM-": 2, "OLNM+": 1}, "test": {"OLNM-": 0, "OLNM+": 1}},
                                  "sex": {"train": {"OLNM-": 0, "OLNM+": 1}, "test": {"OLNM-": 0, "OLNM+": 0}}}
    assert "non-missing" in t.attrs["note"]
    tr = df[df.split == "train"].dropna(subset=["age"])
    a, b = (tr.loc[tr.label == k, "age"].to_numpy() for k in (0, 1))
    assert t.attrs["tests"]["age / train"] == t.iloc[0]["Training set Test"] == WILCOXON_NORMAL  # rounded ages tie
    p = sps.mannwhitneyu(a, b, method="asymptotic", use_continuity=True).pvalue
    assert t.iloc[0]["Training set P value"] == f"{p:.3f}"
    # level percentages are of the class's non-missing cases: 29 positives have a sex
    k = int(((df.split == "train") & (df.label == 1) & (df.sex == "F")).sum())
    assert t.iloc[3, 3] == f"{k} ({100 * k / 29:.2f})"


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


# --------------------------------------------------------------------------- continuous variables (issue 23 item 7)

# ?wilcox.test, two-sample example (Hollander & Wolfe 1973, p. 69): permeability at term (x) and at 12-26 weeks (y)
HW_X = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46]
HW_Y = [1.15, 0.88, 0.90, 0.74, 1.21]
# R's `sleep` data (Cushny & Peebles): extra hours of sleep, drug 1 and drug 2 (ties: 0.8, -0.1, 3.4)
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
# R's `airquality`: Ozone (ppb) of May and of August 1973, NAs dropped (26 days each, many ties)
OZONE_MAY = [41, 36, 12, 18, 28, 23, 19, 8, 7, 16, 11, 14, 18, 14, 34, 6, 30, 11, 1, 11, 4, 32, 23, 45, 115, 37]
OZONE_AUG = [39, 9, 16, 78, 35, 66, 122, 89, 110, 44, 28, 65, 22, 59, 23, 31, 44, 21, 9, 45, 168, 73, 76, 118, 84, 85]


def test_wilcoxon_agrees_with_r_published_outputs():
    # wilcox.test(x, y, alternative = "g") -> "Wilcoxon rank sum exact test", W = 35, p-value = 0.1272 (?wilcox.test)
    greater = sps.mannwhitneyu(HW_X, HW_Y, alternative="greater", method="exact")
    assert greater.statistic == 35 and greater.pvalue == pytest.approx(0.1272, abs=5e-5)
    # the two-sided test doubles the smaller tail: 2 x 0.12721 = 0.2544
    name, p = wilcoxon_rank_sum(HW_X, HW_Y)
    assert name == WILCOXON_EXACT and p == pytest.approx(2 * greater.pvalue, rel=1e-12)
    assert p == pytest.approx(0.2544, abs=5e-5)
    # wilcox.test(Ozone ~ Month, data = airquality, subset = Month %in% c(5, 8)) (?wilcox.test):
    # "cannot compute exact p-value with ties"; "Wilcoxon rank sum test with continuity correction",
    # W = 127.5, p-value = 0.0001208
    name, p = wilcoxon_rank_sum(OZONE_MAY, OZONE_AUG)
    assert name == WILCOXON_NORMAL and p == pytest.approx(0.0001208, abs=5e-8)
    # wilcox.test(extra ~ group, data = sleep): with continuity correction, W = 25.5, p-value = 0.06933
    name, p = wilcoxon_rank_sum(SLEEP_1, SLEEP_2)
    assert name == WILCOXON_NORMAL and p == pytest.approx(0.06933, abs=5e-6)


def test_welch_and_chi_squared_agree_with_r_published_outputs():
    # t.test(extra ~ group, data = sleep): Welch Two Sample t-test, t = -1.8608, df = 17.776, p-value = 0.07939
    name, p = welch_t_test(SLEEP_1, SLEEP_2)
    assert name == WELCH == "Welch's t-test" and p == pytest.approx(0.07939, abs=5e-6)
    # ?chisq.test (Agresti 2007, p. 39): chisq.test(M), X-squared = 30.07, df = 2, p-value = 2.954e-07
    name, p = categorical_test(np.array([[762, 327, 468], [484, 239, 477]]).T)  # levels x classes
    assert name == "chi-squared" and p == pytest.approx(2.954e-07, rel=5e-4)
    # 2x2: Yates' correction as R's chisq.test, sum((|O - E| - 0.5)^2 / E) on 1 df, by hand
    obs = np.array([[30, 20], [25, 28]])
    exp = obs.sum(axis=1, keepdims=True) * obs.sum(axis=0) / obs.sum()
    name, p = categorical_test(obs)
    assert name == "chi-squared, Yates-corrected"
    assert p == pytest.approx(sps.chi2.sf((((abs(obs - exp) - 0.5) ** 2) / exp).sum(), 1), rel=1e-12)


def _rank_sum_counts(m: int, n: int) -> list[int]:
    """Number of the C(m+n, m) rankings with each Mann-Whitney U = 0..mn (R's cwilcox), by recursion:
    the largest value is an x (it beats all n y's) or a y."""
    rows = {(0, j): [1] for j in range(n + 1)}
    for i in range(1, m + 1):
        rows[i, 0] = [1]
        for j in range(1, n + 1):
            a, b = rows[i - 1, j], rows[i, j - 1]
            out = [0] * (i * j + 1)
            for u, c in enumerate(a):
                out[u + j] += c
            for u, c in enumerate(b):
                out[u] += c
            rows[i, j] = out
    return rows[m, n]


def _r_exact_p(m: int, n: int, u: int) -> Fraction:
    """R's wilcox.test two-sided exact p: the tail on W's side of mn/2 (pwilcox), doubled, capped at 1."""
    c = _rank_sum_counts(m, n)
    tail = sum(c[u:]) if u > m * n / 2 else sum(c[: u + 1])
    return min(Fraction(1), Fraction(2 * tail, math.comb(m + n, m)))


def _samples_with_u(m: int, n: int, u: int) -> tuple[list[float], list[float]]:
    """Untied x (m) and y (n) whose Mann-Whitney U of x is u: x_i beats the y's below it."""
    beats = [min(n, max(0, u - n * (m - 1 - i))) for i in range(m)]  # fill the top x's first
    beats[-1] += u - sum(beats)
    x = [b + 0.5 + i / (2 * m) for i, b in enumerate(sorted(beats))]
    return x, [float(j + 1) for j in range(n)]


def test_exact_two_sided_p_is_rs_rule_for_every_statistic():
    """Every U of a few sample sizes: the p equals R's (smaller tail doubled, capped at 1), in exact arithmetic."""
    for m, n in ((1, 1), (3, 4), (4, 5), (5, 5), (7, 3)):
        for u in range(m * n + 1):
            x, y = _samples_with_u(m, n, u)
            assert sps.mannwhitneyu(x, y).statistic == u
            name, p = wilcoxon_rank_sum(x, y)
            assert name == WILCOXON_EXACT and p == pytest.approx(float(_r_exact_p(m, n, u)), abs=1e-14), (m, n, u)
    brute = [0] * 21  # the counts themselves, by enumerating every ranking of 4 x's among 9
    for ranks in itertools.combinations(range(1, 10), 4):
        brute[sum(ranks) - 10] += 1
    assert brute == _rank_sum_counts(4, 5)


def test_the_issue_case_exact_not_normal_approximation():
    """Issue 23 item 7: 'p 0.00229 vs 0.00142'. 12 vs 15 untied values with U = 27 give exactly these:
    R's exact p 0.0014213 (the old code's normal approximation: 0.0022908)."""
    x, y = _samples_with_u(12, 15, 27)
    exact = float(_r_exact_p(12, 15, 27))
    assert exact == pytest.approx(0.0014213, abs=5e-8)
    old = sps.mannwhitneyu(x, y, method="asymptotic").pvalue
    assert old == pytest.approx(0.0022908, abs=5e-8)
    assert wilcoxon_rank_sum(x, y) == (WILCOXON_EXACT, pytest.approx(exact, abs=1e-14))
    df = pd.DataFrame({"size": x + y, "label": [0] * 12 + [1] * 15, "split": "test"})
    t = table1(df, columns=["size"])
    assert t.iloc[0]["Test set P value"] == "0.001" and t.iloc[0]["Test set Test"] == WILCOXON_EXACT


def test_normal_approximation_from_50_values_and_with_ties():
    """R: exact only when n.x < 50 and n.y < 50 and nothing is tied; else z with continuity correction
    and the tie-corrected variance (formula of wilcox.test.default, computed here by hand)."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 50), rng.normal(0.5, 1, 12)
    name, p = wilcoxon_rank_sum(a, b)
    u = sps.mannwhitneyu(a, b).statistic
    z = (u - 50 * 12 / 2 - np.sign(u - 300) * 0.5) / math.sqrt(50 * 12 * 63 / 12)
    assert name == WILCOXON_NORMAL and p == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-12)
    assert wilcoxon_rank_sum(a[:49], b)[0] == WILCOXON_EXACT
    tied_a, tied_b = [1.0, 2.0, 2.0, 3.0], [2.0, 4.0, 5.0]
    ranks = sps.rankdata(tied_a + tied_b)
    u = ranks[:4].sum() - 10
    sigma = math.sqrt(4 * 3 / 12 * (8 - (27 - 3) / (7 * 6)))  # one triple tie: t^3 - t = 24
    z = (u - 6 - np.sign(u - 6) * 0.5) / sigma
    name, p = wilcoxon_rank_sum(tied_a, tied_b)
    assert name == WILCOXON_NORMAL and p == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-12)
    assert math.isnan(wilcoxon_rank_sum([1.0, 1.0], [1.0])[1])  # all tied: R's p is NaN


def _normal_cohort(n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    label = np.arange(n) % 2
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "label": label,
                         "split": np.where(np.arange(n) < 3 * n // 4, "train", "test"),
                         "age": rng.normal(45 + 3 * label, 8).round(1), "size": rng.lognormal(2 + 0.4 * label, 0.8),
                         "sex": rng.choice(["F", "M"], n)})


def test_no_normality_pre_test_rule_is_fixed_and_every_row_names_its_summary_and_test():
    df = _normal_cohort()
    tr = df[df.split == "train"]
    assert all(sps.shapiro(tr.loc[tr.label == k, "age"]).pvalue >= 0.05 for k in (0, 1))  # the old rule: t-test
    t = table1(df, columns=["age", "size", "sex"])
    n0, n1 = int((tr.label == 0).sum()), int((tr.label == 1).sum())
    assert list(t.columns) == ["Characteristic", "Summary",
                               f"Training set negative (n={n0})", f"Training set positive (n={n1})",
                               "Training set P value", "Training set Test",
                               f"Test set negative (n={10})", f"Test set positive (n={10})", "Test set P value", "Test set Test"]
    age = t.iloc[0]
    assert age.Summary == "median [IQR]" and "[" in age[f"Training set negative (n={n0})"]
    assert age["Training set Test"] == WILCOXON_NORMAL  # 30 per class, but rounded ages tie
    assert t.iloc[1]["Training set Test"] == t.iloc[1]["Test set Test"] == WILCOXON_EXACT  # size: untied, < 50
    assert t.iloc[2].Summary == "n (%)" and t.iloc[2]["Training set Test"] == "chi-squared, Yates-corrected"
    assert t.attrs["summaries"] == {"age": "median [IQR]", "size": "median [IQR]", "sex": "n (%)"}
    assert t.attrs["tests"]["size / test"] == WILCOXON_EXACT and "no normality pre-test" in t.attrs["note"]
    # pre-specified mean ± SD: Welch's t-test, R's t.test default
    t = table1(df, columns=["age", "size"], mean_sd=["age"])
    a, b = (tr.loc[tr.label == k, "age"] for k in (0, 1))
    assert t.iloc[0].Summary == "mean ± SD" and t.iloc[0]["Training set Test"] == WELCH
    assert t.iloc[0][f"Training set negative (n={n0})"] == f"{a.mean():.2f} ± {a.std():.2f}"
    assert t.iloc[0]["Training set P value"] == f"{sps.ttest_ind(a, b, equal_var=False).pvalue:.3f}"
    with pytest.raises(CeusError, match=r"mean ± SD asked for categorical columns.*\['sex'\]"):
        table1(df, columns=["age", "sex"], mean_sd=["sex"])
    with pytest.raises(CeusError, match=r"mean ± SD asked for columns not in the table: \['weight'\]"):
        table1(df, columns=["age"], mean_sd=["weight"])


def test_a_class_without_values_gets_no_test():
    df = _normal_cohort(20)
    df.loc[(df.split == "test") & (df.label == 1), "size"] = np.nan
    t = table1(df, columns=["size"], mean_sd=["size"])
    assert t.iloc[0]["Test set P value"] == "" and t.iloc[0]["Test set Test"] == "none"
    assert t.iloc[0][[c for c in t.columns if c.startswith("Test set positive")][0]] == ""


def test_report_shows_the_test_columns_and_the_rule(tmp_path):
    from ceusfusion.report.html import table1_section  # the report stage, only for this test

    t = table1(_normal_cohort(), columns=["size", "sex"])
    (tmp_path / "evaluation").mkdir()
    t.to_csv(tmp_path / "evaluation" / "table1.csv", index=False)
    (tmp_path / "evaluation" / "table1_tests.json").write_text(json.dumps(dict(t.attrs)))
    page = table1_section(tmp_path)
    assert "Training set Test" in page and WILCOXON_EXACT in page and "median [IQR]" in page
    assert "no normality pre-test" in page and "<td>nan</td>" not in page.lower()
