"""Performance by centre and by subgroup: AUC with DeLong CI per stratum and a heterogeneity test.

Strata hold different patients, so their AUCs are independent estimates with
DeLong variances; their heterogeneity is Cochran's Q (inverse-variance
weights, df = k - 1), with DerSimonian-Laird tau2 and I2 (in percent), as
``metafor::rma(yi = auc, vi = var, method = "FE" / "DL")`` gives them. A
stratum whose DeLong variance is undefined (one class, a single case or
control) or zero (perfect separation, constant scores) cannot be weighted and
is left out of the test, with the reason recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import check_binary
from ceusfusion.stats.delong import auc_ci


@dataclass(frozen=True)
class Heterogeneity:
    """Cochran's Q test of k independent estimates; fixed- and random-effects (DerSimonian-Laird) pooled values."""

    QE: float
    df: int
    QEp: float
    I2: float  # percent
    tau2: float
    k: int
    estimate_fe: float
    se_fe: float
    estimate_re: float
    se_re: float

    def to_dict(self) -> dict:
        return asdict(self)


def heterogeneity(estimates, variances) -> Heterogeneity:
    """Cochran's Q, I2 and DL tau2 (``metafor::rma``) of estimates with known sampling variances (> 0)."""
    yi = np.asarray(estimates, dtype=float)
    vi = np.asarray(variances, dtype=float)
    if yi.shape != vi.shape or yi.ndim != 1:
        raise CeusError("estimates and variances must be 1-D arrays of the same length")
    if len(yi) < 2:
        raise CeusError(f"a heterogeneity test needs at least 2 strata with a usable variance, got {len(yi)}")
    if not (np.all(np.isfinite(yi)) and np.all(np.isfinite(vi)) and np.all(vi > 0)):
        raise CeusError("heterogeneity: every estimate must be finite and every variance finite and > 0")
    w = 1.0 / vi
    fe = float(np.sum(w * yi) / np.sum(w))
    q = float(np.sum(w * (yi - fe) ** 2))
    df = len(yi) - 1
    c = float(np.sum(w) - np.sum(w ** 2) / np.sum(w))
    tau2 = max(0.0, (q - df) / c)
    wr = 1.0 / (vi + tau2)
    re = float(np.sum(wr * yi) / np.sum(wr))
    i2 = 100.0 * max(0.0, (q - df) / q) if q > 0 else 0.0
    return Heterogeneity(q, df, float(chi2.sf(q, df)), i2, tau2, len(yi), fe, float(np.sqrt(1 / np.sum(w))), re,
                         float(np.sqrt(1 / np.sum(wr))))


def subgroup_auc(y, score, strata, conf_level: float = 0.95) -> dict:
    """AUC with DeLong CI in each stratum (e.g. centre) and the test that they differ.

    Returns {"strata": [one record per stratum, in sorted order], "heterogeneity": dict or None,
    "excluded": {stratum: reason}, "note": str or None}."""
    yy, (s,) = check_binary(y, score, both_classes=False)
    g = pd.Series(np.asarray(strata, dtype=object)).reset_index(drop=True)
    if len(g) != len(yy):
        raise CeusError(f"strata has {len(g)} values; y has {len(yy)}")
    if g.isna().any():
        raise CeusError(f"strata has missing values at rows (0-based) {np.flatnonzero(g.isna())[:10].tolist()}")
    g = g.astype(str)
    rows, excluded = [], {}
    for level in sorted(g.unique()):
        m = (g == level).to_numpy()
        rec = {"stratum": level, "n": int(m.sum()), "n_pos": int(yy[m].sum())}
        if rec["n_pos"] in (0, rec["n"]):
            rec.update(auc=None, auc_ci=[None, None], var=None, se=None, note="one outcome class only: no AUC")
            excluded[level] = rec["note"]
        else:
            a = auc_ci(yy[m], s[m], conf_level)
            rec.update(auc=a.auc, auc_ci=list(a.ci), var=a.var, se=a.se, note=a.note)
            if not a.ci_defined or not a.var > 0:
                excluded[level] = a.note or "zero DeLong variance"
        rows.append(rec)
    usable = [r for r in rows if r["stratum"] not in excluded]
    het, note = None, None
    if len(usable) >= 2:
        het = heterogeneity([r["auc"] for r in usable], [r["var"] for r in usable]).to_dict()
    else:
        note = f"{len(usable)} stratum/strata with a usable DeLong variance: no heterogeneity test"
    return {"strata": rows, "heterogeneity": het, "excluded": excluded, "note": note, "conf_level": conf_level}
