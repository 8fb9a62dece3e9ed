"""A TRIPOD+AI checklist (Collins et al., BMJ 2024;385:e078378) for the study: for each item, where this
report or the run's manifest answers it, and what the authors must supply.

An item is marked as answered by a section only when the run has that section's record (metrics.json
block, file, manifest key); otherwise it falls back to the authors. Item wording is paraphrased; the
published checklist is the reference.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ceusfusion.core.runlayout import RunLayout
from ceusfusion.report.parts import outcome_of, read_metrics

# (item, topic, what it asks (paraphrased), [(probe, where answered)], what the authors must supply or None)
ITEMS = [
    ("1", "Title", "identify the study as developing/evaluating a prediction model, its population and outcome", [],
     "the title (the report title is a working title)"),
    ("2", "Abstract", "structured abstract (TRIPOD+AI for Abstracts)", [], "the abstract"),
    ("3a", "Background", "healthcare context, diagnostic or prognostic, rationale, existing models", [],
     "the clinical context ({context}) and existing models"),
    ("3b", "Background", "target population, intended purpose and users in the care pathway", [], "intended use and users"),
    ("3c", "Background", "known health inequalities between sociodemographic groups", [], "known inequalities"),
    ("4", "Objectives", "development and/or validation objectives", [("evaluation", "this report: development with "
     "internal validation, plus a held-out test set")], "the study objectives in the authors' words"),
    ("5a", "Data", "sources of development and evaluation data, rationale, representativeness",
     [("cohort", "Cohort flow and counts; manifest.json inputs (cohort file and its sha256)")], "the data source and its representativeness"),
    ("5b", "Data", "dates of accrual (start/end) and follow-up", [], "accrual dates"),
    ("6a", "Participants", "setting, number and location of centres",
     [("centres", "Performance by centre (number of centres from the manifest)")], "the setting (care level) and centre locations"),
    ("6b", "Participants", "eligibility criteria", [], "eligibility criteria"),
    ("6c", "Participants", "treatments received and how they were handled", [], "treatments, if relevant"),
    ("7", "Data preparation", "pre-processing and quality checks, and whether similar across groups",
     [("prepare", "manifest.json config.prepare and stages.prepare (keyframes, ROI crop, cache); prepared/failures.csv")],
     "image acquisition (machines, settings) and whether quality differed across groups"),
    ("8a", "Outcome", "definition, time horizon, how and when assessed, consistency across groups",
     [("cohort", "manifest column label (0/1)")], "the definition of {outcome} (the reference standard: how, when and by whom it was established) and its timing"),
    ("8b", "Outcome", "qualifications of outcome assessors if subjective", [], "who assessed the outcome"),
    ("8c", "Outcome", "blinding of outcome assessment", [], "blinding of outcome assessment"),
    ("9a", "Predictors", "choice of candidate predictors, any pre-selection",
     [("fusion", "DL_combined: feature fusion (inputs, LASSO selection inside the CV)"),
      ("sample_size", "Sample size (candidate predictor parameters)")], "why these clinical covariates were considered"),
    ("9b", "Predictors", "definition and measurement of every predictor, blinding",
     [("prepare", "manifest.json config (keyframe policy, ROI, image size); Table 1 lists the covariates")],
     "definitions of the clinical covariates and blinding of predictor assessment"),
    ("9c", "Predictors", "qualifications of predictor assessors if subjective", [],
     "who drew the nodule masks (ITK-SNAP) and their experience"),
    ("10", "Sample size", "how the study size was arrived at; whether sufficient", [("sample_size", "Sample size (Riley et al.)")],
     "how the cohort size was arrived at"),
    ("11", "Missing data", "handling of missing data, reasons for omitting data",
     [("cohort", "Cohort flow: cases that could not be prepared, with the reason; fusion imputes covariates (median) inside each fold")],
     "missing clinical data and its handling beyond what the pipeline did"),
    ("12a", "Analysis", "how the data were used (partitioning), considering sample size",
     [("training", "Cross-validated results (grouped CV inside the training set; the test set is scored once)")], None),
    ("12b", "Analysis", "handling of predictors (functional form, rescaling, standardisation)",
     [("fusion", "DL_combined: feature fusion (standardised inside each fold; score inputs as logits)")], None),
    ("12c", "Analysis", "model type, building steps, hyperparameter tuning, internal validation",
     [("training", "Cross-validated results per architecture"), ("fusion", "DL_combined: feature fusion (families, grids)"),
      ("validation", "Internal validation (bootstrap or nested CV)")], None),
    ("12d", "Analysis", "heterogeneity across clusters (e.g. hospitals)", [("centres", "Performance by centre (Cochran's Q, I2)")],
     None),
    ("12e", "Analysis", "performance measures and plots, and model comparison",
     [("evaluation", "Table 2, ROC, calibration, decision curves, DeLong tests"), ("reclassification", "Reclassification (NRI, IDI)"),
      ("interventions", "Interventions avoided")], None),
    ("12f", "Analysis", "model updating (e.g. recalibration)", [], "any recalibration (ceusfusion performs none)"),
    ("12g", "Analysis", "how predictions were calculated for evaluation",
     [("evaluation", "predictions/*.csv with their scoring label (out-of-fold, refit); the export bundle")], None),
    ("13", "Class imbalance", "class-imbalance methods and recalibration",
     [("training", "Cross-validated results: how the numbers were made (class weighting and its logit correction)")], None),
    ("14", "Fairness", "approaches to model fairness", [("subgroups", "Performance by subgroup")],
     "the fairness approach and the groups that matter"),
    ("15", "Model output", "output (probabilities, classification) and how thresholds were chosen",
     [("evaluation", "Table 2: probabilities; Youden threshold fixed on the training set, carried to the test set")], None),
    ("16", "Training vs evaluation", "differences between development and evaluation data",
     [("table1", "Table 1 (baseline characteristics)")], "differences in setting, eligibility, outcome and predictors"),
    ("17", "Ethical approval", "ethics committee and consent", [], "ethics approval and consent"),
    ("18a", "Funding", "source and role of funding", [], "funding"),
    ("18b", "Conflicts of interest", "declarations", [], "conflicts of interest"),
    ("18c", "Protocol", "where the protocol is accessible", [], "the protocol (or that none was prepared)"),
    ("18d", "Registration", "study registration", [], "registration (or that the study was not registered)"),
    ("18e", "Data sharing", "availability of the data", [], "data availability"),
    ("18f", "Code sharing", "availability of the analytical code",
     [("manifest", "Environment: ceusfusion and library versions; manifest.json holds the full configuration and seed")],
     "where the code and configuration are shared"),
    ("19", "Patient and public involvement", "involvement or none", [], "patient and public involvement"),
    ("20a", "Participants", "flow of participants, numbers with and without the outcome",
     [("cohort", "Cohort flow and counts")], "a flow diagram from the eligible population"),
    ("20b", "Participants", "characteristics overall and per source, missing data",
     [("table1", "Table 1"), ("centres", "Performance by centre")], None),
    ("20c", "Participants", "development vs evaluation distribution of predictors and outcome",
     [("table1", "Table 1; Cohort counts per split")], None),
    ("21", "Model development", "participants and events in each analysis",
     [("evaluation", "Table 2 and the fusion/validation records (n and events per analysis)")], None),
    ("22", "Model specification", "the full model, to predict for new individuals",
     [("nomogram", "Nomogram (coefficients, points table)"), ("manifest", "ceusfusion export: the model bundle")],
     "access to the bundle and any restrictions on its use"),
    ("23a", "Model performance", "performance with CIs, incl. key subgroups",
     [("evaluation", "Table 2 (DeLong CIs)"), ("subgroups", "Performance by subgroup")], None),
    ("23b", "Model performance", "heterogeneity across clusters", [("centres", "Performance by centre")], None),
    ("24", "Model updating", "results of any updating", [], "updating results (none performed by ceusfusion)"),
    ("25", "Interpretation", "overall interpretation, fairness, previous studies", [], "the interpretation"),
    ("26", "Limitations", "limitations: sample, sample size, overfitting, missing data",
     [("sample_size", "Sample size"), ("validation", "Internal validation (optimism)"), ("safeguards", "Safeguards")],
     "the limitations in the authors' words"),
    ("27a", "Usability", "handling of poor-quality or unavailable input data in practice",
     [("prepare", "prepared/failures.csv: why cases could not be used")], "how such inputs are handled in practice"),
    ("27b", "Usability", "user interaction and expertise required", [], "user interaction and expertise"),
    ("27c", "Usability", "next steps, applicability and generalisability", [], "next steps (e.g. external validation)"),
]


def _probes(run: Path) -> set[str]:
    """Which records this run has."""
    m = read_metrics(run)
    sets = (m.get("sets") or {}).values()
    man = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").is_file() else {}
    have = {"manifest"} if man else set()
    checks = {"cohort": (run / "cohort.csv").is_file(), "prepare": RunLayout(run).prepared.is_dir(),
              "training": (run / "models").is_dir(), "fusion": (run / "fusion" / "fusion.json").is_file(),
              "evaluation": bool(m), "table1": (run / "evaluation" / "table1.csv").is_file(),
              "sample_size": bool((m.get("sample_size") or {}).get("sentence")),
              "validation": bool((m.get("internal_validation") or {}).get("indexes")),
              "nomogram": bool((m.get("nomogram") or {}).get("points_table")),
              "reclassification": any(b.get("reclassification") for b in sets),
              "interventions": any(b.get("interventions") for b in sets),
              "centres": any(any(c in (b.get("subgroups") or {}) for c in ("center", "centre")) for b in sets),
              "subgroups": any(set(b.get("subgroups") or {}) - {"center", "centre"} for b in sets),
              "safeguards": bool(man.get("safeguards"))}
    return have | {k for k, v in checks.items() if v}


def checklist(run: Path) -> list[dict]:
    """One record per TRIPOD+AI item: where it is answered here and what the authors must add."""
    have = _probes(run)
    o = outcome_of(run)  # the study's outcome in the items that name it; neutral words when it named none
    words = {"outcome": o.name if o.given else "the outcome",
             "context": f"{o.name}, {o.intervention}" if o.given else "the outcome, the intervention a positive prediction leads to"}
    out = []
    for item, topic, asks, where, authors in ITEMS:
        authors = authors.format(**words) if authors else authors
        found = [w for probe, w in where if probe in have]
        status = "answered" if found and not authors else "partly" if found else "authors"
        out.append({"item": item, "topic": topic, "asks": asks, "where": found,
                    "authors": authors if authors else None, "status": status})
    return out


def tripod_section(run: Path) -> str:
    rows = checklist(run)
    mark = {"answered": "<span class=ok>✔</span>", "partly": "◐", "authors": "<span class=warn>✎</span>"}
    body = "".join(
        f"<tr><td>{mark[r['status']]} {html.escape(r['item'])}</td><td>{html.escape(r['topic'])}</td><td>{html.escape(r['asks'])}</td>"
        f"<td>{html.escape('; '.join(r['where']) or '—')}</td>"
        f"<td>{html.escape('the authors must supply this: ' + r['authors']) if r['authors'] else ''}</td></tr>" for r in rows)
    n = {s: sum(r["status"] == s for r in rows) for s in mark}
    return (f"<p>TRIPOD+AI (Collins et al., BMJ 2024): {n['answered']} items answered by this report or the run's manifest, "
            f"{n['partly']} partly, {n['authors']} for the authors (✎). Item wording paraphrased; use the published checklist "
            "for the manuscript.</p><table><tr><th>item</th><th>topic</th><th>asks for</th><th>answered here by</th>"
            f"<th>still needed</th></tr>{body}</table>")
