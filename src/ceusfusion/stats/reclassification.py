"""Reclassification: net reclassification improvement (continuous and categorical) and IDI.

Exactly ``Hmisc::improveProb(x1 = p_old, x2 = p_new, y)`` (Hmisc 4.8): the
events and non-events parts of the NRI with the variance
``(n_up + n_down)/n^2 - (n_up - n_down)^2/n^3`` per class, the IDI with
``var(d[events])/n1 + var(d[non-events])/n0``; z = index / se and the
two-sided p = ``2 pnorm(-|z|)`` as ``print.improveProb`` gives them. A zero
SE gives z = +-Inf (p = 0) or, for a zero index, z = p = NaN, as in R.

The categorical NRI at cut-points (e.g. 0.1, 0.2, 0.3) is the same
computation on the risk categories: a probability p is in category
``#(cuts <= p)`` (``findInterval``: p equal to a cut is in the higher
category, the "p >= threshold is positive" rule of the rest of the package).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import as_outcome, as_score


@dataclass(frozen=True)
class ImproveProb:
    """Every number of ``Hmisc::improveProb``, dots in R's names written as underscores (``nri.ev`` -> ``nri_ev``).

    ``nri_events``/``nri_nonevents`` (and ``se_``, ``z_``, ``p_`` of each) repeat R's ``nri.ev``/``nri.ne``
    under plain names; ``se``, ``z``, ``p``, ``ci`` are those of the overall NRI."""

    n: int
    na: int  # events (y = 1)
    nb: int  # non-events (y = 0)
    pup_ev: float
    pup_ne: float
    pdown_ev: float
    pdown_ne: float
    nri: float
    se_nri: float
    z_nri: float
    p_nri: float
    nri_ev: float
    se_nri_ev: float
    z_nri_ev: float
    p_nri_ev: float
    nri_ne: float
    se_nri_ne: float
    z_nri_ne: float
    p_nri_ne: float
    improveSens: float
    improveSpec: float
    idi: float
    se_idi: float
    z_idi: float
    p_idi: float
    conf_level: float = 0.95
    cuts: tuple[float, ...] | None = None  # None: continuous NRI

    @property
    def kind(self) -> str:
        return "continuous" if self.cuts is None else "categorical"

    nri_events = property(lambda s: s.nri_ev)
    se_nri_events = property(lambda s: s.se_nri_ev)
    z_nri_events = property(lambda s: s.z_nri_ev)
    p_nri_events = property(lambda s: s.p_nri_ev)
    nri_nonevents = property(lambda s: s.nri_ne)
    se_nri_nonevents = property(lambda s: s.se_nri_ne)
    z_nri_nonevents = property(lambda s: s.z_nri_ne)
    p_nri_nonevents = property(lambda s: s.p_nri_ne)
    se = property(lambda s: s.se_nri)
    z = property(lambda s: s.z_nri)
    p = property(lambda s: s.p_nri)
    improve_sens = property(lambda s: s.improveSens)
    improve_spec = property(lambda s: s.improveSpec)

    def ci(self, which: str = "nri") -> tuple[float, float]:
        """index -+ qnorm((1 + conf)/2) se for "nri", "nri_ev", "nri_ne" or "idi" (``print.improveProb``)."""
        m, se = getattr(self, which), getattr(self, f"se_{which}")
        q = norm.ppf((1 + self.conf_level) / 2)
        return float(m - q * se), float(m + q * se)

    def __getitem__(self, key: str):
        """R-style access: ``r["se.nri"]``, ``r["nri.ev"]``, ``r["improveSens"]``."""
        return getattr(self, key.replace(".", "_"))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kind"] = self.kind
        out["cuts"] = list(self.cuts) if self.cuts is not None else None
        for w in ("nri", "nri_ev", "nri_ne", "idi"):
            out[f"ci_{w}"] = list(self.ci(w))
        return out


def _div(a: float, b: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _zp(m: float, se: float) -> tuple[float, float]:
    z = _div(m, se)
    return z, float(2.0 * norm.cdf(-abs(z))) if not np.isnan(z) else float("nan")


def _sqrt(v: float) -> float:
    return float(np.sqrt(v)) if v >= 0 else float("nan")  # R: sqrt of a negative is NaN


def _inputs(y, x1, x2):
    yy = as_outcome(y)
    a = as_score(x1, len(yy), "p_old")
    b = as_score(x2, len(yy), "p_new")
    n1 = int(yy.sum())
    if n1 == 0 or n1 == len(yy):
        raise CeusError("y must have two values: 0 and 1 (reclassification needs events and non-events)")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    if lo < 0 or hi > 1:
        raise CeusError("p_old and p_new must be probabilities in [0, 1]")
    return yy, a, b


def _nri_part(d: np.ndarray, sign: int) -> tuple[int, int, float, float]:
    """(n_up, n_down, nri part, variance) of one class; sign +1 for events, -1 for non-events."""
    n = len(d)
    up, down = int(np.sum(d > 0)), int(np.sum(d < 0))
    nri = up / n - down / n if sign > 0 else down / n - up / n
    var = (up + down) / float(n) ** 2 - float(up - down) ** 2 / float(n) ** 3
    return up, down, nri, var


def _idi(da: np.ndarray, db: np.ndarray) -> tuple[float, float]:
    with np.errstate(invalid="ignore", divide="ignore"):
        va = np.var(da, ddof=1) / len(da) if len(da) > 1 else float("nan")  # R: var of one value is NA
        vb = np.var(db, ddof=1) / len(db) if len(db) > 1 else float("nan")
    return float(np.mean(da) - np.mean(db)), _sqrt(va + vb) if np.isfinite(va + vb) else float("nan")


def improve_prob(y, p_old, p_new, conf_level: float = 0.95) -> ImproveProb:
    """``Hmisc::improveProb(p_old, p_new, y)``: continuous NRI (events, non-events, overall) and IDI."""
    yy, a, b = _inputs(y, p_old, p_new)
    return _improve(yy, b - a, conf_level, None)


def _improve(yy, d, conf_level, cuts) -> ImproveProb:
    ev, ne = yy == 1, yy == 0
    up_e, down_e, nri_e, v_e = _nri_part(d[ev], 1)
    up_n, down_n, nri_n, v_n = _nri_part(d[ne], -1)
    na, nb = int(ev.sum()), int(ne.sum())
    nri = up_e / na - down_e / na - (up_n / nb - down_n / nb)
    se_e, se_n, se = _sqrt(v_e), _sqrt(v_n), _sqrt(v_e + v_n)
    idi, se_idi = _idi(d[ev], d[ne])
    return ImproveProb(len(yy), na, nb, up_e / na, up_n / nb, down_e / na, down_n / nb,
                       nri, se, *_zp(nri, se), nri_e, se_e, *_zp(nri_e, se_e), nri_n, se_n, *_zp(nri_n, se_n),
                       float(np.sum(d[ev]) / na), float(-np.sum(d[ne]) / nb), idi, se_idi, *_zp(idi, se_idi),
                       conf_level, cuts)


def risk_category(p, cuts, right: bool = False) -> np.ndarray:
    """Category 0..len(cuts) of each probability: the number of cuts <= p (R ``findInterval``); with
    ``right=True`` the number of cuts < p (R ``cut(p, c(-Inf, cuts, Inf), right = TRUE)``: p on a cut goes down)."""
    c = _cuts(cuts)
    return np.searchsorted(c, np.asarray(p, dtype=float), side="left" if right else "right")


def _cuts(cuts) -> np.ndarray:
    c = np.asarray(cuts, dtype=float).ravel()
    if c.size == 0 or not np.all(np.isfinite(c)) or np.any(np.diff(c) <= 0) or c[0] <= 0 or c[-1] >= 1:
        raise CeusError(f"cut-points must be increasing probabilities strictly between 0 and 1, got {list(c)}")
    return c


def nri(y, p_old, p_new, cuts=None, conf_level: float = 0.95, right: bool = False) -> ImproveProb:
    """Net reclassification improvement of p_new over p_old: continuous (``cuts=None``) or categorical.

    Categorical: ``improveProb`` applied to the risk categories (``risk_category``; a risk equal to a
    cut is in the higher category unless ``right=True``), so only moves across a cut-point count. The
    IDI fields then describe the category codes and are not the IDI; use :func:`idi` for it."""
    yy, a, b = _inputs(y, p_old, p_new)
    if cuts is None:
        return _improve(yy, b - a, conf_level, None)
    c = _cuts(cuts)
    k = len(c)
    ca, cb = risk_category(a, c, right) / k, risk_category(b, c, right) / k  # scaled to [0, 1] as improveProb requires
    return _improve(yy, cb - ca, conf_level, tuple(float(v) for v in c))


def continuous_nri(y, p_old, p_new, conf_level: float = 0.95) -> ImproveProb:
    """The continuous (category-free) NRI: ``nri(y, p_old, p_new)``."""
    return nri(y, p_old, p_new, None, conf_level)


def categorical_nri(y, p_old, p_new, cuts, conf_level: float = 0.95, right: bool = False) -> ImproveProb:
    """The NRI over risk categories at ``cuts``: ``nri(y, p_old, p_new, cuts)``."""
    return nri(y, p_old, p_new, cuts, conf_level, right)


@dataclass(frozen=True)
class IDI:
    """Integrated discrimination improvement (difference of discrimination slopes), as ``improveProb``."""

    idi: float
    se: float
    z: float
    p: float
    ci: tuple[float, float]
    improveSens: float  # mean change in risk among events
    improveSpec: float  # minus the mean change among non-events
    n: int
    na: int
    nb: int
    conf_level: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)


def idi(y, p_old, p_new, conf_level: float = 0.95) -> IDI:
    """IDI of p_new over p_old with SE, z and p (``Hmisc::improveProb``)."""
    r = improve_prob(y, p_old, p_new, conf_level)
    return IDI(r.idi, r.se_idi, r.z_idi, r.p_idi, r.ci("idi"), r.improveSens, r.improveSpec, r.n, r.na, r.nb, conf_level)
