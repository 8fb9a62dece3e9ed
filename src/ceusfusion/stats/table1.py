"""Table 1: baseline characteristics per outcome class within each set.

Layout of the reference study's Table 1: one row per continuous variable
(mean ± SD, or median [Q1, Q3] when Shapiro-Wilk rejects normality in either
class), a header row per categorical variable followed by one ``n (%)`` row per
level, and one p-value column per set. Tests: Student's t-test or
Mann-Whitney U for continuous variables; chi-square (Yates-corrected for
2x2), or Fisher's exact test when a 2x2 table has an expected count below 5.
The test used is recorded in ``df.attrs["tests"]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ceusfusion.core.errors import CeusError

NOT_CLINICAL = ("case_id", "label", "split", "group", "image", "image_mask", "video", "video_mask")
SET_NAMES = {"train": "Training set", "test": "Test set", "all": "All"}


def fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _level_key(x: str):
    try:
        return (0, float(x), x)
    except ValueError:
        return (1, 0.0, x)


def _is_continuous(s: pd.Series, max_levels: int) -> bool:
    num = pd.to_numeric(s, errors="coerce")
    return bool(num.notna().sum() == s.notna().sum() and num.nunique() > max_levels)


def continuous_test(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> tuple[str, float, bool]:
    """(test name, p, normal?) choosing t-test or Mann-Whitney by Shapiro-Wilk in both groups."""
    normal = all(len(x) >= 3 and stats.shapiro(x).pvalue >= alpha for x in (a, b))
    if normal:
        return "t-test", float(stats.ttest_ind(a, b).pvalue), True
    return "Mann-Whitney U", float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue), False


def categorical_test(table: np.ndarray) -> tuple[str, float]:
    """(test name, p) for a levels x classes count table."""
    table = table[table.sum(axis=1) > 0]
    if table.shape[0] < 2 or np.any(table.sum(axis=0) == 0):
        return "none", float("nan")
    expected = stats.contingency.expected_freq(table)
    if table.shape == (2, 2) and expected.min() < 5:
        return "Fisher's exact", float(stats.fisher_exact(table).pvalue)
    return "chi-square", float(stats.chi2_contingency(table).pvalue)


def table1(df: pd.DataFrame, label: str = "label", split: str = "split", columns: list[str] | None = None,
           class_names: tuple[str, str] = ("negative", "positive"), max_levels: int = 10,
           alpha: float = 0.05) -> pd.DataFrame:
    """Return Table 1 as strings: Characteristic, then per set two class columns and a P value column."""
    if label not in df.columns:
        raise CeusError(f"Table 1: the cohort has no {label!r} column")
    y = pd.to_numeric(df[label], errors="coerce")
    if y.isna().any() or not y.isin([0, 1]).all():
        rows = (np.flatnonzero(y.isna() | ~y.isin([0, 1])) + 1).tolist()[:10]
        raise CeusError(f"Table 1: {label} must be 0 or 1; data rows {rows} are not")
    sets = df[split].astype(str) if split in df.columns else pd.Series("all", index=df.index)
    cols = columns if columns is not None else [c for c in df.columns if c not in NOT_CLINICAL and c != split]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CeusError(f"Table 1: columns not in the cohort: {missing}")
    order = [s for s in ("train", "test") if s in set(sets)] + sorted(set(sets) - {"train", "test"})
    header = ["Characteristic"]
    for s in order:
        n0, n1 = int(((sets == s) & (y == 0)).sum()), int(((sets == s) & (y == 1)).sum())
        name = SET_NAMES.get(s, s)
        header += [f"{name} {class_names[0]} (n={n0})", f"{name} {class_names[1]} (n={n1})", f"{name} P value"]
    rows, tests = [], {}
    for c in cols:
        col = df[c]
        if _is_continuous(col, max_levels):
            v = pd.to_numeric(col, errors="coerce")
            row = [c]
            for s in order:
                a, b = (v[(sets == s) & (y == k)].dropna().to_numpy(float) for k in (0, 1))
                if len(a) < 2 or len(b) < 2:
                    row += ["", "", ""]
                    continue
                test, p, normal = continuous_test(a, b, alpha)
                tests[(c, s)] = test
                if normal:
                    row += [f"{x.mean():.2f} ± {x.std(ddof=1):.2f}" for x in (a, b)]
                else:
                    row += [f"{np.median(x):.2f} [{np.quantile(x, .25):.2f}, {np.quantile(x, .75):.2f}]" for x in (a, b)]
                row.append(fmt_p(p))
            rows.append(row)
        else:
            levels = sorted(col.dropna().astype(str).unique(), key=_level_key)
            head = [c]
            body = {lv: [f"  {lv}"] for lv in levels}
            for s in order:
                counts = np.array([[int(((sets == s) & (y == k) & (col.astype(str) == lv)).sum()) for k in (0, 1)]
                                   for lv in levels])
                test, p = categorical_test(counts) if len(levels) else ("none", float("nan"))
                tests[(c, s)] = test
                head += ["", "", fmt_p(p)]
                tot = counts.sum(axis=0)
                for lv, (k0, k1) in zip(levels, counts):
                    body[lv] += [f"{k} ({100 * k / t:.2f})" if t else str(k) for k, t in ((k0, tot[0]), (k1, tot[1]))] + [""]
            rows.append(head)
            rows.extend(body.values())
    out = pd.DataFrame(rows, columns=header)
    out.attrs["tests"] = {f"{c} / {s}": t for (c, s), t in tests.items()}
    return out
