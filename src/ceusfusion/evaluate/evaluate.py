"""Evaluate prediction files: metrics.json, Table 2, DeLong comparisons, figures.

Input is either predictions CSVs (``case_id, set, fold, y, prob``; the model
name is the file stem) or one wide CSV (``y``, optional ``set`` and
``case_id``, one column per model). Thresholds are Youden-optimal on a
model's training rows and carried unchanged to every other set
(``threshold_source = "train"``); a model without training rows gets the
Youden threshold of the set itself (``"self"``). In metrics.json NaN is
written as null and infinite thresholds as "Infinity"/"-Infinity".
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
from ceusfusion.core.fsutil import write_csv, write_json
from ceusfusion.evaluate.clinical import (
    ClinicalOptions,
    clinical_for_set,
    clinical_tables,
    nomogram_block,
    read_cohort,
    sample_size,
)
from ceusfusion.evaluate.predictions import load_predictions
from ceusfusion.figures.curves import calibration_figure, dca_figure, roc_figure, save_figure
from ceusfusion.figures.nomogram import nia_figure, nomogram_figure, subgroup_figure
from ceusfusion.stats import (
    auc_ci,
    calibration_summary,
    decision_curves,
    delong_test,
    delong_test_unpaired,
    metrics_at,
    roc_curve,
    youden,
)
from ceusfusion.stats.calibration import binned_curve, smooth_curve

SET_ORDER = ("train", "test")


def _set_order(sets) -> list[str]:
    sets = list(dict.fromkeys(sets))
    return [s for s in SET_ORDER if s in sets] + sorted(s for s in sets if s not in SET_ORDER)


def _where(d: pd.DataFrame, s: str) -> str:
    return f"model {d['model'].iloc[0]} ({d['file'].iloc[0]}), set {s!r}"


def evaluate_frame(pred: pd.DataFrame, conf_level: float = 0.95, ci: str = "wilson", n_boot: int = 2000,
                   seed: int = 0, clinical: ClinicalOptions | None = None, cohort: pd.DataFrame | None = None) -> tuple[dict, dict]:
    """Compute everything. Returns (metrics in the DESIGN.md schema, curves for tables/figures).

    With ``clinical`` each set also gets reclassification, interventions and subgroups, and the
    metrics a sample-size check and a nomogram (see ``evaluate.clinical``)."""
    models = list(dict.fromkeys(pred["model"]))
    sets = _set_order(pred["set"])
    out = {"conf_level": conf_level, "ci_method": ci, "threshold_rule": "score >= threshold is positive",
           "threshold_method": "youden", "sets": {}}
    curves = {"roc": {}, "calibration": {}, "dca": {}, "nia": {}, "nomogram": None}
    for s in sets:
        sub = pred[pred["set"] == s]
        cases = sub.drop_duplicates("case_id")
        block = {"n": int(len(cases)), "n_pos": int(cases["y"].sum()), "models": {}, "comparisons": []}
        rocs, cals, scores = [], [], {}
        for m in models:
            d = sub[sub["model"] == m]
            if d.empty:
                continue
            y, p = d["y"].to_numpy(), d["prob"].to_numpy()
            try:
                a = auc_ci(y, p, conf_level)
                train = pred[(pred["model"] == m) & (pred["set"] == "train")]
                if len(train):
                    thr, source = youden(train["y"].to_numpy(), train["prob"].to_numpy()).threshold, "train"
                else:
                    thr, source = youden(y, p).threshold, "self"
            except CeusError as exc:
                raise CeusError(f"{_where(d, s)}: {exc}") from None
            mt = metrics_at(y, p, thr, conf_level, ci=ci, n_boot=n_boot, seed=seed)
            r = {"n": int(len(d)), "n_pos": int(y.sum()), "scoring": " / ".join(dict.fromkeys(d["scoring"])),
                 "auc": a.auc, "auc_ci": list(a.ci), "auc_se": a.se,
                 "auc_ci_defined": a.ci_defined, "auc_note": a.note, "threshold": thr, "threshold_source": source}
            r.update(mt)
            is_prob = bool(np.all((p >= 0) & (p <= 1)))
            if is_prob:
                cs = calibration_summary(y, p)
                r.update(cs)
                cals.append({"name": m, "binned": binned_curve(y, p), "smooth": smooth_curve(y, p)})
            else:
                r.update(brier=None, calibration_intercept=None, calibration_slope=None,
                         hosmer_lemeshow={"chi2": None, "df": None, "p": None, "note": "scores are not probabilities"})
            block["models"][m] = r
            rc = roc_curve(y, p)
            rocs.append({"name": m, "fpr": 1 - rc.specificity, "tpr": rc.sensitivity, "auc": a.auc,
                         "ci": a.ci if a.ci_defined else None})
            if is_prob:
                scores[m] = d
        block["comparisons"] = _comparisons(sub, [m for m in models if m in block["models"]], conf_level)
        if scores:
            curves["dca"][s] = _dca(scores, decision_curves)
        if clinical is not None:
            extra, curves["nia"][s] = clinical_for_set(sub, list(block["models"]), scores, cohort, clinical, conf_level)
            block.update(extra)
        curves["roc"][s], curves["calibration"][s] = rocs, cals
        out["sets"][s] = block
    if clinical is not None:
        _development(out, curves, pred, models, cohort, clinical, conf_level)
    return out, curves


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


def _comparisons(sub: pd.DataFrame, models: list[str], conf_level: float) -> list[dict]:
    return [_compare(a, b, sub[sub["model"] == a], sub[sub["model"] == b], conf_level) for a, b in combinations(models, 2)]


def _compare(a: str, b: str, da: pd.DataFrame, db: pd.DataFrame, conf_level: float) -> dict:
    """DeLong test of two models. Patients both models scored are compared PAIRED on that intersection
    (the same patients are not independent samples, whatever the other cases); the cases scored by
    one model only are named in the record. Only models with no patient in common are compared unpaired."""
    shared = set(da["case_id"]) & set(db["case_id"])
    only_a, only_b = sorted(set(da["case_id"]) - shared), sorted(set(db["case_id"]) - shared)
    mm = da.merge(db, on="case_id", suffixes=("_a", "_b"))
    bad = mm["y_a"] != mm["y_b"]
    if bad.any():
        raise CeusError(f"models {a} and {b} disagree on y for case(s) {mm.loc[bad, 'case_id'].tolist()[:10]}")
    paired = len(mm) > 0 and mm["y_a"].nunique() == 2
    if paired:
        t = delong_test(mm["y_a"].to_numpy(), mm["prob_a"].to_numpy(), mm["prob_b"].to_numpy(), conf_level)
        note = t.note
        if only_a or only_b:
            note = (f"paired on the {len(mm)} patients both models scored; left out: {len(only_a)} scored only by {a}, "
                    f"{len(only_b)} only by {b} ({DROPPED_REASON})" + (f"; {t.note}" if t.note else ""))
    else:
        t = delong_test_unpaired(da["y"].to_numpy(), da["prob"].to_numpy(), db["y"].to_numpy(), db["prob"].to_numpy(), conf_level)
        note = "no patient scored by both models with both outcomes present: unpaired test" + (f"; {t.note}" if t.note else "")
    return {"a": a, "b": b, "method": "delong", "z": t.z, "p": t.p, "paired": paired,
            "n": int(len(mm)) if paired else int(len(da) + len(db)), "n_a": int(len(da)), "n_b": int(len(db)),
            "dropped": {"only_a": only_a, "only_b": only_b, "reason": DROPPED_REASON} if paired and (only_a or only_b) else None,
            "auc_a": t.auc_a, "auc_b": t.auc_b, "diff": t.diff, "diff_ci": list(t.diff_ci), "note": note}


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


def table2(metrics: dict) -> pd.DataFrame:
    """The reference study's Table 2: model, AUC (95% CI), sens, spec, PPV, NPV, accuracy, cohort, and how the
    rows were scored (out-of-fold, refit, ...: a reader must not mistake one for another)."""
    rows = []
    for s, block in metrics["sets"].items():
        for m, r in block["models"].items():
            lo, hi = r["auc_ci"]
            auc = f"{_fmt(r['auc'])} ({_fmt(lo)} - {_fmt(hi)})" if r["auc_ci_defined"] else f"{_fmt(r['auc'])} (NA)"
            rows.append({"model": m, "AUC (95% CI)": auc, "sensitivity": _fmt(r["sensitivity"]),
                         "specificity": _fmt(r["specificity"]), "PPV": _fmt(r["ppv"]), "NPV": _fmt(r["npv"]),
                         "accuracy": _fmt(r["accuracy"]), "cohort": s.capitalize(), "rows": r.get("scoring", "")})
    return pd.DataFrame(rows, columns=["model", "AUC (95% CI)", "sensitivity", "specificity", "PPV", "NPV", "accuracy", "cohort",
                                       "rows"])


def comparisons_table(metrics: dict) -> pd.DataFrame:
    rows = []
    for s, block in metrics["sets"].items():
        for c in block["comparisons"]:
            rows.append({"set": s, "a": c["a"], "b": c["b"], "method": c["method"], "paired": c["paired"], "n": c.get("n"),
                         "auc_a": c["auc_a"], "auc_b": c["auc_b"], "diff": c["diff"], "diff_ci_lower": c["diff_ci"][0],
                         "diff_ci_upper": c["diff_ci"][1], "z": c["z"], "p": c["p"], "note": c["note"]})
    return pd.DataFrame(rows, columns=["set", "a", "b", "method", "paired", "n", "auc_a", "auc_b", "diff", "diff_ci_lower",
                                       "diff_ci_upper", "z", "p", "note"])


def evaluate(paths: list[str | Path], out: str | Path, conf_level: float = 0.95, ci: str = "wilson",
             n_boot: int = 2000, seed: int = 0, figures: bool = True, clinical: ClinicalOptions | None = None,
             cohort: str | Path | None = None, validation: dict | None = None) -> dict:
    """Read prediction files, compute everything, write metrics.json, tables and figures to ``out``.

    ``clinical`` (default: ClinicalOptions()) adds the clinical statistics; ``cohort`` (the manifest)
    gives centres, subgroups and nomogram covariates; ``validation`` (``fusion.validation``'s record)
    is written as ``internal_validation``."""
    out = Path(out)
    pred = load_predictions(paths)
    clinical = clinical or ClinicalOptions()
    metrics, curves = evaluate_frame(pred, conf_level, ci, n_boot, seed, clinical, read_cohort(cohort))
    metrics["inputs"] = [str(p) for p in paths]
    metrics["cohort"] = str(cohort) if cohort else None
    if validation is not None:
        metrics["internal_validation"] = validation
    metrics = _json_safe(metrics)
    write_csv(out / "table2.csv", table2(metrics))
    write_csv(out / "comparisons.csv", comparisons_table(metrics))
    _write_clinical(metrics, curves, out)
    dca = [d.assign(set=s) for s, d in curves["dca"].items()]
    if dca:
        write_csv(out / "dca.csv", pd.concat(dca, ignore_index=True)[["set", "model", "threshold", "net_benefit", "tp", "fp"]])
    if figures:
        _figures(curves, out / "figures", metrics)
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


def _figures(curves: dict, folder: Path, metrics: dict) -> None:
    for s, block in metrics["sets"].items():
        if s in curves["nia"] and len(curves["nia"][s]):
            save_figure(nia_figure(curves["nia"][s], f"Net interventions avoided, {s} set"), folder / f"nia_{s}")
        for col, per_model in (block.get("subgroups") or {}).items():
            save_figure(subgroup_figure(per_model, f"AUC by {col}, {s} set"), folder / f"subgroups_{re.sub(r'[^A-Za-z0-9_-]+', '_', col)}_{s}")
    if curves.get("nomogram") is not None:
        save_figure(nomogram_figure(curves["nomogram"], "Nomogram (risk of OLNM)"), folder / "nomogram")
    for s, rocs in curves["roc"].items():
        save_figure(roc_figure(rocs, f"ROC, {s} set"), folder / f"roc_{s}")
        if curves["calibration"].get(s):
            save_figure(calibration_figure(curves["calibration"][s], f"Calibration, {s} set"), folder / f"calibration_{s}")
        if s in curves["dca"]:
            save_figure(dca_figure(curves["dca"][s], f"Decision curves, {s} set"), folder / f"dca_{s}")
