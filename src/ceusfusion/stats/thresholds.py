"""Operating thresholds and the metrics at them, with confidence intervals.

A threshold is chosen once on the training set (Youden) and carried unchanged
to the test set, so test-set sensitivity and specificity are honest. The rule
is ``score >= threshold`` is positive; thresholds are pROC's midpoints, and
Youden ties are decided by exact floating-point equality of
``tp/n1 + (n0 - fp)/n0`` exactly as pROC does, all tied optima being kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import check_binary
from ceusfusion.stats.delong import roc_curve

METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")


@dataclass(frozen=True)
class Youden:
    threshold: float  # the smallest of the tied optima (pROC's first row)
    thresholds: tuple[float, ...]  # every tied optimum, ascending
    j: float
    sensitivity: float
    specificity: float

    def to_dict(self) -> dict:
        return asdict(self)


def youden(y, score) -> Youden:
    """Youden-optimal threshold(s), as ``pROC::coords(roc, "best", best.method = "youden")``."""
    rc = roc_curve(y, score)
    crit = rc.tp / rc.n_pos + (rc.n_neg - rc.fp) / rc.n_neg
    best = np.flatnonzero(crit == crit.max())
    k = best[0]
    return Youden(float(rc.thresholds[k]), tuple(float(t) for t in rc.thresholds[best]), float(crit[k] - 1.0),
                  float(rc.sensitivity[k]), float(rc.specificity[k]))


def threshold_for_sensitivity(y, score, target: float) -> float:
    """The largest pROC threshold whose sensitivity is at least ``target`` (best specificity there)."""
    if not 0.0 <= target <= 1.0:
        raise CeusError(f"target sensitivity must lie in [0, 1], got {target}")
    rc = roc_curve(y, score)
    ok = np.flatnonzero(rc.sensitivity >= target)  # sensitivity falls as the threshold rises
    return float(rc.thresholds[ok[-1]])


def _ratio(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return a / b


def confusion(y, score, threshold: float) -> dict:
    """tp, fp, tn, fn and the five metrics at ``score >= threshold`` (0/0 gives NaN)."""
    yy, (s,) = check_binary(y, score, both_classes=False)
    pred = s >= threshold
    tp = int(np.sum(pred & (yy == 1)))
    fp = int(np.sum(pred & (yy == 0)))
    fn = int(np.sum(~pred & (yy == 1)))
    tn = int(np.sum(~pred & (yy == 0)))
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, **_metrics(tp, fp, tn, fn)}


def _metrics(tp, fp, tn, fn) -> dict:
    n = np.asarray(tp) + fp + tn + fn
    vals = (_ratio(tp, np.asarray(tp) + fn), _ratio(tn, np.asarray(tn) + fp), _ratio(tp, np.asarray(tp) + fp),
            _ratio(tn, np.asarray(tn) + fn), _ratio(np.asarray(tp) + tn, n))
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in zip(METRICS, vals)}


def _parts(c: dict) -> dict:
    """numerator/denominator of each metric."""
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    return {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "ppv": (tp, tp + fp),
            "npv": (tn, tn + fn), "accuracy": (tp + tn, tp + fp + tn + fn)}


def wilson_ci(k: int, n: int, conf_level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n (NaN for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    lo, hi = proportion_confint(k, n, alpha=1 - conf_level, method="wilson")
    return float(lo), float(hi)


def bootstrap_ci(c: dict, n_boot: int = 2000, seed: int = 0, conf_level: float = 0.95) -> dict:
    """Seeded stratified bootstrap (percentile) CIs of the metrics at a fixed threshold.

    Cases and controls are resampled separately, keeping n1 and n0; with the
    threshold fixed, the resampled tp (fp) count is exactly Binomial(n1, tp/n1)
    (Binomial(n0, fp/n0)), which is drawn directly.
    """
    rng = np.random.default_rng(seed)
    n1, n0 = c["tp"] + c["fn"], c["tn"] + c["fp"]
    tp = rng.binomial(n1, c["tp"] / n1 if n1 else 0.0, size=n_boot)
    fp = rng.binomial(n0, c["fp"] / n0 if n0 else 0.0, size=n_boot)
    m = _metrics(tp, fp, n0 - fp, n1 - tp)
    a = (1 - conf_level) / 2 * 100
    out = {}
    for k in METRICS:
        v = m[k][np.isfinite(m[k])]
        out[k] = (float(np.percentile(v, a)), float(np.percentile(v, 100 - a))) if v.size else (float("nan"),) * 2
    return out


def metrics_at(y, score, threshold: float, conf_level: float = 0.95, ci: str = "wilson",
               n_boot: int = 2000, seed: int = 0) -> dict:
    """Confusion counts, the five metrics and their CIs (``<metric>_ci``) at a threshold.

    ci: "wilson" (default) or "bootstrap" (seeded, stratified; see :func:`bootstrap_ci`).
    """
    c = confusion(y, score, threshold)
    if ci == "wilson":
        cis = {k: wilson_ci(int(num), int(den), conf_level) for k, (num, den) in _parts(c).items()}
    elif ci == "bootstrap":
        cis = bootstrap_ci(c, n_boot, seed, conf_level)
    else:
        raise CeusError(f"unknown CI method {ci!r}; use 'wilson' or 'bootstrap'")
    out = {"threshold": float(threshold), **c}
    for k in METRICS:
        out[f"{k}_ci"] = list(cis[k])
    out["ci_method"] = ci
    return out
