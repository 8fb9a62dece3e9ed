"""The report's radiomics section: how the features were computed (IBSI settings, library, ROI sources,
the robustness filter), and the Rad / DL / DLR / DLR + clinical comparison with the families LASSO kept.
Everything is read from RUN/radiomics/ and metrics.json; absent in a run without a radiomics stage."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ceusfusion.report.parts import fmt, missing, note, para, pval, read_metrics, table, with_ci


def has_radiomics(run: Path) -> bool:
    return (run / "radiomics" / "radiomics.json").is_file()


def settings_paragraph(rec: dict, cases: pd.DataFrame) -> str:
    s = rec["settings"]
    rois = ", ".join(f"{k} ({v})" for k, v in cases["roi_source"].value_counts().items()) if len(cases) else "none"
    units = ", ".join(sorted(cases["unit"].astype(str).unique())) if len(cases) else "px"
    return para(
        f"IBSI features (MIRP {rec['library']['mirp']}) of {rec['n_cases']} cases ({rec['n_failed']} failed, listed in "
        f"radiomics/failures.csv): discretisation {rec['discretisation']}, intensity range "
        f"{s['intensity_range'] or 'the ROI’s own'}, spacing in {units}, {rec['aggregation']}. ROI sources: {rois}. "
        f"Of {rec['n_features_extracted']} features, {rec['n_incomplete']} are missing for some case (e.g. shape "
        f"without a mask) and stay out of the models; {rec['n_dropped_icc']} had an ICC(1,1) below "
        f"{rec['icc_threshold']} under ROI perturbations of {rec['icc_cases']} training cases and were dropped; "
        f"{rec['n_features_kept']} entered the models.") + note(
        "Not IBSI-defined (2-D shape, scikit-image): " + ", ".join(rec["not_ibsi"]) + ". Not computed: "
        + "; ".join(f"{k}: {v}" for k, v in rec["missing_families"].items()) + ".")


def comparison_table(run: Path, comp: dict) -> str:
    """AUC per set of DL and the radiomics models, the paired DeLong test against DL, the families kept."""
    names = [n for n in [comp.get("dl"), *comp.get("models", {})] if n]
    rows = []
    for set_name, block in read_metrics(run).get("sets", {}).items():
        delong = {(c["a"], c["b"]): c for c in block.get("comparisons", [])}
        for n in names:
            m = block.get("models", {}).get(n)
            if m is None:
                continue
            c = delong.get((comp.get("dl"), n)) or delong.get((n, comp.get("dl")))
            kept = comp["models"].get(n, {}).get("families_kept") or {}
            rows.append({"set": set_name, "model": n, "AUC (95% CI)": with_ci(m["auc"], m["auc_ci"]),
                         "DeLong p vs DL": "" if n == comp.get("dl") or c is None else pval(c.get("p")),
                         "LASSO kept": ", ".join(f"{k} {v}" for k, v in kept.items()) or ("" if n == comp.get("dl") else "none")})
    return table(pd.DataFrame(rows)) if rows else missing("The Rad / DL / DLR comparison (metrics.json)")


def radiomics_section(run: Path) -> str:
    d = run / "radiomics"
    rec = json.loads((d / "radiomics.json").read_text())
    cases = pd.read_csv(d / "cases.csv", dtype=str) if (d / "cases.csv").is_file() else pd.DataFrame()
    body = settings_paragraph(rec, cases)
    comp_path = d / "comparison.json"
    if comp_path.is_file():
        comp = json.loads(comp_path.read_text())
        body += para(f"Rad (radiomics alone), DL ({comp.get('dl')}), DLR (deep + radiomics) and DLR + clinical are "
                     "fitted by the same grouped, nested fusion procedure; NRI/IDI and decision curves of every pair "
                     "are in the sections below.") + comparison_table(run, comp)
        for name, why in (comp.get("skipped") or {}).items():
            body += note(f"{name}: not fitted ({why}).")
    return body + note(f"Extraction: {fmt(rec['seconds_per_roi'], 2)} s per ROI.")
