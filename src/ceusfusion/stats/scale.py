"""Is the test set scored on the scale the model was developed on? The SD ratio of the logits.

A model refitted on every training case (or a fold mean) can score unseen patients with logits more
spread out, or more compressed, than its out-of-fold training logits; the threshold chosen on the
out-of-fold scale then no longer means the same risk on test. This measures it: SD(test logits) /
SD(out-of-fold logits) with a seeded bootstrap CI (each set resampled on its own, whole patients when
groups are given), and the test set's calibration-in-the-large (rms ``val.prob``'s intercept with the
logit as offset). A ratio outside ``SCALE_RANGE`` is flagged; nothing is corrected here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.special import expit, logit

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import as_outcome, as_score
from ceusfusion.stats.calibration import calibration_in_the_large
from ceusfusion.stats.clustered import group_codes, resample_counts
from ceusfusion.stats.optimism import PROB_CLIP

SCALE_RANGE = (0.8, 1.25)  # test/out-of-fold SD ratio taken as "the same scale"


@dataclass(frozen=True)
class ScaleCheck:
    sd_oof: float
    sd_test: float
    ratio: float
    ratio_ci: tuple[float, float]
    ok: bool
    citl: float
    n_oof: int
    n_test: int
    range: tuple[float, float] = SCALE_RANGE
    B: int = 2000
    seed: int = 0
    grouped: bool = False
    conf_level: float = 0.95
    note: str | None = field(default=None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio_ci"], d["range"] = list(self.ratio_ci), list(self.range)
        return d


def prob_logit(prob) -> np.ndarray:
    """The logit of a probability clipped at PROB_CLIP (the package's LP convention), so 0 and 1 stay finite."""
    return logit(np.clip(np.asarray(prob, float), PROB_CLIP, 1 - PROB_CLIP))


def _group_sums(x: np.ndarray, groups, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per resampling unit (a row, or a patient): row count, sum and sum of squares of the centred values."""
    codes, G = group_codes(groups, n) if groups is not None else (np.arange(n), n)
    xc = x - x.mean()
    return (np.bincount(codes, minlength=G).astype(float), np.bincount(codes, weights=xc, minlength=G),
            np.bincount(codes, weights=xc * xc, minlength=G))


def bootstrap_sd(x, groups=None, B: int = 2000, rng=None) -> np.ndarray:
    """SD (ddof 1) of x in each of B bootstrap resamples of its rows or, with groups, of its patients.

    Vectorised: each replicate's multiplicities times the per-unit sums (one matrix product)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    x = np.asarray(x, float)
    cnt, s1, s2 = _group_sums(x, groups, len(x))
    G = len(cnt)
    mult = resample_counts(G, B, rng).astype(float)
    nw, t1, t2 = mult @ cnt, mult @ s1, mult @ s2
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (t2 - t1 * t1 / nw) / (nw - 1)
    return np.sqrt(np.maximum(var, 0.0))


def _citl(y, lp) -> tuple[float, str | None]:
    if y is None:
        return float("nan"), "no test outcomes given: calibration-in-the-large not computed"
    try:
        return calibration_in_the_large(y, expit(lp)), None
    except CeusError as exc:
        return float("nan"), f"calibration-in-the-large undefined: {exc}"


def logit_scale(oof_logit, test_logit, y_test=None, groups_oof=None, groups_test=None, B: int = 2000, seed: int = 0,
                conf_level: float = 0.95) -> ScaleCheck:
    """SD(test logits) / SD(out-of-fold logits) with a percentile bootstrap CI, and the test CITL.

    The two sets are resampled independently (they are different patients); ``ok`` says whether the
    ratio lies in SCALE_RANGE."""
    xo = as_score(oof_logit, len(np.asarray(oof_logit)), "oof_logit")
    xt = as_score(test_logit, len(np.asarray(test_logit)), "test_logit")
    if len(xo) < 2 or len(xt) < 2:
        raise CeusError(f"logit scale needs at least 2 rows in each set (out-of-fold {len(xo)}, test {len(xt)})")
    y = as_outcome(y_test, "y_test") if y_test is not None else None
    if y is not None and len(y) != len(xt):
        raise CeusError(f"y_test has {len(y)} values; test_logit has {len(xt)}")
    sd_o, sd_t = float(np.std(xo, ddof=1)), float(np.std(xt, ddof=1))
    rng = np.random.default_rng(seed)
    bo, bt = bootstrap_sd(xo, groups_oof, B, rng), bootstrap_sd(xt, groups_test, B, rng)
    note = None
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = sd_t / sd_o if sd_o > 0 else float("nan")
        rb = bt / bo
    rb = rb[np.isfinite(rb)]
    a = (1 - conf_level) / 2
    ci = (float(np.quantile(rb, a)), float(np.quantile(rb, 1 - a))) if rb.size else (float("nan"),) * 2
    if not sd_o > 0:
        note = "the out-of-fold logits are constant: no ratio"
    citl, citl_note = _citl(y, xt)
    note = "; ".join(n for n in (note, citl_note) if n) or None
    ok = bool(SCALE_RANGE[0] <= ratio <= SCALE_RANGE[1])
    return ScaleCheck(sd_o, sd_t, float(ratio), ci, ok, citl, len(xo), len(xt), SCALE_RANGE, B, seed,
                      groups_oof is not None or groups_test is not None, conf_level, note)
