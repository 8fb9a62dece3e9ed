"""The report's clinical-statistics sections, read from metrics.json: internal validation, reclassification,
interventions avoided, nomogram, sample size, performance by centre and subgroup."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ceusfusion.report.parts import fmt, img, missing, note, outcome_of, para, pval, read_metrics, table, with_ci

VALIDATION_ROWS = {"C": "c-index (AUC)", "Dxy": "Somers' Dxy", "Slope": "calibration slope", "Intercept": "calibration intercept",
                   "B": "Brier score", "R2": "Nagelkerke R2", "Emax": "Emax (max calibration error)", "D": "D (discrimination)",
                   "U": "U (unreliability)", "Q": "Q (quality)", "g": "g (Gini, log-odds)", "gp": "gp (Gini, risk)"}


def validation_section(run: Path) -> str:
    """The rms::validate table of DL_combined (apparent, training, test, optimism, corrected): Harrell's bootstrap
    for a single logistic family, repeated grouped nested CV of the whole procedure otherwise; which one is said."""
    iv = read_metrics(run).get("internal_validation") or {}
    if iv.get("skipped"):
        return note(f"Not run: {iv['skipped']}.")
    if not iv.get("indexes"):
        return missing("The optimism-corrected internal validation (study: fusion.bootstrap > 0)")
    nested = iv.get("validation") == "nested_cv"
    train, test, corr = (("training parts", "held-out parts", "corrected (held-out)") if nested else
                         ("bootstrap training", "bootstrap test", "optimism-corrected"))
    rows = [{"index": VALIDATION_ROWS.get(k, k), "apparent": fmt(v["index_orig"]), train: fmt(v["training"]),
             test: fmt(v["test"]), "optimism": fmt(v["optimism"]), corr: fmt(v["index_corrected"]),
             "fits": v["n"]} for k, v in iv["indexes"].items() if k in VALIDATION_ROWS]
    c = iv["indexes"].get("C", {})
    summary = (f" Apparent c-index {fmt(c.get('index_orig'))}, optimism {fmt(c.get('optimism'))}, corrected "
               f"{fmt(c.get('index_corrected'))}.")
    budget = (f" The fit budget ({iv['fit_budget']} LASSO fits, {iv.get('front_fits_per_unit')} per "
              f"{'repeat' if nested else 'resample'}) set this number." if iv.get("fit_budget") else "")
    fails = f" {iv['n_failed']} fit(s) failed and were skipped." if iv.get("n_failed") else ""
    head = (_nested_head(iv) if nested else _harrell_head(iv)) + summary + budget + fails
    how = ("Columns as rms::validate(method = 'crossvalidation'): apparent, the refits on their own training parts, "
           "on their held-out parts; the corrected index is the held-out mean (optimism = apparent - corrected)."
           if nested else "Columns as rms::validate: index.orig (apparent), training, test, optimism, index.corrected.")
    return para(head) + table(pd.DataFrame(rows)) + note(how + " Emax is computed from the corrected intercept and slope.")


def _cases(iv: dict) -> str:
    """The training rows as cases, and as patients where the record counts them (rows are not patients)."""
    g = iv.get("n_groups")
    return f"{iv.get('n')} training cases" + (f" of {g} patients" if g and g != iv.get("n") else "")


def _harrell_head(iv: dict) -> str:
    asked = iv.get("B_requested")
    of = f" of the {asked} asked" if asked and asked != iv["B"] else ""
    return (f"Harrell's bootstrap optimism correction, valid for this single penalised logistic family ({iv['B']} "
            f"resamples{of} of the {_cases(iv)}, seed {iv.get('seed')}, {iv.get('resampled', 'rows')}): "
            f"the whole {iv.get('model', 'DL_combined')} pipeline was refitted in every resample ({iv.get('refitted', '')}).")


def _nested_head(iv: dict) -> str:
    per = ", ".join(fmt(r["index_corrected"]) for r in iv.get("per_repeat") or [])
    sd = (iv.get("spread") or {}).get("sd")
    chosen = ", ".join(f"{k} {v}" for k, v in (iv.get("families_chosen") or {}).items() if v)
    return (f"Repeated grouped nested cross-validation ({iv.get('repeats')} repeat(s) of {iv.get('folds')} outer folds by "
            f"patient, seeds {iv.get('seed')} + repeat; {_cases(iv)}): {iv.get('refitted', '')}; each "
            f"refit scored the patients held out of it. Harrell's bootstrap is not valid here: a flexible family "
            f"memorises its bootstrap sample, which shares about 63 % of its patients with the rows it is tested on, "
            f"and a choice among families is optimistic on the rows it was made on. Per repeat: {per}"
            + (f" (SD {fmt(sd)})" if sd is not None else "") + f". Families chosen on the outer training parts: {chosen}.")


def reclassification_section(run: Path) -> str:
    m = read_metrics(run)
    rows, undefined = [], []
    for s, block in (m.get("sets") or {}).items():
        for r in block.get("reclassification") or []:
            if "continuous_nri" not in r:
                continue
            c, k, i = r["continuous_nri"], r["categorical_nri"], r["idi"]
            why = k.get("undefined")
            undefined += [f"{s} set, {r['old']} → {r['new']}: {why}"] if why else []
            rows.append({"set": s, "old → new": f"{r['old']} → {r['new']}", "n": r["n"],
                         "continuous NRI (95% CI)": with_ci(c["nri"], c["ci"]), "p": pval(c["p"]),
                         "events / non-events": f"{fmt(c['nri_events'])} / {fmt(c['nri_nonevents'])}",
                         f"categorical NRI at {', '.join(f'{x:g}' for x in r['cuts'])}":
                             "undefined (see below)" if why else with_ci(k["nri"], k["ci"]),
                         "p (cat.)": "NA" if why else pval(k["p"]),
                         "events / non-events (cat.)": f"{fmt(k['nri_events'])} / {fmt(k['nri_nonevents'])}",
                         "IDI (95% CI)": with_ci(i["idi"], i["ci"]), "p (IDI)": pval(i["p"])})
    if not rows:
        return missing("Reclassification")
    o = outcome_of(run)
    return (para("Net reclassification improvement of each later model over each earlier one (Hmisc::improveProb): "
                 f"the events part is the share of patients with the outcome ({o.positive}) whose risk went up minus "
                 f"down, the non-events part the share of those without it ({o.negative}) whose risk went down minus "
                 "up; the categorical NRI counts only moves across the risk cut-points (a risk equal to a cut belongs to "
                 "the higher category). The IDI is the gain in discrimination slope. " + cut_points_sentence(m))
            + table(pd.DataFrame(rows)) + "".join(note(u) for u in undefined))


def cut_points_sentence(metrics: dict, key: str = "nri_cuts") -> str:
    """Where the risk cut points (``nri_cuts``) or the threshold probabilities (``thresholds``) came from."""
    th = metrics.get("clinical_thresholds") or {}
    if not th.get(key):
        return ""
    what = "Risk cut points" if key == "nri_cuts" else "Threshold probabilities"
    src = th.get(f"{key}_source", "not recorded")
    rule = f" ({th['rule']})" if src.startswith("from") and th.get("rule") else ""
    return f"{what} {', '.join(f'{x:g}' for x in th[key])}: {src}{rule}."


def interventions_section(run: Path) -> str:
    m = read_metrics(run)
    o = outcome_of(run)
    rows, notes, figs = [], [], ""
    for s, block in (m.get("sets") or {}).items():
        inter = block.get("interventions") or {}
        for model, tab in (inter.get("models") or {}).items():
            for r in tab:
                rows.append({"set": s, "model": model, "threshold": f"{100 * r['threshold']:g} %",
                             f"{o.treated} per 100": fmt(r["interventions"], 1),
                             f"{o.avoided} per 100": fmt(r["interventions_avoided"], 1),
                             f"{o.missed} per 100": fmt(r["events_missed"], 1),
                             f"net {o.avoided} per 100": fmt(r["net_intervention_avoided"], 1),
                             "net benefit": fmt(r["net_benefit"])})
        notes += [f"{s} set, {model}: {why}" for model, why in (inter.get("notes") or {}).items()]
        figs += img(run / "evaluation" / "figures" / f"nia_{s}.png", f"Net interventions avoided: {s} set")
    if not rows:
        return missing("Interventions avoided")
    return (para(f"Compared with {o.intervention} for every patient: at each threshold probability the model recommends "
                 f"{o.intervention} when the predicted risk is at or above it; 'avoided' counts the patients spared, "
                 f"'missed' those of them with the outcome ({o.positive}). The net number avoided (decision-curve "
                 "analysis, dcurves' net_intervention_avoided) weighs each missed case by the odds at the threshold. "
                 + cut_points_sentence(m, "thresholds"))
            + table(pd.DataFrame(rows)) + "".join(note(t) for t in notes) + figs)


def nomogram_section(run: Path) -> str:
    nm = read_metrics(run).get("nomogram") or {}
    if not nm.get("points_table"):
        return missing("The nomogram" + (f" ({nm['note']})" if nm.get("note") else ""))
    coef = pd.DataFrame({"term": list(nm["coefficients"]), "coefficient": [fmt(v, 4) for v in nm["coefficients"].values()]})
    aucs = [f"{s}: AUC {with_ci(a['auc'], a['ci'])} ({a['scoring']}, n = {a['n']})"
            for s, a in ((k.removeprefix("auc_"), nm[k]) for k in ("auc_train", "auc_test") if k in nm)]
    points = pd.DataFrame(nm["points_table"]).assign(points=lambda d: d["points"].map(lambda v: fmt(v, 1)))
    body = para(f"{nm['model']} ({nm['n_train']} training cases, {nm['n_train_pos']} {outcome_of(run).positive}); {nm['score_scale']}. "
                + "; ".join(aucs) + ".")
    body += note(nm["note"]) if nm.get("note") else ""
    left = nm.get("covariates_left_out") or {}
    body += note("Covariates left out: " + "; ".join(f"{k}: {v}" for k, v in left.items())) if left else ""
    body += img(run / "evaluation" / "figures" / "nomogram.png", "Nomogram", 1000)
    return body + "<h3>Coefficients</h3>" + table(coef) + "<h3>Points table (rms::nomogram)</h3>" + table(points, 400)


def sample_size_section(run: Path) -> str:
    ss = read_metrics(run).get("sample_size") or {}
    if not ss:
        return missing("The sample-size check")
    if not ss.get("sentence"):
        return note(ss.get("note", "sample size not computed"))
    mn = ss["minimum"]
    crit = pd.DataFrame([{"criterion": name, **r} for name, r in zip(
        ("1: shrinkage >= 0.9", "2: optimism in Nagelkerke R2 <= 0.05", "3: overall risk within +-0.05", "minimum"),
        mn["results_table"])])
    return (f"<p><b>{html.escape(ss['sentence'][0].upper() + ss['sentence'][1:])}.</b></p>"
            + para(f"Riley et al. (BMJ 2020; pmsampsize) for a binary outcome with {ss['parameters']} candidate predictor "
                   f"parameters (what fusion considered), prevalence {fmt(mn['prevalence'])} and anticipated Cox-Snell R2 "
                   f"{fmt(mn['rsquared'], 4)} ({ss.get('r2_source')}).") + table(crit))


def subgroups_section(run: Path) -> str:
    m = read_metrics(run)
    positive = f"n {outcome_of(run).positive}"
    rows, het, figs = [], [], ""
    for s, block in (m.get("sets") or {}).items():
        for col, per_model in (block.get("subgroups") or {}).items():
            for model, r in per_model.items():
                rows += [{"set": s, "by": col, "model": model, "stratum": x["stratum"], "n": x["n"], positive: x["n_pos"],
                          "AUC (95% DeLong CI)": with_ci(x["auc"], x["auc_ci"]) if x["auc"] is not None else "NA",
                          "note": x.get("note") or ""} for x in r["strata"]]
                h = r.get("heterogeneity") or {}
                het.append({"set": s, "by": col, "model": model, "Cochran Q": fmt(h.get("QE")), "df": h.get("df"),
                            "p": pval(h.get("QEp")), "I2 (%)": fmt(h.get("I2"), 1), "tau2": fmt(h.get("tau2"), 4),
                            "note": r.get("note") or "; ".join(f"{k}: {v}" for k, v in (r.get("excluded") or {}).items())})
            figs += img(run / "evaluation" / "figures" / f"subgroups_{col}_{s}.png", f"AUC by {col}: {s} set")
    if not rows:
        return missing("Performance by centre and subgroup (needs the cohort's centre or a requested column)")
    return (para("AUC with its DeLong 95% CI in each stratum; the strata are independent patients, so heterogeneity is "
                 "Cochran's Q of the stratum AUCs weighted by their DeLong variances (metafor::rma), with I2.")
            + table(pd.DataFrame(rows), 400) + "<h3>Heterogeneity</h3>" + table(pd.DataFrame(het)) + figs)
