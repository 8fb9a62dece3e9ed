"""Evaluate prediction files: metrics.json, Table 2, DeLong comparisons, figures.

Input is either predictions CSVs (``case_id, set, fold, y, prob``; the model
name is the file stem) or one wide CSV (``y``, optional ``set`` and
``case_id``, one column per model). Thresholds are Youden-optimal on a
model's training rows and carried unchanged to every other set
(``threshold_source = "train"``); a model without training rows gets the
Youden threshold of the set itself (``"self"``). In metrics.json NaN is
written as null and infinite thresholds as "Infinity"/"-Infinity".

A set where a patient has several rows (nodules) gets Obuchowski's clustered AUC variance and test and
patient-level CIs of the proportions (``ci_method_auc``/``ci_method_proportions`` say which); a set
with one outcome class reports what exists (n, sensitivity or specificity, PPV/NPV where defined,
accuracy, Brier) and marks the rest ``undefined``; the test set's logit scale against the out-of-fold
one is measured per model (``scale``, ``scale.csv``).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import claim, write_csv, write_json
from ceusfusion.core.outcome import Outcome
from ceusfusion.evaluate.clinical import (
    ClinicalOptions,
    clinical_for_set,
    clinical_tables,
    nomogram_block,
    read_cohort,
    resolve_thresholds,
    sample_size,
)
from ceusfusion.evaluate.predictions import attach_groups, load_predictions
from ceusfusion.figures.curves import calibration_figure, dca_figure, roc_figure, save_figure
from ceusfusion.figures.nomogram import nia_figure, nia_window, nomogram_figure, subgroup_figure
from ceusfusion.stats import (
    auc_ci,
    calibration_summary,
    clustered_auc_ci,
    clustered_auc_test,
    clustered_auc_test_unpaired,
    clustered_metrics_at,
    decision_curves,
    delong_test,
    delong_test_unpaired,
    logit_scale,
    metrics_at,
    prob_logit,
    roc_curve,
    youden,
)
from ceusfusion.stats.calibration import binned_curve, smooth_curve
from ceusfusion.stats.thresholds import METRICS

SET_ORDER = ("train", "test")


def _set_order(sets) -> list[str]:
    sets = list(dict.fromkeys(sets))
    return [s for s in SET_ORDER if s in sets] + sorted(s for s in sets if s not in SET_ORDER)


def _where(d: pd.DataFrame, s: str) -> str:
    return f"model {d['model'].iloc[0]} ({d['file'].iloc[0]}), set {s!r}"


def evaluate_frame(pred: pd.DataFrame, conf_level: float = 0.95, ci: str = "wilson", n_boot: int = 2000,
                   seed: int = 0, clinical: ClinicalOptions | None = None, cohort: pd.DataFrame | None = None,
                   selection: dict[str, dict] | None = None) -> tuple[dict, dict]:
    """Compute everything. Returns (metrics in the DESIGN.md schema, curves for tables/figures).

    With ``clinical`` each set also gets reclassification, interventions and subgroups, and the
    metrics a sample-size check and a nomogram (see ``evaluate.clinical``). A set where a patient
    (``group``: the predictions', else the cohort's, else the case_id) has several rows gets patient-level
    (clustered) intervals and tests. ``selection`` (model -> selection-corrected training AUC) is stored
    beside the training rows' numbers."""
    pred = attach_groups(pred, cohort)
    models = list(dict.fromkeys(pred["model"]))
    sets = _set_order(pred["set"])
    out = {"conf_level": conf_level, "ci_method": ci, "threshold_rule": "score >= threshold is positive",
           "threshold_method": "youden", "outcome": (clinical.outcome if clinical else Outcome()).record(), "sets": {}}
    if clinical is not None:  # the NRI cut points and interventions thresholds: given, else from the prevalence
        clinical, out["clinical_thresholds"] = resolve_thresholds(pred, clinical)
    curves = {"roc": {}, "calibration": {}, "dca": {}, "nia": {}, "nomogram": None}
    opts = {"conf_level": conf_level, "ci": ci, "n_boot": n_boot, "seed": seed}
    for s in sets:
        sub = pred[pred["set"] == s]
        cases = sub.drop_duplicates("case_id")
        clustered = bool(cases["group"].duplicated().any())
        block = {"n": int(len(cases)), "n_pos": int(cases["y"].sum()), "n_groups": int(cases["group"].nunique()),
                 "clustered": clustered, "models": {}, "comparisons": []}
        rocs, cals, scores = [], [], {}
        for m in models:
            d = sub[sub["model"] == m]
            if d.empty:
                continue
            r, roc, cal = _model_block(d, pred[(pred["model"] == m) & (pred["set"] == "train")], clustered, opts)
            block["models"][m] = r
            rocs += [roc] if roc else []
            cals += [cal] if cal else []
            if r["brier"] is not None:
                scores[m] = d
        block["comparisons"] = _comparisons(sub, [m for m in models if m in block["models"]], conf_level, clustered)
        if scores:
            curves["dca"][s] = _dca(scores, decision_curves)
        if clinical is not None:
            extra, curves["nia"][s] = clinical_for_set(sub, list(block["models"]), scores, cohort, clinical, conf_level)
            block.update(extra)
        curves["roc"][s], curves["calibration"][s] = rocs, cals
        out["sets"][s] = block
    _scales(out, pred, models, n_boot, seed, conf_level)
    _selection(out, selection)
    if clinical is not None:
        _development(out, curves, pred, models, cohort, clinical, conf_level)
    return out, curves


def _one_class_note(y: np.ndarray) -> str:
    which, lost = ("all positive", "specificity") if y.min() == 1 else ("all negative", "sensitivity")
    return (f"only one class in this set ({which}): AUC, its CI, the AUC comparisons, calibration intercept, calibration "
            f"slope, calibration-in-the-large, Hosmer-Lemeshow and {lost} undefined (PPV/NPV only where a case was "
            f"called positive/negative)")


def _threshold(d: pd.DataFrame, train: pd.DataFrame, one_class: bool) -> tuple[float | None, str]:
    """Youden on the model's training rows (carried to every set), else on the set itself; None if neither has both classes."""
    where = _where(d, str(d["set"].iloc[0]))
    try:
        if len(train):
            if train["y"].nunique() < 2:
                return None, "undefined (the training rows have one class)"
            return youden(train["y"].to_numpy(), train["prob"].to_numpy()).threshold, "train"
        if one_class:
            return None, "undefined (one class and no training rows)"
        return youden(d["y"].to_numpy(), d["prob"].to_numpy()).threshold, "self"
    except CeusError as exc:
        raise CeusError(f"{where}: {exc}") from None


def _model_block(d: pd.DataFrame, train: pd.DataFrame, clustered: bool, opts: dict):
    """One model in one set: the metrics.json record, its ROC curve and calibration curve (None where undefined)."""
    y, p, g = d["y"].to_numpy(), d["prob"].to_numpy(), d["group"].to_numpy()
    one_class = bool(y.min() == y.max())
    thr, source = _threshold(d, train, one_class)
    n_groups = int(pd.unique(g).size)
    r = {"n": int(len(d)), "n_pos": int(y.sum()), "n_groups": n_groups, "scoring": " / ".join(dict.fromkeys(d["scoring"])),
         "ci_method_auc": f"obuchowski (clustered by patient, {n_groups} groups)" if clustered else "delong",
         "threshold": thr, "threshold_source": source}
    roc = None
    if one_class:
        r.update(auc=None, auc_ci=[None, None], auc_se=None, auc_ci_defined=False, auc_note="undefined (one class)",
                 undefined=_one_class_note(y))
    else:
        a = clustered_auc_ci(y, p, g, opts["conf_level"]) if clustered else auc_ci(y, p, opts["conf_level"])
        r.update(auc=a.auc, auc_ci=list(a.ci), auc_se=a.se, auc_ci_defined=a.ci_defined, auc_note=a.note)
        rc = roc_curve(y, p)
        roc = {"name": d["model"].iloc[0], "fpr": 1 - rc.specificity, "tpr": rc.sensitivity, "auc": a.auc,
               "ci": a.ci if a.ci_defined else None}
    r.update(_at_threshold(y, p, g, thr, clustered, opts))
    cal = None
    if bool(np.all((p >= 0) & (p <= 1))):
        r.update(calibration_summary(y, p))
        if one_class:
            r.update(calibration_intercept=None, calibration_slope=None, calibration_in_the_large=None,
                     hosmer_lemeshow={"chi2": None, "df": None, "p": None, "note": "undefined (one class)"})
        else:
            cal = {"name": d["model"].iloc[0], "binned": binned_curve(y, p), "smooth": smooth_curve(y, p)}
    else:
        r.update(brier=None, calibration_intercept=None, calibration_slope=None,
                 hosmer_lemeshow={"chi2": None, "df": None, "p": None, "note": "scores are not probabilities"})
    return r, roc, cal


def _at_threshold(y, p, g, thr, clustered: bool, opts: dict) -> dict:
    """Counts, the five metrics and their CIs at the threshold (patient-level CIs in a clustered set)."""
    ci, conf = opts["ci"], opts["conf_level"]
    if thr is None:
        out = {k: None for k in ("tp", "fp", "tn", "fn", *METRICS)}
        out.update({f"{k}_ci": [None, None] for k in METRICS})
        return {**out, "ci_method": ci, "ci_method_proportions": "undefined (no threshold)"}
    if clustered:
        mt = clustered_metrics_at(y, p, thr, g, conf, ci=ci, n_boot=opts["n_boot"], seed=opts["seed"])
        how = ("wilson at the design-effect (Rao-Scott) effective size" if ci == "wilson" else "patient-level bootstrap")
        return {**mt, "ci_method_proportions": f"{how} (clustered by patient, {mt['n_groups']} groups)"}
    mt = metrics_at(y, p, thr, conf, ci=ci, n_boot=opts["n_boot"], seed=opts["seed"])
    return {**mt, "ci_method_proportions": ci}


def _scales(out: dict, pred: pd.DataFrame, models: list[str], n_boot: int, seed: int, conf_level: float) -> None:
    """Test/out-of-fold logit SD ratio and test CITL of every probability model with train and test rows."""
    test = out["sets"].get("test")
    if test is None or "train" not in out["sets"]:
        return
    for m in models:
        tr = pred[(pred["model"] == m) & (pred["set"] == "train")]
        te = pred[(pred["model"] == m) & (pred["set"] == "test")]
        if len(tr) < 2 or len(te) < 2 or not all(bool(np.all((d["prob"] >= 0) & (d["prob"] <= 1))) for d in (tr, te)):
            continue
        grouped = [d["group"].to_numpy() if d["group"].duplicated().any() else None for d in (tr, te)]
        sc = logit_scale(prob_logit(tr["prob"]), prob_logit(te["prob"]), te["y"].to_numpy(), grouped[0], grouped[1],
                         B=n_boot, seed=seed, conf_level=conf_level).to_dict()
        test["models"][m]["scale"] = sc


def _selection(out: dict, selection: dict[str, dict] | None) -> None:
    """The selection-corrected training AUC (computed by the selection stage) beside the training rows' own."""
    if not selection:
        return
    train = out["sets"].get("train", {}).get("models", {})
    for name, rec in selection.items():
        if name in train:
            train[name]["selection_corrected"] = dict(rec)
    out["selection_corrected_methods"] = {name: rec.get("method") for name, rec in selection.items()}


def _development(out: dict, curves: dict, pred: pd.DataFrame, models: list[str], cohort, clinical: ClinicalOptions,
                 conf_level: float) -> None:
    """Sample-size adequacy and the nomogram, from the training (development) rows."""
    out["sample_size"] = sample_size(pred, models, clinical)
    if not clinical.nomogram:
        return
    try:
        out["nomogram"], curves["nomogram"] = nomogram_block(pred, models, cohort, clinical, conf_level)
    except CeusError as exc:
        if not clinical.nomogram_covariates:
            out["nomogram"] = {"note": f"nomogram not built: {exc}"}
            return
        # the DL score alone still gives a nomogram; say why the covariates were left out
        out["nomogram"], curves["nomogram"] = nomogram_block(pred, models, cohort, replace(clinical, nomogram_covariates=()),
                                                             conf_level)
        out["nomogram"]["note"] = f"covariates {list(clinical.nomogram_covariates)} left out: {exc}"


def _dca(scores: dict, decision_curves) -> pd.DataFrame:
    """Decision curves on the patients shared by all probability models of the set."""
    names = list(scores)
    base = scores[names[0]][["case_id", "y"]]
    for m in names[1:]:
        base = base.merge(scores[m][["case_id"]], on="case_id")
    cols = {m: base[["case_id"]].merge(scores[m][["case_id", "prob"]], on="case_id")["prob"].to_numpy() for m in names}
    return decision_curves(base["y"].to_numpy(), cols)


DROPPED_REASON = "scored by one of the two models only (e.g. a case whose video or image could not be used)"


def _comparisons(sub: pd.DataFrame, models: list[str], conf_level: float, clustered: bool = False) -> list[dict]:
    if sub["y"].nunique() < 2:
        return [_undefined_comparison(a, b, sub[sub["model"] == a], sub[sub["model"] == b]) for a, b in combinations(models, 2)]
    return [_compare(a, b, sub[sub["model"] == a], sub[sub["model"] == b], conf_level, clustered)
            for a, b in combinations(models, 2)]


def _undefined_comparison(a: str, b: str, da: pd.DataFrame, db: pd.DataFrame) -> dict:
    """A set with one outcome class has no AUC, so no test: the record says so instead of aborting."""
    return {"a": a, "b": b, "method": "delong", "z": None, "p": None, "paired": None, "n": None, "n_a": int(len(da)),
            "n_b": int(len(db)), "dropped": None, "auc_a": None, "auc_b": None, "diff": None, "diff_ci": [None, None],
            "note": "undefined: only one class in this set"}


def _compare(a: str, b: str, da: pd.DataFrame, db: pd.DataFrame, conf_level: float, clustered: bool = False) -> dict:
    """DeLong test of two models (Obuchowski's clustered one where a patient has several rows). Patients both
    models scored are compared PAIRED on that intersection (the same patients are not independent samples,
    whatever the other cases); the cases scored by one model only are named in the record. Only models with
    no patient in common are compared unpaired."""
    shared = set(da["case_id"]) & set(db["case_id"])
    only_a, only_b = sorted(set(da["case_id"]) - shared), sorted(set(db["case_id"]) - shared)
    mm = da.merge(db, on="case_id", suffixes=("_a", "_b"))
    bad = mm["y_a"] != mm["y_b"]
    if bad.any():
        raise CeusError(f"models {a} and {b} disagree on y for case(s) {mm.loc[bad, 'case_id'].tolist()[:10]}")
    paired = len(mm) > 0 and mm["y_a"].nunique() == 2
    if paired:
        t = _paired_test(mm, conf_level, clustered)
        note = t.note
        if only_a or only_b:
            note = (f"paired on the {len(mm)} cases both models scored; left out: {len(only_a)} scored only by {a}, "
                    f"{len(only_b)} only by {b} ({DROPPED_REASON})" + (f"; {t.note}" if t.note else ""))
    elif da["y"].nunique() < 2 or db["y"].nunique() < 2:
        return {**_undefined_comparison(a, b, da, db), "note": "undefined: one model's rows have only one class"}
    else:
        t = _unpaired_test(da, db, conf_level, clustered)
        note = "no patient scored by both models with both outcomes present: unpaired test" + (f"; {t.note}" if t.note else "")
    groups = int(mm["group_a"].nunique()) if paired else int(pd.concat([da["group"], db["group"]]).nunique())
    return {"a": a, "b": b, "method": f"obuchowski (clustered by patient, {groups} groups)" if clustered else "delong",
            "z": t.z, "p": t.p, "paired": paired,
            "n": int(len(mm)) if paired else int(len(da) + len(db)), "n_a": int(len(da)), "n_b": int(len(db)),
            "dropped": {"only_a": only_a, "only_b": only_b, "reason": DROPPED_REASON} if paired and (only_a or only_b) else None,
            "auc_a": t.auc_a, "auc_b": t.auc_b, "diff": t.diff, "diff_ci": list(t.diff_ci), "note": note}


def _paired_test(mm: pd.DataFrame, conf_level: float, clustered: bool):
    y, pa, pb = mm["y_a"].to_numpy(), mm["prob_a"].to_numpy(), mm["prob_b"].to_numpy()
    if clustered:
        return clustered_auc_test(y, pa, pb, mm["group_a"].to_numpy(), conf_level)
    return delong_test(y, pa, pb, conf_level)


def _unpaired_test(da: pd.DataFrame, db: pd.DataFrame, conf_level: float, clustered: bool):
    if clustered:
        return clustered_auc_test_unpaired(da["y"].to_numpy(), da["prob"].to_numpy(), da["group"].to_numpy(),
                                           db["y"].to_numpy(), db["prob"].to_numpy(), db["group"].to_numpy(), conf_level)
    return delong_test_unpaired(da["y"].to_numpy(), da["prob"].to_numpy(), db["y"].to_numpy(), db["prob"].to_numpy(), conf_level)


def _json_safe(o):
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, (float, np.floating)):
        o = float(o)
        if math.isnan(o):
            return None
        if math.isinf(o):
            return "Infinity" if o > 0 else "-Infinity"
        return o
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def _fmt(v, nd=3) -> str:
    return "NA" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def _with_ci(v, ci) -> str:
    """'0.812 (0.701 - 0.889)'; the value alone where there is no interval."""
    if v is None:
        return "NA"
    if not ci or ci[0] is None or ci[1] is None:
        return _fmt(v)
    return f"{_fmt(v)} ({_fmt(ci[0])} - {_fmt(ci[1])})"


def _threshold_text(t) -> str:
    if t is None:
        return "undefined"
    return t if isinstance(t, str) else f"{t:.4g}"


def _metric_cell(r: dict, key: str) -> str:
    """A Table 2 cell: the value (CI), or why there is none (no threshold; the class the metric needs is absent)."""
    if r.get("threshold") is None:
        return "undefined (no threshold)"
    missing_class = {"specificity": r["n_pos"] == r["n"], "sensitivity": r["n_pos"] == 0}
    if r.get(key) is None and missing_class.get(key):
        return "undefined (one class)"
    return _with_ci(r.get(key), r.get(f"{key}_ci"))


TABLE2_COLUMNS = ["model", "AUC (95% CI)", "AUC (selection-corrected)", "threshold", "sensitivity (95% CI)",
                  "specificity (95% CI)", "PPV (95% CI)", "NPV (95% CI)", "accuracy (95% CI)", "cohort", "rows"]


def table2(metrics: dict) -> pd.DataFrame:
    """The reference study's Table 2: model, AUC (95% CI), the selection-corrected training AUC where the
    selection stage gave one, the threshold (fixed on train), sens, spec, PPV, NPV, accuracy with their CIs,
    cohort, and how the rows were scored (out-of-fold, refit, ...: a reader must not mistake one for another).
    A set with one outcome class says "undefined (one class)" where a number cannot exist."""
    rows = []
    for s, block in metrics["sets"].items():
        for m, r in block["models"].items():
            lo, hi = r["auc_ci"]
            if r["auc"] is None:
                auc = "undefined (one class)"
            else:
                auc = f"{_fmt(r['auc'])} ({_fmt(lo)} - {_fmt(hi)})" if r["auc_ci_defined"] else f"{_fmt(r['auc'])} (NA)"
            sc = r.get("selection_corrected") or {}
            row = {"model": m, "AUC (95% CI)": auc,
                   "AUC (selection-corrected)": _with_ci(sc["auc"], sc.get("ci")) if sc.get("auc") is not None else "",
                   "threshold": _threshold_text(r.get("threshold"))}
            for key, label in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ppv", "PPV"),
                               ("npv", "NPV"), ("accuracy", "accuracy")):
                row[f"{label} (95% CI)"] = _metric_cell(r, key)
            rows.append({**row, "cohort": s.capitalize(), "rows": r.get("scoring", "")})
    return pd.DataFrame(rows, columns=TABLE2_COLUMNS)


def scale_table(metrics: dict) -> pd.DataFrame:
    """One row per model with a test-set scale check: SD of the out-of-fold and test logits, their ratio and CI,
    the test calibration-in-the-large, and whether the ratio lies in SCALE_RANGE."""
    rows = []
    for m, r in metrics["sets"].get("test", {}).get("models", {}).items():
        sc = r.get("scale")
        if not sc:
            continue
        lo, hi = sc["ratio_ci"]
        rows.append({"model": m, "sd_oof": sc["sd_oof"], "sd_test": sc["sd_test"], "ratio": sc["ratio"],
                     "ci": f"{_fmt(lo)} - {_fmt(hi)}", "citl": sc["citl"], "ok": sc["ok"]})
    return pd.DataFrame(rows, columns=["model", "sd_oof", "sd_test", "ratio", "ci", "citl", "ok"])


def comparisons_table(metrics: dict) -> pd.DataFrame:
    rows = []
    for s, block in metrics["sets"].items():
        for c in block["comparisons"]:
            rows.append({"set": s, "a": c["a"], "b": c["b"], "method": c["method"], "paired": c["paired"], "n": c.get("n"),
                         "auc_a": c["auc_a"], "auc_b": c["auc_b"], "diff": c["diff"], "diff_ci_lower": c["diff_ci"][0],
                         "diff_ci_upper": c["diff_ci"][1], "z": c["z"], "p": c["p"], "note": c["note"]})
    return pd.DataFrame(rows, columns=["set", "a", "b", "method", "paired", "n", "auc_a", "auc_b", "diff", "diff_ci_lower",
                                       "diff_ci_upper", "z", "p", "note"])


OUTPUT_FILES = ("metrics.json", "table2.csv", "comparisons.csv", "scale.csv", "dca.csv", "reclassification.csv",
                "interventions.csv", "subgroups.csv", "heterogeneity.csv", "nia.csv", "nomogram_points.csv",
                "internal_validation.csv")  # every file evaluate may write in its output folder (besides figures/)


def claim_outputs(out: str | Path, inputs=(), force: bool = False, figures: bool = True) -> None:
    """Before anything is computed: refuse to write over a file of ``out`` ceusfusion did not write (unless
    ``force``) or over one of ``inputs`` (ever), and record evaluate's outputs there (``core.fsutil.claim``)."""
    out = Path(out)
    claim(out, files=[out / f for f in OUTPUT_FILES], folders=[out / "figures"] if figures else [], force=force,
          inputs=inputs)


def evaluate(paths: list[str | Path], out: str | Path, conf_level: float = 0.95, ci: str = "wilson",
             n_boot: int = 2000, seed: int = 0, figures: bool = True, clinical: ClinicalOptions | None = None,
             cohort: str | Path | None = None, validation: dict | None = None,
             selection: dict[str, dict] | None = None) -> dict:
    """Read prediction files, compute everything, write metrics.json, tables and figures to ``out``.

    ``clinical`` (default: ClinicalOptions()) adds the clinical statistics (its ``outcome`` names the outcome in
    metrics.json and the figures; its cut points and thresholds, where not given, come from the training
    prevalence, recorded in ``clinical_thresholds``); ``cohort`` (the manifest)
    gives centres, subgroups, nomogram covariates and the patient (``group``) of each row; ``validation``
    (``fusion.validation``'s record) is written as ``internal_validation``; ``selection`` (model ->
    {auc, ci, method, n_candidates}: the selection-corrected training AUC) goes beside the training rows."""
    out = Path(out)
    pred = load_predictions(paths)
    clinical = clinical or ClinicalOptions()
    metrics, curves = evaluate_frame(pred, conf_level, ci, n_boot, seed, clinical, read_cohort(cohort), selection)
    metrics["inputs"] = [str(p) for p in paths]
    metrics["cohort"] = str(cohort) if cohort else None
    if validation is not None:
        metrics["internal_validation"] = validation
    metrics = _json_safe(metrics)
    write_csv(out / "table2.csv", table2(metrics))
    write_csv(out / "comparisons.csv", comparisons_table(metrics))
    scales = scale_table(metrics)
    if len(scales):
        write_csv(out / "scale.csv", scales)
    _write_clinical(metrics, curves, out)
    dca = [d.assign(set=s) for s, d in curves["dca"].items()]
    if dca:
        write_csv(out / "dca.csv", pd.concat(dca, ignore_index=True)[["set", "model", "threshold", "net_benefit", "tp", "fp"]])
    if figures:
        _figures(curves, out / "figures", metrics, clinical.outcome)
    write_json(out / "metrics.json", metrics)  # last: its presence marks a complete evaluation
    return metrics


def _write_clinical(metrics: dict, curves: dict, out: Path) -> None:
    for name, df in clinical_tables(metrics).items():
        if len(df):
            write_csv(out / f"{name}.csv", df)
    nia = [d.assign(set=s) for s, d in curves["nia"].items() if len(d)]
    if nia:
        cols = ["set", "model", "threshold", "net_benefit", "net_benefit_all", "net_intervention_avoided"]
        write_csv(out / "nia.csv", pd.concat(nia, ignore_index=True)[cols])
    nm = metrics.get("nomogram") or {}
    if nm.get("points_table"):
        write_csv(out / "nomogram_points.csv", pd.DataFrame(nm["points_table"]))
    iv = metrics.get("internal_validation") or {}
    if iv.get("indexes"):
        write_csv(out / "internal_validation.csv", validation_table(iv))


def validation_table(iv: dict) -> pd.DataFrame:
    """The rms::validate table of metrics.json's internal_validation block."""
    return pd.DataFrame([{"index": k, **v} for k, v in iv["indexes"].items()])


def _figures(curves: dict, folder: Path, metrics: dict, outcome: Outcome) -> None:
    for s, block in metrics["sets"].items():
        if s in curves["nia"] and len(curves["nia"][s]):
            window = nia_window((metrics.get("clinical_thresholds") or {}).get("thresholds"))
            save_figure(nia_figure(curves["nia"][s], f"Net {outcome.avoided}, {s} set", f"Net {outcome.avoided} per 100 "
                                   "patients", window), folder / f"nia_{s}")
        for col, per_model in (block.get("subgroups") or {}).items():
            save_figure(subgroup_figure(per_model, f"AUC by {col}, {s} set"), folder / f"subgroups_{re.sub(r'[^A-Za-z0-9_-]+', '_', col)}_{s}")
    if curves.get("nomogram") is not None:
        save_figure(nomogram_figure(curves["nomogram"], f"Nomogram (risk of {outcome.short})"), folder / "nomogram")
    for s, rocs in curves["roc"].items():
        if rocs:  # a set with one outcome class has no ROC curve
            save_figure(roc_figure(rocs, f"ROC, {s} set"), folder / f"roc_{s}")
        if curves["calibration"].get(s):
            save_figure(calibration_figure(curves["calibration"][s], f"Calibration, {s} set"), folder / f"calibration_{s}")
        if s in curves["dca"]:
            save_figure(dca_figure(curves["dca"][s], f"Decision curves, {s} set"), folder / f"dca_{s}")
