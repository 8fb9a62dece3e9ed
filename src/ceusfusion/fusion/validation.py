"""Optimism-corrected internal validation of DL_combined, by a method valid for the model that was fitted.

``internal_validation`` chooses (``validation_method``): Harrell's bootstrap when the procedure is a single
penalised logistic family (``classifiers: [lr]``), refitting the whole pipeline with its hyperparameters
re-tuned in every resample; otherwise (a choice among families, or a flexible family that memorises its
training rows, for which the bootstrap under-corrects) repeated grouped nested CV of the whole procedure,
family choice included (``fusion.nested``). Either is bounded by a fit budget (``FIT_BUDGET`` LASSO
fits) that sets the number of resamples or repeats, recorded with the result.

Harrell's bootstrap (``validate_fusion``): in every resample of the training patients the chosen family's pipeline is
refitted from scratch exactly as the final model was (``pipeline.fit_search``:
columns → scaler → LASSO with its penalty re-chosen by inner CV → classifier
with its hyperparameters re-chosen by the inner grid search), then scored on
the resample (training) and on the original training rows (test); see
``ceusfusion.stats.optimism``. It refits one family (``internal_validation``
uses it only when ``lr`` is the single family compared, so nothing was chosen
among families; ``params`` can hold the hyperparameters too, which no longer
validates the fitted procedure and is kept only for comparison).
Resamples are drawn by patient group, so a patient's nodules stay together and
the inner CVs (split by the same groups) never split a duplicated patient.
A grid with a single point needs no search: the pipeline is then fitted
directly, which gives the very model ``GridSearchCV`` would refit.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
import sklearn
from scipy.special import logit
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import ParameterGrid
from sklearn.pipeline import Pipeline

from ceusfusion.core.errors import CeusError
from ceusfusion.fusion.families import get_family, parse_families
from ceusfusion.fusion.inputs import FusionData
from ceusfusion.fusion.lasso import groups_per_class
from ceusfusion.fusion.nested import nested_problem, nested_validate
from ceusfusion.fusion.pipeline import FusionConfig, fit_search, make_search
from ceusfusion.stats.optimism import PROB_CLIP, bootstrap_validate

HELD = ("columns → StandardScaler → LASSO (penalty re-chosen by inner CV) → classifier with its hyperparameters held at "
        "the values chosen on all training rows ({params}); the classifier family is held at the one the outer CV chose")
WHAT_IS_REFITTED = ("columns → StandardScaler → LASSO (penalty re-chosen by inner CV) → classifier (hyperparameters "
                    "re-chosen by the inner grid search); the classifier family is held at the one the outer CV chose")


FOLD_MARGIN = 3  # patients per class needed per inner fold, so that resamples (~63 % distinct) keep every fold


def same_procedure_problem(data: FusionData, cfg: FusionConfig) -> str | None:
    """Why bootstrap refits would not rerun the fitted procedure, or None.

    The inner CVs reduce their folds to the distinct patients of the smaller class; a bootstrap
    sample holds about 63 % of the distinct patients, so with fewer than FOLD_MARGIN x inner_folds
    patients per class the resampled pipelines would use fewer folds than the model being validated."""
    tr = data.frame.index[data.frame["set"] == "train"].to_numpy()
    n_min = groups_per_class(data.frame.loc[tr, "y"].to_numpy(), data.groups.loc[tr].to_numpy())
    need = FOLD_MARGIN * cfg.inner_folds
    if n_min < need:
        return (f"the smaller class has {n_min} training patients; bootstrap samples (about 63 % distinct patients) would "
                f"cut the {cfg.inner_folds} inner folds, so the refits would not be the fitted procedure (needs {need})")
    return None


def _point(points: list[dict], chosen: dict) -> dict:
    """The grid point with the chosen hyperparameters (JSON turned tuples into lists), else the chosen values."""
    want = {f"clf__{k}": (tuple(v) if isinstance(v, list) else v) for k, v in chosen.items()}
    for p in points:
        if {k: (tuple(v) if isinstance(v, list) else v) for k, v in p.items()} == want:
            return p
    return want


def refit_pipeline(family: str, data: FusionData, cfg: FusionConfig, X, y, groups, memory=None,
                   params: dict | None = None) -> Pipeline:
    """The chosen family's pipeline fitted on rows X as ``pipeline.refit`` fits it (no LASSO path).

    ``params`` (the classifier's chosen hyperparameters, fusion.json ``best_params``) holds them fixed:
    the grid is then that one point, and only the grid search is skipped; None re-tunes them."""
    groups = np.asarray(groups).astype(str)
    search = make_search(family, data, cfg, y, groups, memory)
    points = list(ParameterGrid(search.param_grid))
    if params is not None:
        points = [_point(points, params)]
    if len(points) > 1:
        return fit_search(family, data, cfg, X, y, groups, memory).best_estimator_
    params = {"lasso__groups": groups}
    if get_family(family).takes_groups:
        params["clf__groups"] = groups
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*feature names.*")
        return clone(search.estimator).set_params(memory=None, **points[0]).fit(X, y, **params)


def validate_fusion(data: FusionData, cfg: FusionConfig, family: str, B: int = 200, seed: int = 0,
                    params: dict | None = None, say=None) -> dict:
    """``rms::validate``-style table of the DL_combined pipeline on the training rows (apparent, optimism,
    corrected c-index, calibration slope and intercept, Brier, ...), with its provenance.

    ``params``: hold the classifier's hyperparameters at these chosen values (fusion.json ``best_params``)
    instead of re-running the grid search in every resample (a grid of one point; the scaler and the
    LASSO, its penalty CV included, are still refitted). None: the full nested search per resample.
    ``say``: prints a progress line about every tenth resample."""
    if B < 1:
        raise CeusError(f"bootstrap resamples must be at least 1, got {B}")
    problem = same_procedure_problem(data, cfg)
    if problem:
        raise CeusError(f"optimism-corrected validation not run: {problem}")
    tr = data.frame.index[data.frame["set"] == "train"].to_numpy()
    X = data.frame.loc[tr, data.columns].reset_index(drop=True)
    y = data.frame.loc[tr, "y"].to_numpy().astype(int)
    g = data.groups.loc[tr].astype(str).to_numpy()
    t0 = time.perf_counter()
    # sklearn's argument checks are skipped (the same fits, about 20 % faster: the rows were checked once)
    with tempfile.TemporaryDirectory(prefix="ceusfusion-boot-") as tmp, \
            sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        memory = joblib.Memory(tmp, verbose=0)

        def fit(Xb, yb, gb):
            model = refit_pipeline(family, data, cfg, Xb, yb, gb, memory, params)
            return lambda Z: logit(np.clip(model.predict_proba(Z)[:, 1], PROB_CLIP, 1 - PROB_CLIP))

        v = bootstrap_validate(X, y, fit, B=B, seed=seed, groups=g, progress=_every_tenth(say, t0))
    return {**v.to_dict(), "validation": "harrell", "model": cfg.name, "family": family, "n": int(len(y)), "n_pos": int(y.sum()),
            "n_groups": int(len(set(g))), "resampled": "patient groups (with replacement)",
            "refitted": WHAT_IS_REFITTED if params is None else HELD.format(params=json.dumps(params)),
            "hyperparameters": "re-tuned in every resample" if params is None else params,
            "method": "Harrell's bootstrap optimism correction (rms::validate, method 'boot')",
            "seconds": round(time.perf_counter() - t0, 1)}


def _every_tenth(say, t0: float):
    """A ``bootstrap_validate`` progress callback: a line about every tenth of the resamples."""
    def report(done: int, total: int) -> None:
        if say is not None and (done == total or done % max(1, total // 10) == 0):
            say(f"    bootstrap refit {done}/{total} ({time.perf_counter() - t0:.0f} s)")
    return report


# --------------------------------------------------------------------------- which method, at what cost

FIT_BUDGET = 150  # LASSO-front fits (each with its penalty CV) an internal validation may spend; see front_fits
# (the demo: 2 nested-CV repeats, as long as the 200 held-hyperparameter bootstrap refits it replaced)
MAX_REPEATS = 10  # nested CV repeats at most when the budget is not binding


def validation_method(cfg: FusionConfig) -> str:
    """"harrell" for a single penalised logistic family (``lr``), where the bootstrap is valid; "nested_cv" when
    families are compared or the family is flexible (it memorises its training rows)."""
    return "harrell" if parse_families(cfg.classifiers) == ("lr",) else "nested_cv"


def front_fits(cfg: FusionConfig, method: str) -> int:
    """LASSO-front fits of one bootstrap resample (Harrell) or one nested-CV repeat: the cost unit of the budget.

    The front (scaler → LASSO with its own penalty CV) dominates a refit and is shared by every grid point and
    family on the same rows: a grid search fits it once per inner fold and once on its whole training part;
    ``fit_procedure`` runs a grid search on each of its ``folds`` CV training parts and on all its rows."""
    per_search = cfg.inner_folds + 1
    if method == "harrell":
        return per_search
    return cfg.folds * (cfg.folds + 1) * per_search


def validation_plan(cfg: FusionConfig) -> dict:
    """The method and how many resamples (Harrell: ``bootstrap``, lowered to the budget) or repeats (nested CV:
    ``validation_repeats``, or as many as the budget allows, 1 to MAX_REPEATS), with the cost recorded."""
    method = validation_method(cfg)
    cost = front_fits(cfg, method)
    affordable = max(1, FIT_BUDGET // cost)
    if method == "harrell":
        n, asked = min(cfg.bootstrap, affordable), cfg.bootstrap
    else:
        asked = cfg.validation_repeats
        n = asked if asked is not None else min(MAX_REPEATS, affordable)
    return {"validation": method, "n": n, "requested": asked, "fit_budget": FIT_BUDGET, "front_fits_per_unit": cost,
            "front_fits": n * cost}


def internal_validation(data: FusionData, cfg: FusionConfig, family: str, seed: int = 0, model=None,
                        say=None, n_jobs: int = 1) -> dict:
    """metrics.json ``internal_validation`` of the fitted DL_combined procedure (``family``: the one it chose;
    ``model``: its fitted model or the path of its model.joblib, else refitted), by ``validation_plan``'s method; a record with ``skipped``
    (and why) when the data are too small for the refits to be the fitted procedure. ``n_jobs``: processes for
    the nested CV's outer fits (its numbers do not depend on it; the bootstrap runs in this process)."""
    plan = validation_plan(cfg)
    method = plan["validation"]
    if isinstance(model, (str, Path)):  # the fuse stage's model.joblib (our own output), when there
        model = joblib.load(model) if Path(model).is_file() else None
    problem = same_procedure_problem(data, cfg) if method == "harrell" else nested_problem(data, cfg)
    if problem:
        return {"skipped": problem, **plan, "model": cfg.name, "family": family}
    if say is not None:
        unit = "bootstrap refits (Harrell)" if method == "harrell" else "repeats of grouped nested CV"
        say(f"  internal validation of {cfg.name} ({family}): {plan['n']} {unit}, {plan['front_fits']} LASSO fits "
            f"(budget {FIT_BUDGET})")
    if method == "harrell":
        out = validate_fusion(data, cfg, family, B=plan["n"], seed=seed, say=say)
        out["B_requested"] = plan["requested"]
    else:
        out = nested_validate(data, cfg, plan["n"], seed=seed, model=model, say=say, n_jobs=n_jobs)
        out["n_jobs"] = n_jobs
        out["family"] = family
    c = out["indexes"]["C"]["index_corrected"]
    out["selection_corrected"] = {"auc": c, "ci": None, "method": out["method"],
                                  "n_candidates": len(parse_families(cfg.classifiers))}
    return {**out, **{k: plan[k] for k in ("fit_budget", "front_fits_per_unit", "front_fits")},
            "requested": plan["requested"]}
