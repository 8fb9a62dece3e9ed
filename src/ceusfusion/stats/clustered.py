"""Estimates for rows that are not independent: several nodules (rows) of one patient (group).

DeLong's and Wilson's intervals treat every row as an independent patient; the same patients entered as
two nodules each then look like twice the sample and get intervals about 1/sqrt(2) as wide. Here the
patient is the unit of the variance:

- AUC: Obuchowski (1997, Biometrics 53:567-578), the nonparametric clustered ROC area. The area is the
  usual Mann-Whitney one over all rows; its variance sums the DeLong placements within each patient
  (cluster) before squaring, and adds the within-patient covariance of case and control placements:
  ``var = S10/M + S01/N + 2 S11/(M N)`` with ``S10 = I10/((I10-1) M) sum_i (V10_i - m_i A)^2``,
  ``S01 = I01/((I01-1) N) sum_i (V01_i - n_i A)^2``, ``S11 = I/(I-1) sum_i (V10_i - m_i A)(V01_i - n_i A)``
  (``m_i``/``n_i`` the cases/controls of patient i, ``I10``/``I01`` the patients with a case/control). Two
  scores on the same rows get her covariance (the same sums over the products of the two scores'
  components), so the paired test is Obuchowski's. With one row per patient every formula is DeLong's
  (pROC) exactly; the same formulas are those of the Cleveland Clinic ``funcs_clusteredROC.R`` and of
  ``doAUCcluster`` (DIDSR iMRMC), which reproduce the intermediate values of her Table 3.
- Proportions (sensitivity, ..., accuracy): the ratio estimator over patients (Rao & Scott 1992, the
  variance Obuchowski 1998 uses for clustered proportions), ``var = k/(k-1) sum_i (a_i - p n_i)^2 / n^2``
  over the k patients that contribute, turned into a design effect ``deff = var / (p(1-p)/n)`` and a
  Wilson interval at the effective size ``n/deff``; or a seeded patient-level (cluster) bootstrap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import check_binary
from ceusfusion.stats.delong import DeLongTest, placements
from ceusfusion.stats.thresholds import METRICS, confusion

OBUCHOWSKI = "obuchowski"


@dataclass(frozen=True)
class ClusteredAUC:
    auc: float
    ci: tuple[float, float]  # clipped to [0, 1] like pROC; (nan, nan) when undefined
    var: float
    se: float
    ci_unclipped: tuple[float, float]
    n_pos: int
    n_neg: int
    n_groups: int
    groups_pos: int  # I10: patients with at least one case
    groups_neg: int  # I01: patients with at least one control
    conf_level: float = 0.95
    ci_defined: bool = True
    note: str | None = None
    method: str = OBUCHOWSKI

    def to_dict(self) -> dict:
        return asdict(self)


def group_codes(groups, n: int) -> tuple[np.ndarray, int]:
    """Integer code per row (0..G-1) and G; CeusError on a wrong length or a missing group."""
    g = np.asarray(groups, dtype=object)
    if g.ndim != 1 or len(g) != n:
        raise CeusError(f"groups has shape {g.shape}; expected ({n},) like y")
    missing = [i for i, v in enumerate(g) if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise CeusError(f"missing group at rows (0-based) {missing[:10]}")
    _, codes = np.unique(g.astype(str), return_inverse=True)
    return codes.astype(np.int64), int(codes.max()) + 1 if n else 0


def _components(y: np.ndarray, s: np.ndarray, codes: np.ndarray, G: int):
    """Per patient: V10_i - m_i A and V01_i - n_i A (Obuchowski's centred cluster sums), m, n and A."""
    v10, v01, auc = placements(y, s)
    pos = y == 1
    m = np.bincount(codes[pos], minlength=G)
    n = np.bincount(codes[~pos], minlength=G)
    x = np.bincount(codes[pos], weights=v10, minlength=G) - m * auc
    z = np.bincount(codes[~pos], weights=v01, minlength=G) - n * auc
    return x, z, m, n, auc


def _covariance(xa, za, xb, zb, m, n) -> float:
    """Obuchowski's cov(A_a, A_b) from the centred cluster sums (var when a is b); NaN when undefined."""
    i10, i01, i = int(np.sum(m > 0)), int(np.sum(n > 0)), int(np.sum((m + n) > 0))
    M, N = int(m.sum()), int(n.sum())
    if i10 < 2 or i01 < 2:
        return float("nan")
    s10 = i10 / ((i10 - 1) * M) * float(np.dot(xa, xb))
    s01 = i01 / ((i01 - 1) * N) * float(np.dot(za, zb))
    s11_ab = i / (i - 1) * float(np.dot(xa, zb))
    s11_ba = i / (i - 1) * float(np.dot(xb, za))
    return s10 / M + s01 / N + (s11_ab + s11_ba) / (M * N)


def _ci(theta: float, se: float, conf_level: float) -> tuple[tuple[float, float], tuple[float, float]]:
    q = norm.ppf(0.5 + conf_level / 2.0)
    lo, hi = theta - q * se, theta + q * se
    return (min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)), (lo, hi)


def clustered_auc_ci(y, score, groups, conf_level: float = 0.95) -> ClusteredAUC:
    """AUC with Obuchowski's clustered variance and its normal CI (groups: the patient of each row)."""
    yy, (s,) = check_binary(y, score)
    codes, G = group_codes(groups, len(yy))
    x, z, m, n, auc = _components(yy, s, codes, G)
    var = _covariance(x, z, x, z, m, n)
    i10, i01 = int(np.sum(m > 0)), int(np.sum(n > 0))
    base = dict(auc=auc, n_pos=int(m.sum()), n_neg=int(n.sum()), n_groups=G, groups_pos=i10, groups_neg=i01,
                conf_level=conf_level)
    if np.isnan(var):
        nan = float("nan")
        who = "case" if i10 < 2 else "control"
        return ClusteredAUC(ci=(nan, nan), var=nan, se=nan, ci_unclipped=(nan, nan), ci_defined=False,
                            note=f"fewer than two patients with a {who}: clustered variance undefined, no CI", **base)
    var = max(var, 0.0)  # rounding can leave -1e-18 where every component is zero
    se = float(np.sqrt(var))
    ci, raw = _ci(auc, se, conf_level)
    note = "zero variance (all scores equal or perfect separation): CI collapses to the AUC" if var == 0 else None
    return ClusteredAUC(ci=ci, var=var, se=se, ci_unclipped=raw, note=note, **base)


def _z_p(diff: float, var: float) -> tuple[float, float]:
    if np.isnan(var):
        return float("nan"), float("nan")
    if var <= 0:
        z = 0.0 if diff == 0 else float(np.copysign(np.inf, diff))  # pROC: 0/0 -> Z = 0
    else:
        z = diff / np.sqrt(var)
    return float(z), float(2.0 * norm.cdf(-abs(z)))


def _test(auc_a, auc_b, var, paired, conf_level, note) -> DeLongTest:
    diff = auc_a - auc_b
    z, p = _z_p(diff, var)
    half = norm.ppf(0.5 + conf_level / 2.0) * np.sqrt(max(var, 0.0)) if not np.isnan(var) else float("nan")
    return DeLongTest(float(auc_a), float(auc_b), float(diff), z, p, (float(diff - half), float(diff + half)), float(var),
                      paired, conf_level, note)


def clustered_auc_test(y, score_a, score_b, groups, conf_level: float = 0.95) -> DeLongTest:
    """Obuchowski's paired test of two scores on the same rows: var(A_a - A_b) = var_a + var_b - 2 cov."""
    yy, (a, b) = check_binary(y, score_a, score_b, names=("score_a", "score_b"))
    codes, G = group_codes(groups, len(yy))
    xa, za, m, n, auc_a = _components(yy, a, codes, G)
    xb, zb, _, _, auc_b = _components(yy, b, codes, G)
    dx, dz = xa - xb, za - zb  # the variance of a difference is the variance of the difference of the components
    var = _covariance(dx, dz, dx, dz, m, n)
    note = "fewer than two patients with a case or with a control: clustered variance undefined" if np.isnan(var) else None
    return _test(auc_a, auc_b, var, True, conf_level, note)


def clustered_auc_test_unpaired(y_a, score_a, groups_a, y_b, score_b, groups_b, conf_level: float = 0.95) -> DeLongTest:
    """Two AUCs from independent patients: Z = diff / sqrt(var_a + var_b), each variance Obuchowski's."""
    ra = clustered_auc_ci(y_a, score_a, groups_a, conf_level)
    rb = clustered_auc_ci(y_b, score_b, groups_b, conf_level)
    note = None if (ra.ci_defined and rb.ci_defined) else "clustered variance undefined for one cohort"
    return _test(ra.auc, rb.auc, ra.var + rb.var, False, conf_level, note)


def wilson_interval(p: float, n: float, conf_level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed on an (effective, possibly fractional) size n."""
    if not n > 0 or np.isnan(p):
        return float("nan"), float("nan")
    q = norm.ppf(0.5 + conf_level / 2.0)
    q2n = q * q / n
    centre = (p + q2n / 2.0) / (1.0 + q2n)
    half = q / (1.0 + q2n) * np.sqrt(p * (1.0 - p) / n + q2n / (4.0 * n))
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def clustered_proportion(num, den, conf_level: float = 0.95) -> dict:
    """Proportion sum(num)/sum(den) over patients (per-patient counts) with its design-effect Wilson CI.

    The ratio-estimator variance over the k patients with den > 0 gives deff; the interval is Wilson's at
    n/deff. deff is held at >= 1, so that a few patients' noise never makes the interval narrower than the
    row-level Wilson one; where p(1-p) = 0 (every row a success or none) deff is undefined and the
    effective size is the number of patients (every patient's rows counted as one observation)."""
    a, d = np.asarray(num, float), np.asarray(den, float)
    keep = d > 0
    a, d = a[keep], d[keep]
    k, n = int(keep.sum()), float(d.sum())
    if n == 0:
        nan = float("nan")
        return {"p": nan, "ci": (nan, nan), "deff": nan, "n_eff": 0.0, "groups": 0}
    p = float(a.sum() / n)
    v_bin = p * (1.0 - p) / n
    if k >= 2 and v_bin > 0:
        v_clu = k / (k - 1) * float(np.sum((a - p * d) ** 2)) / n ** 2
        deff = max(v_clu / v_bin, 1.0)
        n_eff = n / deff
    else:
        deff, n_eff = float("nan"), float(k)
    return {"p": p, "ci": wilson_interval(p, n_eff, conf_level), "deff": deff, "n_eff": n_eff, "groups": k}


def _cluster_counts(yy: np.ndarray, pred: np.ndarray, codes: np.ndarray, G: int) -> np.ndarray:
    """tp, fp, tn, fn per patient (G x 4)."""
    cells = ((pred & (yy == 1)), (pred & (yy == 0)), (~pred & (yy == 0)), (~pred & (yy == 1)))
    return np.stack([np.bincount(codes, weights=c.astype(float), minlength=G) for c in cells], axis=1)


def _parts(c: np.ndarray) -> dict:
    """numerator and denominator of each metric from tp, fp, tn, fn columns."""
    tp, fp, tn, fn = (c[..., j] for j in range(4))
    return {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "ppv": (tp, tp + fp), "npv": (tn, tn + fn),
            "accuracy": (tp + tn, tp + fp + tn + fn)}


def resample_counts(G: int, B: int, rng: np.random.Generator) -> np.ndarray:
    """B x G: how many times each of G patients is drawn in each of B resamples with replacement (THE patient
    bootstrap of the package: selection, scale and these CIs draw it the same way)."""
    draws = rng.integers(0, G, size=(B, G))
    return np.bincount((draws + G * np.arange(B)[:, None]).ravel(), minlength=B * G).reshape(B, G)


def cluster_bootstrap_ci(counts: np.ndarray, n_boot: int = 2000, seed: int = 0, conf_level: float = 0.95) -> dict:
    """Seeded percentile CIs of the five metrics, resampling whole patients (rows of ``counts``: tp, fp, tn, fn).

    Each replicate draws G patients with replacement; its counts are the draw multiplicities times the
    per-patient counts (one matrix product for all replicates)."""
    rng = np.random.default_rng(seed)
    G = counts.shape[0]
    boot = resample_counts(G, n_boot, rng) @ counts  # n_boot x 4
    a = (1 - conf_level) / 2
    out = {}
    for k, (num, den) in _parts(boot).items():
        with np.errstate(invalid="ignore", divide="ignore"):
            v = num / den
        v = v[np.isfinite(v)]
        out[k] = (float(np.quantile(v, a)), float(np.quantile(v, 1 - a))) if v.size else (float("nan"),) * 2
    return out


def clustered_metrics_at(y, score, threshold: float, groups, conf_level: float = 0.95, ci: str = "wilson",
                         n_boot: int = 2000, seed: int = 0) -> dict:
    """``metrics_at`` with patient-level CIs: design-effect Wilson (``ci="wilson"``) or the cluster bootstrap.

    Same keys as ``metrics_at`` plus ``design_effect`` ({metric: deff}, Wilson only) and ``n_groups``."""
    c = confusion(y, score, threshold)
    yy, (s,) = check_binary(y, score, both_classes=False)
    codes, G = group_codes(groups, len(yy))
    counts = _cluster_counts(yy, s >= threshold, codes, G)
    out = {"threshold": float(threshold), **c}
    if ci == "wilson":
        res = {k: clustered_proportion(num, den, conf_level) for k, (num, den) in _parts(counts).items()}
        cis = {k: r["ci"] for k, r in res.items()}
        out["design_effect"] = {k: r["deff"] for k, r in res.items()}
    elif ci == "bootstrap":
        cis = cluster_bootstrap_ci(counts, n_boot, seed, conf_level)
    else:
        raise CeusError(f"unknown CI method {ci!r}; use 'wilson' or 'bootstrap'")
    for k in METRICS:
        out[f"{k}_ci"] = list(cis[k])
    out["ci_method"] = ci
    out["n_groups"] = G
    return out
