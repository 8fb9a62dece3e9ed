"""Repeated grouped nested cross-validation of the whole DL_combined procedure.

Why not Harrell's bootstrap here: a flexible family (forests, boosting, an MLP,
KNN, an SVM) memorises its training rows, and a bootstrap sample shares about
63 % of its patients with the original rows on which each refit is "tested", so
the optimism is under-estimated (on pure noise the held-family bootstrap printed
corrected c-indexes of 0.84-0.90). Choosing a family among several on the same
rows adds an optimism the held-family bootstrap cannot see at all.

So the procedure is validated on patients it never saw: in each repeat the
training patients are split by StratifiedGroupKFold (``cfg.folds`` folds,
random state ``seed + repeat``); on each outer training part exactly what
``run_fusion`` does is rerun (``pipeline.fit_procedure``: every family's nested
search on its own outer CV, the family with the best mean CV AUC, refitted on
the whole part), and the held-out patients are scored. The indexes are those of
``rms::validate(method = "crossvalidation")`` (``stats.optimism.cv_validate``):
training = each refit on its own training part, test = on the held-out part;
the corrected index is the held-out mean itself (``estimate = "held_out"``),
not rms's apparent - (training - test): the family chosen on all rows may not
be the one chosen on a training part, so their apparent indexes measure
different models (on pure noise, lgbm chosen on all rows with apparent C 0.86
and lr on most parts gave 0.64 by the rms difference, 0.38 held out). Each
repeat gives its own estimate, and their spread is reported. ``B`` in the
record counts the outer fits (repeats x folds).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import pandas as pd
import sklearn
from scipy.special import logit
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils.parallel import Parallel, delayed

from ceusfusion.core.errors import CeusError
from ceusfusion.fusion.families import parse_families
from ceusfusion.fusion.inputs import FusionData
from ceusfusion.fusion.lasso import groups_per_class
from ceusfusion.fusion.pipeline import FusionConfig, fit_procedure
from ceusfusion.stats.optimism import PROB_CLIP, cv_validate, discrimination_indexes

METHOD = ("repeated grouped nested cross-validation of the whole procedure (rms::validate method "
          "'crossvalidation', repeated; outer folds by patient)")
WHAT_IS_REFITTED = ("the whole run_fusion procedure on each outer training part: columns → StandardScaler → LASSO "
                    "(penalty re-chosen by inner CV) → every classifier family's grid search on its own outer CV, the "
                    "family with the best mean CV AUC ({families}) refitted on the part")


def part(data: FusionData, rows) -> FusionData:
    """The training rows ``rows`` (index labels) as a data set of their own, every row a training row (indexed
    0..n-1, as the fusion's frame is)."""
    frame = data.frame.loc[rows].assign(set="train").reset_index(drop=True)
    return FusionData(frame=frame, deep=data.deep, numeric=data.numeric, categorical=data.categorical,
                      groups=data.groups.loc[rows].reset_index(drop=True), inputs=data.inputs,
                      group_source=data.group_source)


def training_rows(data: FusionData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index labels, outcomes and patient groups (as text) of the training rows."""
    tr = data.frame.index[data.frame["set"] == "train"].to_numpy()
    return tr, data.frame.loc[tr, "y"].to_numpy().astype(int), data.groups.loc[tr].astype(str).to_numpy()


def nested_splits(y, groups, folds: int, repeats: int, seed: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(repeat, train, held_out)`` row positions: StratifiedGroupKFold by patient, random state ``seed + repeat``."""
    out = []
    for r in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        out += [(r, a, b) for a, b in splitter.split(np.zeros(len(y)), y, groups)]
    return out


def nested_problem(data: FusionData, cfg: FusionConfig) -> str | None:
    """Why the nested refits would not rerun the fitted procedure, or None.

    Four CVs nest: the outer folds here (k = ``cfg.folds``), the procedure's own CV (k), its grid search's
    inner folds (i = ``inner_folds``) and, inside each, the LASSO penalty's (i). Each reduces its folds to
    the patients of the smaller class; the deepest must keep its i folds: n_min ((k-1)/k)^2 (i-1)/i >= i."""
    _, y, g = training_rows(data)
    n_min = groups_per_class(y, g)
    k, i = cfg.folds, cfg.inner_folds
    need = math.ceil(i * i / (i - 1) * (k / (k - 1)) ** 2 - 1e-9)
    if n_min < need:
        return (f"the smaller class has {n_min} training patients; the nested outer folds would cut the procedure's "
                f"{k} CV folds or its {i} inner folds (needs {need})")
    return None


def _fit_split(data: FusionData, cfg: FusionConfig, rows: np.ndarray, held: np.ndarray) -> tuple[str, np.ndarray | None]:
    """One outer fit: the procedure on training rows ``rows`` (labels); its logits on ``rows`` then ``held``.
    A fit that fails gives None (counted by ``cv_validate`` as a failed split)."""
    try:
        proc = fit_procedure(part(data, rows), cfg)
    except (CeusError, ValueError, ArithmeticError, np.linalg.LinAlgError) as e:
        return f"(fit failed: {e})", None
    p = proc.model.predict_proba(data.frame.loc[np.r_[rows, held], data.columns])[:, 1]
    return proc.chosen, logit(np.clip(p, PROB_CLIP, 1 - PROB_CLIP))


def _outer_fits(data: FusionData, cfg: FusionConfig, splits: list, n_jobs: int,
                say: Callable[[str], None] | None) -> list[tuple[str, pd.Series | None]]:
    """Every outer fit (in ``n_jobs`` processes; each is seeded, so the result does not depend on them), in split
    order, as (family chosen, logits by row label); a line per outer fold and per repeat as they finish."""
    tr, y, _ = training_rows(data)
    folds, repeats = cfg.folds, splits[-1][0] + 1
    jobs = (delayed(_fit_split)(data, cfg, tr[a], tr[b]) for _, a, b in splits)
    out, held, t0 = [], [], time.perf_counter()
    for (r, a, b), (chosen, lp) in zip(splits, Parallel(n_jobs=n_jobs, return_as="generator")(jobs)):
        out.append((chosen, None if lp is None else pd.Series(lp, index=np.r_[tr[a], tr[b]])))
        held.append(float("nan") if lp is None else discrimination_indexes(y[b], lp[len(a):])["C"])
        k = (len(out) - 1) % folds
        if say is not None:
            say(f"    repeat {r + 1}/{repeats}, outer fold {k + 1}/{folds}: chose {chosen}, held-out C {held[-1]:.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
            if k + 1 == folds:
                say(f"    repeat {r + 1}/{repeats} done: mean held-out C {np.nanmean(held[-folds:]):.3f}")
    return out


def nested_validate(data: FusionData, cfg: FusionConfig, repeats: int, seed: int = 0, model=None,
                    say: Callable[[str], None] | None = None, n_jobs: int = 1) -> dict:
    """The internal-validation record (``internal_validation`` of metrics.json) of the whole procedure by repeated
    grouped nested CV; ``model``: the procedure's fitted model (fusion's model.joblib), else refitted here;
    ``n_jobs``: processes for the outer fits (the numbers do not depend on it)."""
    if repeats < 1:
        raise CeusError(f"nested cross-validation needs at least 1 repeat, got {repeats}")
    problem = nested_problem(data, cfg)
    if problem:
        raise CeusError(f"nested cross-validation not run: {problem}")
    tr, y, g = training_rows(data)
    X = data.frame.loc[tr, data.columns]
    t0 = time.perf_counter()
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):  # reaches sklearn's workers
        final = model if model is not None else fit_procedure(part(data, tr), cfg).model
        apparent = logit(np.clip(final.predict_proba(X)[:, 1], PROB_CLIP, 1 - PROB_CLIP))
        splits = nested_splits(y, g, cfg.folds, repeats, seed)
        fits = _outer_fits(data, cfg, splits, n_jobs, say)
    done = iter(fits)

    def fit(Xb, yb, gb):  # the outer fits in split order, as cv_validate asks for them
        chosen, lp = next(done)
        if lp is None:
            raise CeusError(chosen)
        return lambda Z: lp.loc[Z.index].to_numpy()

    v = cv_validate(X, y, fit, splits, seed=seed, groups=g, apparent=apparent, estimate="held_out")
    return _record(v, cfg, [c for c, _ in fits], (y, g), time.perf_counter() - t0)


def _record(v, cfg: FusionConfig, chosen: list[str], yg, seconds: float) -> dict:
    """``Validation.to_dict`` plus what was refitted, the families chosen, and the spread over repeats."""
    y, g = yg
    families = parse_families(cfg.classifiers)
    per = v.per_repeat("C")
    for r in per:
        r["families_chosen"] = chosen[r["repeat"] * cfg.folds:(r["repeat"] + 1) * cfg.folds]
    corr = np.array([r["index_corrected"] for r in per], dtype=float)
    spread = {"sd": float(np.std(corr, ddof=1)) if len(corr) > 1 else None,
              "min": float(np.min(corr)), "max": float(np.max(corr))}
    return {**v.to_dict(), "per_repeat": per, "spread": spread, "method": METHOD, "validation": "nested_cv",
            "failed_fits": [c for c in chosen if c.startswith("(fit failed")],
            "repeats": len(per), "folds": cfg.folds, "model": cfg.name,
            "family": None, "families": list(families), "families_chosen": {f: chosen.count(f) for f in families},
            "n": int(len(y)), "n_pos": int(y.sum()), "n_groups": int(len(set(g))),
            "resampled": "patient groups (StratifiedGroupKFold outer folds, one seed per repeat)",
            "refitted": WHAT_IS_REFITTED.format(families=", ".join(families)),
            "hyperparameters": "re-tuned inside every outer training part", "seconds": round(seconds, 1)}
