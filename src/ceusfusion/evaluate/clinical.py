"""What a clinical statistician adds to metrics.json: reclassification, interventions avoided, performance
per centre and subgroup, sample-size adequacy, a nomogram of the DL + clinical logistic model, and (handed
in by the study) the optimism-corrected internal validation of DL_combined.

Every number comes from ``ceusfusion.stats`` (checked against Hmisc, rms, pmsampsize, dcurves and
metafor); this module only chooses the rows: pairs of models are compared on the patients both scored,
subgroups come from the cohort manifest joined on case_id, the sample-size check and the nomogram use
the training (development) rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logit

from ceusfusion.core.errors import CeusError
from ceusfusion.core.outcome import Outcome
from ceusfusion.ingest.cohort import read_manifest
from ceusfusion.stats import (
    CLINICAL_THRESHOLDS,
    THRESHOLD_RULE,
    auc_ci,
    cox_snell_r2,
    improve_prob,
    interventions_table,
    net_interventions_avoided,
    nomogram,
    nri,
    risk_category,
    sample_size_adequacy,
    subgroup_auc,
    thresholds_around,
)
from ceusfusion.stats.dca import NRI_ODDS_FACTORS, PREVALENCE_ODDS_FACTORS
from ceusfusion.stats.samplesize import max_r2

CENTRE_COLUMNS = ("center", "centre")
REFERENCE_NRI_CUTS = (0.1, 0.2, 0.3)  # the reference study's risk categories
LOGIT_CLIP = 1e-6


@dataclass
class ClinicalOptions:
    """Choices of the clinical statistics (CLI ``evaluate`` options; the study passes its own)."""

    # risk categories of the categorical NRI and the interventions table's threshold probabilities; None: from the
    # training prevalence (``resolve_thresholds``; the reference study's 0.1-0.3 suit a prevalence of about 0.2 only)
    cuts: tuple[float, ...] | None = None
    thresholds: tuple[float, ...] | None = None
    nper: int = 100
    subgroups: tuple[str, ...] = ()  # cohort columns besides the centre
    candidate_predictors: int | None = None  # what fusion considered (fusion.json lasso.n_features_in)
    anticipated_r2: float | None = None  # Cox-Snell; default: from the reference model's training predictions
    reference_model: str | None = None  # default DL_combined, else the last model
    nomogram_scores: tuple[str, ...] | None = None  # default (reference model,)
    nomogram_covariates: tuple[str, ...] = ()
    nomogram: bool = True
    outcome: Outcome = field(default_factory=Outcome)  # the words of the interventions block and the nomogram


def read_cohort(path: str | Path | None) -> pd.DataFrame | None:
    """The cohort manifest by case_id, each column numeric where every value is a number."""
    if path is None:
        return None
    df = read_manifest(path)
    if "case_id" not in df.columns:
        raise CeusError(f"{path}: no case_id column")
    for c in df.columns:
        if c != "case_id":
            num = pd.to_numeric(df[c], errors="coerce")
            if num.notna().sum() == df[c].notna().sum() and df[c].notna().any():
                df[c] = num
    return df.drop_duplicates("case_id").set_index("case_id")


def reference_model(models: list[str], opts: ClinicalOptions) -> str:
    if opts.reference_model:
        if opts.reference_model not in models:
            raise CeusError(f"reference model {opts.reference_model!r} is not among the models {models}")
        return opts.reference_model
    return "DL_combined" if "DL_combined" in models else models[-1]


def _is_prob(p: np.ndarray) -> bool:
    return bool(np.all((p >= 0) & (p <= 1)))


def resolve_thresholds(pred: pd.DataFrame, opts: ClinicalOptions) -> tuple[ClinicalOptions, dict]:
    """``opts`` with its NRI cut points and interventions thresholds filled in, and metrics.json's record of them.

    Each is the one given, else a range around the training (development) rows' prevalence
    (``stats.thresholds_around``: at 0.2 it is the reference study's 0.1-0.3; at 0.83 it is 0.71-0.91, where
    fixed 0.1-0.3 would avoid nothing). Without training rows the prevalence of every evaluated case is used;
    with one outcome class in them there is no such range, and the reference study's values stand, said so."""
    cases = pred.drop_duplicates("case_id")
    dev = cases[cases["set"] == "train"]
    rows, where = (dev, "training") if len(dev) else (cases, "evaluated")
    prev = float(rows["y"].mean()) if len(rows) else float("nan")
    rec = {"prevalence": prev, "prevalence_rows": where, "rule": THRESHOLD_RULE}
    derived = f"from training prevalence {prev:.3f}" if len(dev) else f"from the evaluated cases' prevalence {prev:.3f} (no training rows)"
    fill = {}
    for key, name, factors, fixed in (("thresholds", "thresholds", PREVALENCE_ODDS_FACTORS, CLINICAL_THRESHOLDS),
                                      ("cuts", "nri_cuts", NRI_ODDS_FACTORS, REFERENCE_NRI_CUTS)):
        given = getattr(opts, key)
        if given is not None:
            fill[key], rec[f"{name}_source"] = tuple(given), "given"
        elif 0 < prev < 1:
            fill[key] = thresholds_around(prev, factors)
            rec[f"{name}_source"] = derived
        else:
            fill[key] = fixed
            rec[f"{name}_source"] = (f"the reference study's (the {where} rows have one outcome class: no prevalence "
                                     f"to centre them on)")
        rec[name] = list(fill[key])
    return replace(opts, **fill), rec


# --------------------------------------------------------------------------- per set


def reclassification(sub: pd.DataFrame, models: list[str], opts: ClinicalOptions, conf_level: float) -> list[dict]:
    """Continuous and categorical NRI and IDI of every pair (old = the earlier model, new = the later one)."""
    out = []
    for a, b in combinations(models, 2):
        mm = sub[sub["model"] == a].merge(sub[sub["model"] == b], on="case_id", suffixes=("_a", "_b"))
        rec = {"old": a, "new": b, "n": int(len(mm)), "cuts": list(opts.cuts)}
        y, pa, pb = mm["y_a"].to_numpy(), mm["prob_a"].to_numpy(), mm["prob_b"].to_numpy()
        if len(mm) == 0 or y.min() == y.max() or not (_is_prob(pa) and _is_prob(pb)):
            rec["note"] = "not computed: needs shared patients with both outcomes and probabilities in [0, 1]"
            out.append(rec)
            continue
        cont = improve_prob(y, pa, pb, conf_level)
        cat = nri(y, pa, pb, cuts=opts.cuts, conf_level=conf_level)
        rec["continuous_nri"] = _nri_record(cont)
        rec["categorical_nri"] = _nri_record(cat)
        why = categorical_undefined(pa, pb, opts.cuts)
        if why:
            rec["categorical_nri"]["undefined"] = why
        rec["idi"] = {"idi": cont.idi, "se": cont.se_idi, "z": cont.z_idi, "p": cont.p_idi, "ci": list(cont.ci("idi")),
                      "improveSens": cont.improveSens, "improveSpec": cont.improveSpec}
        out.append(rec)
    return out


def categorical_undefined(p_old: np.ndarray, p_new: np.ndarray, cuts) -> str | None:
    """Why the categorical NRI has no test at these cut points, or None: when no case changes risk category,
    its NRI is 0 with a standard error of 0 (so no z, p or CI), a number that says nothing about the models."""
    ca, cb = risk_category(p_old, cuts), risk_category(p_new, cuts)
    if np.any(ca != cb):
        return None
    at = ", ".join(f"{c:g}" for c in cuts)
    if np.unique(ca).size == 1:
        return (f"categorical NRI undefined: every case in one risk category at these cut points ({at}), with both "
                f"models; choose cut points within the predicted risks (evaluate --nri-cuts)")
    return f"categorical NRI undefined: no case changed risk category between the two models at these cut points ({at})"


def _nri_record(r) -> dict:
    return {"nri": r.nri, "se": r.se_nri, "z": r.z_nri, "p": r.p_nri, "ci": list(r.ci("nri")),
            "nri_events": r.nri_ev, "se_events": r.se_nri_ev, "z_events": r.z_nri_ev, "p_events": r.p_nri_ev,
            "nri_nonevents": r.nri_ne, "se_nonevents": r.se_nri_ne, "z_nonevents": r.z_nri_ne, "p_nonevents": r.p_nri_ne,
            "pup_ev": r.pup_ev, "pdown_ev": r.pdown_ev, "pup_ne": r.pup_ne, "pdown_ne": r.pdown_ne,
            "kind": r.kind, "cuts": list(r.cuts) if r.cuts else None}


def interventions(scores: dict[str, pd.DataFrame], opts: ClinicalOptions) -> tuple[dict, pd.DataFrame]:
    """Per model: the table at the clinical thresholds (with a note where it cannot say anything), and the
    net-interventions-avoided curve (long)."""
    tables, curves, notes = {}, [], {}
    for m, d in scores.items():
        y, p = d["y"].to_numpy(), d["prob"].to_numpy()
        t = interventions_table(y, p, opts.thresholds, opts.nper)
        tables[m] = t.drop(columns=["nper"]).to_dict(orient="records")
        why = interventions_note(t, opts.outcome)
        if why:
            notes[m] = why
        c = net_interventions_avoided(y, p, nper=opts.nper)
        curves.append(c.assign(model=m))
    curve = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    o = opts.outcome
    return {"nper": opts.nper, "intervention": o.intervention, "treated": o.treated, "avoided": o.avoided,
            "missed": o.missed, "compared_with": f"{o.intervention} for every patient", "models": tables,
            "notes": notes}, curve


def interventions_note(t: pd.DataFrame, outcome: Outcome) -> str | None:
    """A sentence where the table's net numbers are zero by construction: the model recommends the intervention
    for every case (or for none) at every threshold, so it is the same as treating all (or none) there."""
    at = ", ".join(f"{v:g}" for v in t["threshold"])
    if np.all(t["interventions_avoided"] == 0):
        return (f"net {outcome.avoided} undefined as a comparison at these thresholds ({at}): the model recommends "
                f"{outcome.intervention} for every case at each of them, the same as treating all (net 0 by "
                f"construction); thresholds nearer the predicted risks (evaluate --thresholds) would compare")
    if np.all(t["interventions"] == 0):
        return (f"at these thresholds ({at}) the model recommends {outcome.intervention} for no case: the table "
                f"compares treating none with treating all")
    return None


def _stratum_labels(values: pd.Series, column: str) -> tuple[pd.Series, str | None]:
    """Categorical as is; a numeric column with more than 10 values split at its median."""
    v = values
    if pd.api.types.is_numeric_dtype(v) and v.nunique() > 10:
        med = float(v.median())
        return pd.Series(np.where(v >= med, f">= {med:g}", f"< {med:g}"), index=v.index), f"{column} split at its median {med:g}"
    return v.astype(str), None


def subgroups(sub: pd.DataFrame, models: list[str], cohort: pd.DataFrame | None, opts: ClinicalOptions,
              conf_level: float) -> dict:
    """AUC per stratum and the heterogeneity test, for the centre (when the manifest has one) and each requested column."""
    if cohort is None:
        return {}
    cols = [c for c in CENTRE_COLUMNS if c in cohort.columns][:1] + [c for c in opts.subgroups if c not in CENTRE_COLUMNS]
    missing = [c for c in cols if c not in cohort.columns]
    if missing:
        raise CeusError(f"subgroup column(s) {missing} not in the cohort manifest (columns: {list(cohort.columns)})")
    out = {}
    for col in cols:
        res = {}
        for m in models:
            d = sub[sub["model"] == m]
            v = cohort[col].reindex(d["case_id"].astype(str))
            keep = v.notna().to_numpy()
            if keep.sum() == 0:
                continue
            labels, note = _stratum_labels(v[keep], col)
            r = subgroup_auc(d["y"].to_numpy()[keep], d["prob"].to_numpy()[keep], labels.to_numpy(), conf_level)
            r["n_missing_covariate"] = int((~keep).sum())
            r["grouping"] = note
            res[m] = r
        out[col] = res
    return out


# --------------------------------------------------------------------------- development rows


def sample_size(pred: pd.DataFrame, models: list[str], opts: ClinicalOptions) -> dict:
    """Riley et al. criteria for the training cohort, with the anticipated R2 recorded with its source."""
    ref = reference_model(models, opts)
    d = pred[(pred["model"] == ref) & (pred["set"] == "train")]
    if d.empty:
        d = pred[pred["model"] == ref]
    y, p = d["y"].to_numpy(), d["prob"].to_numpy()
    out = {"reference_model": ref, "rows": "train" if (d["set"] == "train").all() else "all", "parameters": opts.candidate_predictors}
    if opts.candidate_predictors is None:
        return {**out, "note": "number of candidate predictor parameters not given (evaluate --candidate-predictors)"}
    if y.min() == y.max():
        return {**out, "note": "the development rows have one outcome class"}
    src = None
    try:
        kw, src = _anticipated(y, p, opts)
        res = sample_size_adequacy(len(y), int(y.sum()), int(opts.candidate_predictors), shrinkage=0.9, **kw)
    except CeusError as exc:
        return {**out, "note": f"sample size not computed: {exc}", "r2_source": src}
    return {**out, **res, "r2_source": src}


def _anticipated(y, p, opts: ClinicalOptions) -> tuple[dict, str]:
    if opts.anticipated_r2 is not None:
        return {"csrsquared": float(opts.anticipated_r2)}, "given"
    r2 = cox_snell_r2(y, np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)) if _is_prob(p) else float("nan")
    if 0 < r2 < max_r2(float(np.mean(y))):
        return {"csrsquared": round(r2, 4)}, "Cox-Snell R2 of the reference model's training (out-of-fold) predictions"
    c = auc_ci(y, p).auc
    if c <= 0.5:
        raise CeusError("anticipated R2: the reference model's training predictions are no better than chance; give --anticipated-r2")
    return {"cstatistic": round(c, 4)}, "from the training C-statistic (pmsampsize cstat2rsq), the predictions' own R2 being <= 0"


def nomogram_block(pred: pd.DataFrame, models: list[str], cohort: pd.DataFrame | None, opts: ClinicalOptions,
                   conf_level: float):
    """The DL (+ clinical) logistic model on the training rows: coefficients, points table, test AUC; (dict, Nomogram)."""
    scores = list(opts.nomogram_scores or (reference_model(models, opts),))
    covs = list(opts.nomogram_covariates)
    if covs and cohort is None:
        raise CeusError("nomogram covariates need the cohort manifest (evaluate --cohort)")
    frames = {s: _design(pred, scores, covs, cohort, s) for s in ("train", "test")}
    tr = frames["train"]
    if tr.empty:
        return {"note": "no training rows shared by the nomogram's models"}, None
    dropped = _separating(tr, covs)
    if dropped:
        covs = [c for c in covs if c not in dropped]
        frames = {s: d.drop(columns=list(dropped)) for s, d in frames.items()}
        tr = frames["train"]
    nm = nomogram(tr.drop(columns=["y", "case_id"]), tr["y"].to_numpy())
    out = {"scores": scores, "covariates": covs, "n_train": int(len(tr)), "n_train_pos": int(tr["y"].sum()),
           "covariates_left_out": dropped,
           "model": "logistic regression (maximum likelihood) on the training rows: " + " + ".join(list(tr.columns[2:])),
           "score_scale": "each model's probability enters as its logit", **nm.to_dict(),
           "points_table": nm.points_table().to_dict(orient="records")}
    for s, d in frames.items():
        if len(d) and d["y"].nunique() == 2:
            a = auc_ci(d["y"].to_numpy(), nm.predict(d.drop(columns=["y", "case_id"])), conf_level)
            out[f"auc_{s}"] = {"auc": a.auc, "ci": list(a.ci), "n": int(len(d)),
                               "scoring": "apparent (fitted on these rows)" if s == "train" else "fitted on train, scored once"}
    return out, nm


def _separating(tr: pd.DataFrame, covs: list[str]) -> dict[str, str]:
    """Categorical covariates with a level that has no events or no non-events: their ML coefficient is infinite."""
    out = {}
    for c in covs:
        if pd.api.types.is_numeric_dtype(tr[c]) and tr[c].nunique() > 10:
            continue
        tab = pd.crosstab(tr[c].astype(str), tr["y"])
        bad = [str(lv) for lv, row in tab.iterrows() if (row == 0).any() or len(row) < 2]
        if bad:
            out[c] = f"level(s) {bad} with no events or no non-events among the training rows (separation)"
    return out


def _design(pred: pd.DataFrame, scores: list[str], covs: list[str], cohort, s: str) -> pd.DataFrame:
    base = None
    for m in scores:
        d = pred[(pred["model"] == m) & (pred["set"] == s)]
        if d.empty and not (pred["model"] == m).any():
            raise CeusError(f"nomogram score {m!r} is not among the models")
        d = d[["case_id", "y"]].assign(**{f"{m} (logit)": logit(np.clip(d["prob"].to_numpy(), LOGIT_CLIP, 1 - LOGIT_CLIP))})
        base = d if base is None else base.merge(d.drop(columns="y"), on="case_id")
    for c in covs:
        if c not in cohort.columns:
            raise CeusError(f"nomogram covariate {c!r} not in the cohort manifest")
        base[c] = cohort[c].reindex(base["case_id"].astype(str)).to_numpy()
    return base.dropna().reset_index(drop=True)


def clinical_for_set(sub: pd.DataFrame, models: list[str], scores: dict[str, pd.DataFrame], cohort: pd.DataFrame | None,
                     opts: ClinicalOptions, conf_level: float) -> tuple[dict, pd.DataFrame]:
    """The per-set blocks of metrics.json (reclassification, interventions, subgroups) and the NIA curves."""
    inter, curve = interventions(scores, opts) if scores else ({}, pd.DataFrame())
    return {"reclassification": reclassification(sub, list(scores), opts, conf_level), "interventions": inter,
            "subgroups": subgroups(sub, models, cohort, opts, conf_level)}, curve


def clinical_tables(metrics: dict) -> dict[str, pd.DataFrame]:
    """Flat CSV tables of the clinical blocks (one row per set, pair, model, threshold or stratum)."""
    rec, inter, strata, het = [], [], [], []
    for s, block in metrics["sets"].items():
        for r in block.get("reclassification", []):
            row = {"set": s, "old": r["old"], "new": r["new"], "n": r["n"], "note": r.get("note")}
            for kind in ("continuous_nri", "categorical_nri", "idi"):
                for k, v in (r.get(kind) or {}).items():
                    if k not in ("kind", "cuts", "ci"):
                        row[f"{kind}.{k}"] = v
            rec.append(row)
        for m, rows in (block.get("interventions") or {}).get("models", {}).items():
            inter += [{"set": s, "model": m, **x} for x in rows]
        for col, per_model in (block.get("subgroups") or {}).items():
            for m, r in per_model.items():
                strata += [{"set": s, "covariate": col, "model": m, **{k: v for k, v in x.items() if k != "auc_ci"},
                            "ci_lower": x["auc_ci"][0], "ci_upper": x["auc_ci"][1]} for x in r["strata"]]
                h = r.get("heterogeneity") or {}
                het.append({"set": s, "covariate": col, "model": m, **h, "note": r.get("note")})
    return {"reclassification": pd.DataFrame(rec), "interventions": pd.DataFrame(inter),
            "subgroups": pd.DataFrame(strata), "heterogeneity": pd.DataFrame(het)}
