"""Table 1: baseline characteristics per outcome class within each set.

Layout of the reference study's Table 1: one row per continuous variable, a header row per
categorical variable followed by one ``n (%)`` row per level, a ``Missing`` row (counts) under
every variable that lacks values; a ``Summary`` column says what each row's cells are, and per set
a ``P value`` and a ``Test`` column say which test gave that p.

The rule is fixed before the data are seen (no normality pre-test). A Shapiro-Wilk pre-test makes
the test depend on the data it then tests, so the two-stage procedure's type I error is not the
nominal one, and the pre-test has little power in the small classes of a Table 1 and rejects
harmless departures in large ones (Rochon, Gondan & Kieser, BMC Med Res Methodol 2012;12:81).
So, on each variable's non-missing values:

- continuous variables: ``median [IQR]`` (quartiles as R's ``quantile``, type 7) with the Wilcoxon
  rank-sum test, as R's ``wilcox.test(x, y)`` computes it: exact when both classes have fewer than
  50 values and there are no ties, otherwise the normal approximation with continuity correction
  and the tie-corrected variance. The rank test is valid whatever the shape, and the size and
  perfusion measures of a Table 1 are usually skewed. A variable pre-specified as roughly normal
  (``mean_sd``, for example age) is ``mean ± SD`` with Welch's t-test (R's ``t.test`` default:
  no equal-variance assumption, which costs almost nothing when the variances are equal);
- categorical variables: ``n (%)`` with Pearson's chi-squared test (Yates-corrected for 2x2, as R's
  ``chisq.test``) when every expected count is at least 5, otherwise Fisher's exact test, for r x c
  tables as R's ``fisher.test`` computes it (network algorithm, R's tolerance), or a seeded Monte
  Carlo of that p-value when the table is too large to enumerate.

The test per variable and set is also in ``df.attrs["tests"]``, the summary per variable in
``df.attrs["summaries"]``, the missing counts in ``df.attrs["missing"]``, the rule in
``df.attrs["note"]``. By default every column outside the manifest's schema is a covariate except
file paths, a patient key and identifiers; ``df.attrs["left_out"]`` says which columns were left
out and why.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import gammaln

from ceusfusion.core.errors import CeusError

NOT_CLINICAL = ("case_id", "label", "split", "group", "image", "image_mask", "video", "video_mask")
SET_NAMES = {"train": "Training set", "test": "Test set", "all": "All"}
MISSING = "  Missing"
MEDIAN_IQR, MEAN_SD, COUNTS, COUNT = "median [IQR]", "mean ± SD", "n (%)", "n"
WILCOXON_EXACT = "Wilcoxon rank-sum, exact"
WILCOXON_NORMAL = "Wilcoxon rank-sum, normal approx. with continuity correction"
WELCH = "Welch's t-test"
CHI2, CHI2_YATES = "chi-squared", "chi-squared, Yates-corrected"
FISHER, FISHER_RXC = "Fisher's exact", "Fisher's exact (r×c)"
NO_TEST = "none"
EXACT_BELOW = 50  # R's wilcox.test: exact when n.x < 50 and n.y < 50 (and no ties)
NOTE = ("P values are computed on the non-missing values of each variable; "
        "'Missing' rows give the number of cases without a value, per class. "
        "Continuous variables: median [IQR] and the Wilcoxon rank-sum test (exact when both classes have "
        "fewer than 50 values and no ties, otherwise the normal approximation with continuity correction), "
        "or, where pre-specified, mean ± SD and Welch's t-test; no normality pre-test. "
        "Categorical variables: n (%) and the chi-squared test (Yates-corrected for 2x2) when every expected "
        "count is at least 5, otherwise Fisher's exact test. The Test columns name the test behind each p.")


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


def wilcoxon_rank_sum(a, b) -> tuple[str, float]:
    """(test name, two-sided p) as R's ``wilcox.test(a, b)`` with its defaults (exact = NULL, correct = TRUE).

    Exact when both samples have fewer than 50 values and no value is tied (R doubles the smaller
    tail, capped at 1, as scipy's exact method does); otherwise the normal approximation with the
    tie-corrected variance and a continuity correction of 0.5 (scipy's asymptotic method, the same
    formula).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.concatenate([a, b])
    if len(a) < EXACT_BELOW and len(b) < EXACT_BELOW and len(np.unique(pooled)) == len(pooled):
        return WILCOXON_EXACT, float(stats.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)
    if np.ptp(pooled) == 0:
        return WILCOXON_NORMAL, float("nan")  # every value tied: no variance (R's p is NaN too)
    p = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True).pvalue
    return WILCOXON_NORMAL, float(p)


def welch_t_test(a, b) -> tuple[str, float]:
    """(test name, two-sided p) as R's ``t.test(a, b)`` with its defaults (var.equal = FALSE)."""
    return WELCH, float(stats.ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False).pvalue)


def continuous_test(a, b, summary: str = MEDIAN_IQR) -> tuple[str, float]:
    """(test name, p) of the test that goes with ``summary``: Wilcoxon rank-sum, or Welch's t for mean ± SD."""
    return welch_t_test(a, b) if summary == MEAN_SD else wilcoxon_rank_sum(a, b)


def summarise(x: np.ndarray, summary: str) -> str:
    """One class's cell: ``mean ± SD`` or ``median [Q1, Q3]`` (R's quantile type 7, numpy's default)."""
    if not len(x):
        return ""
    if summary == MEAN_SD:
        if len(x) < 2:
            return f"{x.mean():.2f} ± NA"
        return f"{x.mean():.2f} ± {x.std(ddof=1):.2f}"
    return f"{np.median(x):.2f} [{np.quantile(x, .25):.2f}, {np.quantile(x, .75):.2f}]"


# --------------------------------------------------------------------------- Fisher's exact test, r x c

FEXACT_TOL = 3.45254e-7  # R's FEXACT (fisher.test, r x c): a table counts if log P <= log P(observed) + this
MAX_WORK = 200_000  # steps (a node, a way to fill a row, 16 path lengths): 1-2 s; past it, Monte Carlo
MC_RESAMPLES = 10_000  # R's simulate.p.value default is B = 2000; 10000 keeps the Monte Carlo SE below 0.005


class TableTooLarge(CeusError):
    """The exact enumeration would take more than ``max_work`` steps."""


def _compositions(total: int, caps: tuple[int, ...]):
    """Every way to spread ``total`` over cells bounded by ``caps`` (one row of a table)."""
    if len(caps) == 1:
        if total <= caps[0]:
            yield (total,)
        return
    rest = sum(caps[1:])
    for x in range(max(0, total - rest), min(total, caps[0]) + 1):
        for tail in _compositions(total - x, caps[1:]):
            yield (x, *tail)


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Pool the paths reaching one node; equal past lengths (to 1e-9) add their multiplicities."""
    past = np.concatenate([p for p, _ in parts])
    freq = np.concatenate([f for _, f in parts])
    _, first, inv = np.unique(np.round(past, 9), return_index=True, return_inverse=True)
    return past[first], np.bincount(inv.ravel(), weights=freq)


class _Network:
    """Rows of a table placed in turn: the network algorithm of Mehta and Patel, as R's FEXACT.

    A node is (row index, remaining column margins, sorted: completions do not depend on column
    order). Its exact shortest and longest remaining path (log-probability) are memoised, so a path
    whose every completion is as extreme as the observed table is summed in closed form
    (Vandermonde) and one with none is dropped; paths reaching a node with equal lengths merge.
    """

    def __init__(self, table: np.ndarray, max_work: int):
        self.rows = [int(r) for r in table.sum(axis=1)]
        self.lf = gammaln(np.arange(int(table.sum()) + 1) + 1.0).tolist()  # log k!
        self.suffix = np.cumsum([self.lf[r] for r in self.rows][::-1])[::-1].tolist() + [0.0]
        cols = [int(c) for c in table.sum(axis=0)]
        self.const = sum(self.lf[r] for r in self.rows) + sum(self.lf[c] for c in cols) - self.lf[sum(cols)]
        self.threshold = self.weight(table.ravel()) + FEXACT_TOL
        self.start = tuple(sorted(cols))
        self.memo: dict = {}
        self.kids: dict = {}
        self.budget = max_work

    def weight(self, cells) -> float:
        return -sum(self.lf[int(x)] for x in cells)

    def spend(self, n: int = 1) -> None:
        self.budget -= n
        if self.budget < 0:
            raise TableTooLarge("Fisher's exact test: the table is too large to enumerate")

    def children(self, i: int, m: tuple[int, ...]) -> list[tuple[tuple[int, ...], float]]:
        """(child node, arc length) for every way to fill row i from margins m."""
        if (i, m) not in self.kids:
            self.kids[i, m] = [(tuple(sorted(a - b for a, b in zip(m, x))), self.weight(x))
                               for x in _compositions(self.rows[i], m)]
        self.spend(len(self.kids[i, m]))
        return self.kids[i, m]

    def bounds(self, i: int, m: tuple[int, ...]) -> tuple[float, float]:
        """(shortest, longest) remaining path from node (i, m)."""
        if (i, m) not in self.memo:
            self.spend()
            if i == len(self.rows) - 1:
                self.memo[i, m] = (self.weight(m), self.weight(m))
            else:
                ends = [(w + lo, w + hi) for child, w in self.children(i, m) for lo, hi in [self.bounds(i + 1, child)]]
                self.memo[i, m] = (min(e[0] for e in ends), max(e[1] for e in ends))
        return self.memo[i, m]

    def p_value(self) -> float:
        """Probability of the tables whose path is no longer than the observed one's (+ tolerance)."""
        stage = {self.start: (np.zeros(1), np.ones(1))}
        total = 0.0
        for i in range(len(self.rows)):
            nxt: dict = {}
            for m, (past, freq) in stage.items():
                self.spend(1 + len(past) // 16)  # numpy: a path length costs far less than a node
                lo, hi = self.bounds(i, m)
                done = past + hi <= self.threshold
                mass = self.lf[sum(m)] - sum(self.lf[c] for c in m) - self.suffix[i] + self.const
                total += float(np.sum(freq[done] * np.exp(past[done] + mass)))
                open_ = ~done & (past + lo <= self.threshold)
                if open_.any():
                    for child, w in self.children(i, m):
                        nxt.setdefault(child, []).append((past[open_] + w, freq[open_]))
            stage = {m: _merge(parts) for m, parts in nxt.items()}
        return min(1.0, total)


def fisher_exact_rxc(table, max_work: int | None = None) -> float:
    """Exact Fisher p-value of an r x c table, as R's ``fisher.test``: the probability, under fixed
    margins, of the tables no more probable than the observed one (R's FEXACT tolerance).

    Needed because scipy's ``fisher_exact`` on an r x c table is an unseeded Monte Carlo.
    Raises TableTooLarge past ``max_work`` steps (default ``MAX_WORK``).
    """
    t = np.asarray(table, dtype=np.int64)
    if t.ndim != 2 or np.any(t < 0):
        raise CeusError("Fisher's exact test needs a 2-D table of non-negative counts")
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    if min(t.shape, default=0) < 2:
        return 1.0
    if t.shape[1] > t.shape[0]:
        t = t.T  # fewer columns: fewer ways to fill a row
    t = t[np.argsort(-t.sum(axis=1), kind="stable")]  # largest rows first: fewer open paths
    return _Network(t, MAX_WORK if max_work is None else max_work).p_value()


def fisher_test(table, seed: int = 0, max_work: int | None = None) -> tuple[str, float]:
    """(test name, p): exact r x c Fisher, or a seeded Monte Carlo of the same p-value when too large."""
    try:
        return FISHER_RXC, fisher_exact_rxc(table, max_work)
    except TableTooLarge:
        mc = stats.MonteCarloMethod(n_resamples=MC_RESAMPLES, rng=np.random.default_rng(seed))
        p = float(stats.fisher_exact(np.asarray(table, dtype=np.int64), method=mc).pvalue)
        return f"{FISHER} (Monte Carlo, B={MC_RESAMPLES}, seed {seed})", p


def categorical_test(table: np.ndarray, seed: int = 0) -> tuple[str, float]:
    """(test name, p) for a levels x classes count table: chi-squared only where it is valid.

    Chi-squared as R's ``chisq.test`` (Yates' continuity correction for a 2x2 table only, which is
    where scipy applies it: one degree of freedom) when every expected count is at least 5 (Cochran's
    rule, on the margins, not on the association tested); otherwise Fisher's exact test.
    """
    table = np.asarray(table)
    table = table[table.sum(axis=1) > 0]
    if table.shape[0] < 2 or np.any(table.sum(axis=0) == 0):
        return NO_TEST, float("nan")
    if stats.contingency.expected_freq(table).min() >= 5:
        return CHI2_YATES if table.shape == (2, 2) else CHI2, float(stats.chi2_contingency(table).pvalue)
    if table.shape == (2, 2):
        return FISHER, float(stats.fisher_exact(table).pvalue)
    return fisher_test(table, seed)


# --------------------------------------------------------------------------- the table


def analysed_and_excluded(cohort: pd.DataFrame, analysed_ids, id_column: str = "case_id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(analysed rows, excluded rows): Table 1 describes the cases analysed; the rest are reported, not hidden."""
    ids = {str(i) for i in analysed_ids}
    known = cohort[id_column].astype(str)
    unknown = sorted(ids - set(known))
    if unknown:
        raise CeusError(f"Table 1: {len(unknown)} analysed case(s) not in the cohort: {', '.join(unknown[:10])}")
    keep = known.isin(ids)
    return cohort[keep].copy(), cohort[~keep].copy()


def _labels(df: pd.DataFrame, label: str) -> pd.Series:
    if label not in df.columns:
        raise CeusError(f"Table 1: the cohort has no {label!r} column")
    y = pd.to_numeric(df[label], errors="coerce")
    if y.isna().any() or not y.isin([0, 1]).all():
        rows = (np.flatnonzero(y.isna() | ~y.isin([0, 1])) + 1).tolist()[:10]
        raise CeusError(f"Table 1: {label} must be 0 or 1; data rows {rows} are not")
    return y


def _header(sets: pd.Series, y: pd.Series, order: list[str], class_names: tuple[str, str]) -> list[str]:
    header = ["Characteristic", "Summary"]
    for s in order:
        n0, n1 = int(((sets == s) & (y == 0)).sum()), int(((sets == s) & (y == 1)).sum())
        name = SET_NAMES.get(s, s)
        header += [f"{name} {class_names[0]} (n={n0})", f"{name} {class_names[1]} (n={n1})", f"{name} P value",
                   f"{name} Test"]
    return header


def _continuous_rows(c: str, col: pd.Series, sets, y, order, summary: str) -> tuple[list[list[str]], dict]:
    """One row: ``summary`` per class, then the p-value and the test that gave it, per set."""
    v = pd.to_numeric(col, errors="coerce")
    row, tests = [c, summary], {}
    for s in order:
        a, b = (v[(sets == s) & (y == k)].dropna().to_numpy(float) for k in (0, 1))
        need = 2 if summary == MEAN_SD else 1  # Welch needs a variance per class; a rank test does not
        test, p = continuous_test(a, b, summary) if min(len(a), len(b)) >= need else (NO_TEST, float("nan"))
        tests[s] = test
        row += [summarise(x, summary) for x in (a, b)] + [fmt_p(p), test]
    return [row], tests


def _categorical_rows(c: str, col: pd.Series, sets, y, order, seed: int) -> tuple[list[list[str]], dict]:
    """A header row with the p-value and test per set, then ``n (%)`` per level (of the class's non-missing cases)."""
    levels = sorted(col.dropna().astype(str).unique(), key=_level_key)
    text = col.astype(str).where(col.notna())
    head, body, tests = [c, COUNTS], {lv: [f"  {lv}", COUNTS] for lv in levels}, {}
    for s in order:
        counts = np.array([[int(((sets == s) & (y == k) & (text == lv)).sum()) for k in (0, 1)] for lv in levels])
        test, p = categorical_test(counts, seed) if len(levels) else (NO_TEST, float("nan"))
        tests[s] = test
        head += ["", "", fmt_p(p), test]
        tot = counts.sum(axis=0) if len(levels) else np.zeros(2, int)
        for lv, (k0, k1) in zip(levels, counts):
            body[lv] += [f"{k} ({100 * k / t:.2f})" if t else str(k) for k, t in ((k0, tot[0]), (k1, tot[1]))] + ["", ""]
    return [head, *body.values()], tests


def _missing(col: pd.Series, sets, y, order) -> dict[str, list[int]]:
    """Cases without a value, per set and class."""
    return {s: [int(((sets == s) & (y == k) & col.isna()).sum()) for k in (0, 1)] for s in order}


def _summaries(df: pd.DataFrame, cols: list[str], mean_sd, max_levels: int) -> dict[str, str]:
    """The pre-specified summary of each column: n (%), median [IQR], or mean ± SD where asked."""
    asked = set(mean_sd or ())
    unknown = sorted(asked - set(cols))
    if unknown:
        raise CeusError(f"Table 1: mean ± SD asked for columns not in the table: {unknown}")
    out = {c: (MEDIAN_IQR if _is_continuous(df[c], max_levels) else COUNTS) for c in cols}
    categorical = sorted(c for c in asked if out[c] == COUNTS)
    if categorical:
        raise CeusError(f"Table 1: mean ± SD asked for categorical columns (at most {max_levels} levels): {categorical}")
    return {c: (MEAN_SD if c in asked else s) for c, s in out.items()}


# ----------------------------------------------------------------- which columns are covariates

PATH_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".nii.gz",
                   ".nrrd", ".mha", ".mhd", ".avi", ".mp4", ".mov", ".mkv", ".wmv", ".npy", ".npz")
# a column named like a patient key (lower case, non-alphanumerics as '_'): patient, patient_id, subject_no, mrn, pid...
KEY_NAME = re.compile(r"^(patients?|pat|pt|subjects?|subj|participants?|persons?|individual|mrn|pid|patid|ptid|"
                      r"patientid|subjectid|hospital)(_?(id|no|nr|num|number|key|code))?$")
ID_NAME = re.compile(r"(^|_)(id|uid|uuid|key|code|accession|no|nr|number)$")
MAX_ROWS_PER_PATIENT = 5  # a patient key's values repeat in small groups: at most this many rows per value on average


def _name(column: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(column).lower()).strip("_")


def _values(s: pd.Series) -> pd.Series:
    v = s.dropna().astype(str).str.strip()
    return v[v != ""]


def _looks_like_path(v: str) -> bool:
    low = v.lower()
    return low.endswith(PATH_EXTENSIONS) or (("/" in v or "\\" in v) and re.search(r"[A-Za-z_]", v) is not None)


def path_example(s: pd.Series) -> str | None:
    """A value of ``s`` that looks like a file path when most of its values do (a separator with letters, or an image,
    mask or video extension), else None. A date like 2020/01/31 is not a path."""
    v = _values(s)
    paths = v[v.map(_looks_like_path)]
    return str(paths.iloc[0]) if len(v) and len(paths) * 2 >= len(v) else None


def patient_key_reason(s: pd.Series, column: str, ids: pd.Series | None = None, max_levels: int = 10) -> str | None:
    """Why ``s`` looks like a patient key (several rows share a value and it is no plausible covariate), or None.

    Its values must repeat, and not be decimals (a measurement) or paths. A column named like one (patient,
    patient_id, subject, mrn, pid, ...) needs nothing more; any other needs more than ``max_levels`` distinct values
    that repeat in small groups (at most MAX_ROWS_PER_PATIENT rows per value on average) and, for numbers, rows of a
    value that sit together in the file or values that are part of the case id, so an age column is not one.
    """
    v = _values(s)
    counts = v.value_counts()
    shared = counts[counts > 1]
    if shared.empty or path_example(s) is not None:
        return None
    num = pd.to_numeric(v, errors="coerce")
    if num.notna().all() and bool((num % 1 != 0).any()):
        return None
    e = f"{len(shared)} of its {len(counts)} values repeat across its {len(v)} rows (e.g. {shared.index[0]!r} in {int(shared.iloc[0])})"
    if KEY_NAME.match(_name(column)):
        return f"it is named like one; {e}"
    if len(counts) <= max_levels or len(v) / len(counts) > MAX_ROWS_PER_PATIENT:
        return None
    if num.isna().all():
        return f"its text values repeat in small groups; {e}"
    if ids is not None and _part_of_ids(v, ids):
        return f"its values are part of the case ids; {e}"
    if _rows_together(v):
        return f"rows sharing a value sit together in the file; {e}"
    return None


def _part_of_ids(v: pd.Series, ids: pd.Series) -> bool:
    """Whether (nearly) every value is a leading piece or a token of its row's case id (patient 100: case 100_1_n2)."""
    cid = ids.loc[v.index].astype(str)
    hits = [c.startswith(x) or x in re.split(r"[^A-Za-z0-9]+", c) for x, c in zip(v, cid)]
    return sum(hits) >= 0.9 * len(hits)


def _rows_together(v: pd.Series) -> bool:
    """Whether (nearly) every repeated value fills consecutive rows (a manifest sorted by patient)."""
    pos = pd.Series(np.arange(len(v)), index=v.index)
    g = pos.groupby(v.to_numpy())
    span = (g.max() - g.min() + 1)[g.size() > 1]
    return bool(len(span)) and float((span == g.size()[g.size() > 1]).mean()) >= 0.9


def id_like_reason(s: pd.Series, column: str, max_levels: int = 10) -> str | None:
    """Why ``s`` is an identifier (one value per row, text or named like an id), or None. Unique decimals are
    measurements, and a small cohort's few unique values (ages of six patients) are not ids either."""
    v = _values(s)
    if v.empty or v.nunique() < len(v):
        return None
    named = KEY_NAME.match(_name(column)) or ID_NAME.search(_name(column))
    text = pd.to_numeric(v, errors="coerce").isna().any() and len(v) > max_levels
    return f"an identifier: unique per row ({len(v)} distinct values)" if named or text else None


def not_covariate_reason(df: pd.DataFrame, column: str, id_column: str = "case_id", max_levels: int = 10) -> str | None:
    """Why a column of the cohort is no covariate (file paths, a patient key, an identifier), or None."""
    s = df[column]
    example = path_example(s)
    if example is not None:
        return f"file paths (e.g. {example!r})"
    ids = df[id_column] if id_column in df.columns and column != id_column else None
    key = patient_key_reason(s, column, ids, max_levels)
    return f"looks like a patient key: {key}" if key else id_like_reason(s, column, max_levels)


def covariate_columns(df: pd.DataFrame, candidates: list[str], max_levels: int = 10) -> tuple[list[str], dict[str, str]]:
    """The candidate columns that are covariates, and {column: why not} for the others."""
    left_out = {c: r for c in candidates if (r := not_covariate_reason(df, c, max_levels=max_levels))}
    return [c for c in candidates if c not in left_out], left_out


def table1(df: pd.DataFrame, label: str = "label", split: str = "split", columns: list[str] | None = None,
           class_names: tuple[str, str] = ("negative", "positive"), max_levels: int = 10,
           mean_sd: Collection[str] = (), seed: int = 0) -> pd.DataFrame:
    """Return Table 1 as strings: Characteristic, Summary, then per set two class columns, P value and Test.

    ``mean_sd`` names the continuous columns pre-specified as roughly normal (mean ± SD, Welch's
    t-test); every other continuous column is median [IQR] with the Wilcoxon rank-sum test. ``seed``
    drives the Monte Carlo Fisher test, used only for tables too large to enumerate.
    """
    y = _labels(df, label)
    sets = df[split].astype(str) if split in df.columns else pd.Series("all", index=df.index)
    others = [c for c in df.columns if c not in NOT_CLINICAL and c != split and c != label]
    cols = columns if columns is not None else covariate_columns(df, others, max_levels)[0]
    left_out = {c: not_covariate_reason(df, c, max_levels=max_levels) or "not among the columns asked for"
                for c in others if c not in cols}
    absent = [c for c in cols if c not in df.columns]
    if absent:
        raise CeusError(f"Table 1: columns not in the cohort: {absent}")
    summaries = _summaries(df, cols, mean_sd, max_levels)
    order = [s for s in ("train", "test") if s in set(sets)] + sorted(set(sets) - {"train", "test"})
    rows, tests, missing = [], {}, {}
    for c in cols:
        if summaries[c] == COUNTS:
            body, used = _categorical_rows(c, df[c], sets, y, order, seed)
        else:
            body, used = _continuous_rows(c, df[c], sets, y, order, summaries[c])
        rows += body
        tests.update({f"{c} / {s}": t for s, t in used.items()})
        if df[c].isna().any():
            counts = _missing(df[c], sets, y, order)
            rows.append([MISSING, COUNT] + [cell for s in order for cell in (*map(str, counts[s]), "", "")])
            missing[c] = {s: dict(zip(class_names, n)) for s, n in counts.items()}
    out = pd.DataFrame(rows, columns=_header(sets, y, order, class_names))
    out.attrs.update(tests=tests, summaries=summaries, missing=missing, note=NOTE, left_out=left_out)
    return out
