"""Decision curve analysis: net benefit of a model, of treating all and of treating none.

``NB(pt) = TP/n - FP/n * pt/(1 - pt)`` with ``score >= pt`` counted positive,
at the thresholds ``i/100`` for i = 1..99 exactly (``np.arange(1, 100) / 100``;
``np.arange(0.01, 1, 0.01)`` differs by an ulp at 25 of them, which flips
patients whose score equals a threshold). Agrees with the dcurves package.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.stats._checks import check_binary

THRESHOLDS = np.arange(1, 100) / 100


def net_benefit(y, score, thresholds=None) -> pd.DataFrame:
    """Columns threshold, tp, fp, net_benefit for one model."""
    yy, (s,) = check_binary(y, score, both_classes=False)
    t = THRESHOLDS if thresholds is None else np.asarray(thresholds, float)
    n = len(yy)
    ps, ns = np.sort(s[yy == 1]), np.sort(s[yy == 0])
    tp = len(ps) - np.searchsorted(ps, t, "left")
    fp = len(ns) - np.searchsorted(ns, t, "left")
    nb = tp / n - fp / n * (t / (1 - t))
    return pd.DataFrame({"threshold": t, "tp": tp, "fp": fp, "net_benefit": nb})


def treat_all(y, thresholds=None) -> np.ndarray:
    """Net benefit of treating everyone: prevalence - (1 - prevalence) * pt/(1 - pt)."""
    t = THRESHOLDS if thresholds is None else np.asarray(thresholds, float)
    prev = float(np.mean(np.asarray(y, float)))
    return prev - (1 - prev) * (t / (1 - t))


def decision_curves(y, scores: dict, thresholds=None) -> pd.DataFrame:
    """Long table (model, threshold, net_benefit, tp, fp) for each model plus "treat all" and "treat none"."""
    t = THRESHOLDS if thresholds is None else np.asarray(thresholds, float)
    frames = []
    for name, s in scores.items():
        d = net_benefit(y, s, t)
        d.insert(0, "model", name)
        frames.append(d)
    yy, _ = check_binary(y, both_classes=False)
    n1 = int(yy.sum())
    frames.append(pd.DataFrame({"model": "treat all", "threshold": t, "tp": n1, "fp": len(yy) - n1, "net_benefit": treat_all(yy, t)}))
    frames.append(pd.DataFrame({"model": "treat none", "threshold": t, "tp": 0, "fp": 0, "net_benefit": np.zeros(len(t))}))
    return pd.concat(frames, ignore_index=True)


def net_interventions_avoided(y, score, thresholds=None, nper: int = 1) -> pd.DataFrame:
    """Net interventions avoided per ``nper`` patients (dcurves ``net_intervention_avoided``; its default nper = 1,
    ``nper=100`` gives "per 100 patients").

    ``(NB_model - NB_treat_all) / (pt / (1 - pt)) * nper``: how many fewer interventions the model
    leads to than treating everyone, at no loss of true positives. Columns threshold, tp, fp,
    net_benefit, net_benefit_all, net_intervention_avoided."""
    d = net_benefit(y, score, thresholds)
    t = d["threshold"].to_numpy()
    d["net_benefit_all"] = treat_all(check_binary(y, both_classes=False)[0], t)
    d["net_intervention_avoided"] = (d["net_benefit"] - d["net_benefit_all"]) / (t / (1 - t)) * nper
    return d


CLINICAL_THRESHOLDS = (0.10, 0.15, 0.20, 0.25, 0.30)  # the reference (OLNM) study's, at a prevalence of about 0.2
# Default threshold probabilities of a cohort: the odds at the prevalence times these factors (below, the
# categorical NRI's cut points). At 0.2 they give 0.11, 0.15, 0.20, 0.26, 0.33 (the reference study's range).
PREVALENCE_ODDS_FACTORS = (0.5, 2 ** -0.5, 1.0, 2 ** 0.5, 2.0)
NRI_ODDS_FACTORS = (0.5, 1.0, 2.0)
THRESHOLD_RULE = ("threshold odds = the prevalence's odds x 1/2, 1/sqrt(2), 1, sqrt(2), 2 (NRI cut points x 1/2, 1, 2), "
                  "rounded to 0.01: the range around the prevalence, where treating everyone stops paying "
                  "(at a threshold equal to the prevalence, treating all and treating none have the same net benefit)")


def thresholds_around(prevalence: float, factors=PREVALENCE_ODDS_FACTORS) -> tuple[float, ...]:
    """Threshold probabilities around ``prevalence``: odds ``prevalence / (1 - prevalence)`` times each factor,
    rounded to 0.01 (the decision-curve grid), kept within [0.01, 0.99], distinct and increasing.

    Fixed thresholds (0.1-0.3) suit a cohort of prevalence about 0.2 only: at a prevalence of 0.83 every
    model recommends the intervention to nearly every case below 0.3, so nothing is avoided at any of them."""
    p = float(prevalence)
    if not 0 < p < 1:
        raise CeusError(f"thresholds from the prevalence need a prevalence strictly between 0 and 1, got {p:g}")
    odds = p / (1 - p)
    out = sorted({min(0.99, max(0.01, round(o / (1 + o), 2))) for o in (odds * f for f in factors)})
    return tuple(out)


def interventions_table(y, score, thresholds=CLINICAL_THRESHOLDS, nper: int = 100) -> pd.DataFrame:
    """At each clinically used threshold: interventions done / avoided and events missed per ``nper`` patients.

    Compared with treating everyone (every patient with the outcome gets the intervention): at
    ``score >= pt`` the model recommends ``interventions`` (tp + fp) and spares
    ``interventions_avoided`` (tn + fn), of which ``events_missed`` (fn) had the event;
    ``net_intervention_avoided`` is the decision-curve summary of the two."""
    yy, (s,) = check_binary(y, score, both_classes=False)
    t = np.asarray(thresholds, dtype=float)
    d = net_interventions_avoided(yy, s, t, nper=nper)
    n, n1 = len(yy), int(yy.sum())
    tp, fp = d["tp"].to_numpy(), d["fp"].to_numpy()
    fn, tn = n1 - tp, (n - n1) - fp
    d["interventions"] = (tp + fp) / n * nper
    d["interventions_avoided"] = (tn + fn) / n * nper
    d["unnecessary_interventions_avoided"] = tn / n * nper
    d["events_missed"] = fn / n * nper
    d["events_detected"] = tp / n * nper
    d["nper"] = nper
    return d


net_intervention_avoided = net_interventions_avoided  # dcurves' (singular) name
