"""Selection-corrected cross-validated AUC: bootstrap bias-corrected CV (BBC-CV).

When the best of several candidates (architectures, classifier families) is chosen on the same
out-of-fold rows that then report its AUC, that AUC is the maximum of N noisy estimates: optimistic
even when every candidate is at chance. BBC-CV (Tsamardinos, Greasidou & Borboudakis 2018,
*Machine Learning* 107:1895-1922, Algorithm 1) corrects it without training anything again: resample
the rows of the out-of-fold prediction matrix, choose the candidate on the in-bag rows exactly as
the selection rule would (here: highest AUC), and score that choice on the out-of-bag rows; the
mean over resamples is the estimate and its percentiles a (conservative) 95 % interval.

Rows are resampled by patient group, so a patient's cases are in-bag or out-of-bag together.
Each AUC is the Mann-Whitney statistic with the resample's multiplicities as weights (ties count
one half, as pROC), computed for every resample at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import check_binary
from ceusfusion.stats.clustered import resample_counts

METHOD = ("bootstrap bias-corrected CV (BBC-CV, Tsamardinos et al. 2018): the candidate with the highest AUC on "
          "each patient-level bootstrap sample of the out-of-fold predictions, scored on the patients left out of it")


@dataclass(frozen=True)
class SelectionCorrected:
    """The BBC-CV estimate and what it was computed from."""

    auc: float  # mean out-of-bag AUC of the in-bag choice
    ci: tuple[float, float]  # 2.5 and 97.5 percentiles of the out-of-bag AUCs
    apparent: float  # the best candidate's AUC on all rows (what selection reports uncorrected)
    n_candidates: int
    n_boot: int  # resamples used (those with both classes out of bag)
    chosen_share: list[float]  # how often each candidate was chosen in-bag
    method: str = METHOD

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d


def weighted_aucs(score: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of one score column under each row of ``weights`` (B x n case multiplicities); NaN without both classes.

    Sorting once and summing weights per distinct score value makes B AUCs cost one matrix product."""
    values, inverse = np.unique(score, return_inverse=True)
    onehot = np.zeros((len(score), len(values)))
    onehot[np.arange(len(score)), inverse] = 1.0
    pos = (weights * (y == 1)) @ onehot  # B x U: positive weight at each distinct value
    neg = (weights * (y == 0)) @ onehot
    below = np.cumsum(neg, axis=1) - neg
    num = np.sum(pos * (below + 0.5 * neg), axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def group_multiplicities(groups: np.ndarray, B: int, rng: np.random.Generator) -> np.ndarray:
    """B x n: how many times each row is drawn when patient groups are resampled with replacement."""
    _, gi = np.unique(groups, return_inverse=True)
    return resample_counts(int(gi.max()) + 1, B, rng)[:, gi].astype(float)


def bbc_cv(oof, y, groups=None, B: int = 1000, seed: int = 0) -> SelectionCorrected:
    """BBC-CV of the selection "highest AUC among the columns of ``oof``" (n rows x C candidates).

    ``groups``: the patient of each row (default: every row its own patient). Resamples whose in-bag
    or out-of-bag rows lack a class are skipped; fewer than B/2 usable resamples is an error."""
    oof = np.asarray(oof, dtype=float)
    if oof.ndim == 1:
        oof = oof[:, None]
    y, _ = check_binary(y)
    if oof.shape[0] != len(y) or np.isnan(oof).any():
        raise CeusError(f"out-of-fold matrix of shape {oof.shape} does not match {len(y)} outcomes, or has missing values")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    w = group_multiplicities(groups, B, rng)
    oob = (w == 0).astype(float)
    inbag = np.stack([weighted_aucs(oof[:, c], y, w) for c in range(oof.shape[1])], axis=1)  # B x C
    outbag = np.stack([weighted_aucs(oof[:, c], y, oob) for c in range(oof.shape[1])], axis=1)
    usable = ~np.isnan(inbag).any(axis=1) & ~np.isnan(outbag).any(axis=1)
    if usable.sum() < B / 2:
        raise CeusError(f"only {int(usable.sum())} of {B} bootstrap samples hold both classes in and out of the bag: "
                        "too few cases for a selection-corrected AUC")
    choice = np.argmax(inbag[usable], axis=1)  # the first candidate wins a tie, as in selection
    scores = outbag[usable][np.arange(int(usable.sum())), choice]
    ones = np.ones((1, len(y)))
    apparent = max(float(weighted_aucs(oof[:, c], y, ones)[0]) for c in range(oof.shape[1]))
    share = np.bincount(choice, minlength=oof.shape[1]) / len(choice)
    lo, hi = np.percentile(scores, [2.5, 97.5])
    return SelectionCorrected(auc=float(scores.mean()), ci=(float(lo), float(hi)), apparent=apparent,
                              n_candidates=int(oof.shape[1]), n_boot=int(usable.sum()),
                              chosen_share=[float(s) for s in share])
