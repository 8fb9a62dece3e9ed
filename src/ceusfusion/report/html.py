"""The study report: one self-contained HTML file a clinician can open offline.

Everything is read from the run directory (so every number traces back to a
file) and images are embedded as data URIs. Sections whose inputs are absent
are left out with a note rather than failing.
"""

from __future__ import annotations

import html
import json
import platform
import re
from pathlib import Path

import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import claim, write_text
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.explain.sanity import RANK_LIMIT, localisation_verdict, randomisation_verdict
from ceusfusion.ingest.cache import read_index
from ceusfusion.ingest.cohort import groups_of
from ceusfusion.ingest.prepare import roi_source_counts
from ceusfusion.models.select import rank_models
from ceusfusion.report.clinical import (
    interventions_section,
    nomogram_section,
    reclassification_section,
    sample_size_section,
    subgroups_section,
    validation_section,
)
from ceusfusion.report.parts import img, missing, note, outcome_of, para, read_metrics, table
from ceusfusion.report.radiomics import has_radiomics, radiomics_section
from ceusfusion.report.tripod import tripod_section
from ceusfusion.segment.link import cv_rows, read_link
from ceusfusion.stats.scale import SCALE_RANGE

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;line-height:1.45}
h1{border-bottom:3px solid #2b6cb0;padding-bottom:.3em}h2{color:#2b6cb0;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#edf2f7}tr:nth-child(even) td{background:#f9fafb}.wide{overflow-x:auto;max-width:100%}.wide table{margin:.3em 0}
.fig{display:inline-block;margin:.5em;vertical-align:top;max-width:520px}.fig img{max-width:100%;border:1px solid #eee}
.cap{font-size:.85em;color:#444;margin-top:.2em}.note{color:#666;font-style:italic}.ok{color:#276749;font-weight:bold}.warn{color:#c05621;font-weight:bold}
ul.checks{list-style:none;padding-left:.2em}ul.checks li{margin:.25em 0}code{background:#f1f1f1;padding:0 .2em}
"""


_img, _table, _missing = img, table, missing  # the shared building blocks (report.parts)


def _section(title: str, body: str, anchor: str | None = None) -> str:
    ident = f' id="{anchor}"' if anchor else ""
    return f"<h2{ident}>{html.escape(title)}</h2>\n{body}\n"


def cohort_section(run: Path) -> str:
    path = run / "cohort.csv"
    if not path.is_file():
        return _missing("Cohort")
    df = pd.read_csv(path, dtype={"case_id": str, "group": str})
    groups = groups_of(df)
    sets = df["split"] if "split" in df else pd.Series("all", index=df.index)
    counts = df.groupby([sets, "label"]).size().unstack(fill_value=0)
    words = outcome_of(run)
    counts.columns = [f"{words.label(c)} (label {c})" for c in counts.columns]
    counts.insert(0, "set", counts.index)
    counts["cases"] = counts.iloc[:, 1:].sum(axis=1)
    counts["patients"] = groups.groupby(sets).nunique()
    if (groups == df["case_id"].astype(str)).all():
        text = (f"{len(df)} cases in the manifest; no patient grouping was recorded (no group differs from its case id), "
                "so each case is counted as its own patient.")
    else:
        text = f"{len(df)} cases of {groups.nunique()} patients in the manifest (a patient may have several cases)."
    body = para(text) + _table(counts)
    failures = RunLayout(run).prepare_failures
    if failures.is_file():
        f = pd.read_csv(failures)
        body += (f"<p>{len(f)} case(s) could not be prepared and were excluded:</p>" + _table(f)) if len(f) else "<p>Every case was prepared.</p>"
    return body + roi_sources_table(run) + segmenter_paragraph(run)


def roi_sources_table(run: Path) -> str:
    """Where each prepared case's ROI came from (manual mask, predicted mask, box, whole frame), per split."""
    index = run / "prepared" / "index.csv"
    counts = roi_source_counts(read_index(run)) if index.is_file() else {}
    rows = [{"picture": pic, "ROI from": src.replace("_", " "), **per} for pic, by in counts.items() for src, per in by.items()]
    if not rows:
        return ""
    df = pd.DataFrame(rows).fillna(0)
    counts_cols = [c for c in df.columns if c not in ("picture", "ROI from")]
    df[counts_cols] = df[counts_cols].astype(int)  # a set without a source is 0 cases, not 0.000
    return para("Where each prepared case's region of interest came from (cases per set):") + _table(df)


def segmenter_paragraph(run: Path) -> str:
    """The segmenter behind the predicted masks (segment.link): what trained it and its cross-validated Dice."""
    try:
        link = read_link(run)
    except CeusError as exc:
        return note(str(exc))
    parts = []
    for f in link.segmenters if link else []:
        if f.problem:
            parts.append(note(f"{len(f.pictures)} predicted mask(s): {f.problem_in_words()}."))
            continue
        folds = max((len(v) for v in f.cv_folds.values()), default=0)
        parts.append(para(
            f"{len(f.pictures)} mask(s) were predicted by the segmenter {Path(f.model).name} ({f.encoder}; record sha256 "
            f"{f.record_sha256[:12]}), trained on the masks of {len(f.trained_on)} training-split cases of "
            f"{f.n_patients()} patients. Its cross-validated agreement with the manual masks of held-out patients"
            f"{f' ({folds} folds)' if folds else ''}:"))
        rows = pd.DataFrame(cv_rows(f))
        if len(rows):
            rows["Dice per fold"] = [", ".join(f"{d:.3f}" if isinstance(d, (int, float)) else "-" for d in v) or "not recorded" for v in rows["Dice per fold"]]
            parts.append(_table(rows))
    return "".join(parts)


def training_section(run: Path) -> str:

    df = rank_models(run)
    if df.empty:
        return _missing("Cross-validated training results")
    df = df.rename(columns={"cv_auc_mean": "mean CV AUC", "cv_auc_std": "SD", "oof_auc": "pooled out-of-fold AUC", "weights_used": "weights"})
    figs = [_img(f) for f in sorted((run / "evaluation" / "figures").glob("cv_roc_*.png"))]
    sel = run / "selection.json"
    chosen = ""
    if sel.is_file():
        best = json.loads(sel.read_text()).get("best", {})
        chosen = "<p>Selected: " + ", ".join(f"<b>{html.escape(m)}</b>: {html.escape(n)}" for m, n in best.items()) + "</p>"
    return ("<p>Architectures are ranked by mean AUC over the cross-validation folds of the training set; "
            "the best per modality is selected here, never on the test set.</p>" + honesty_paragraph(df)
            + _table(df) + chosen + pretraining_paragraph(run) + "".join(figs))


SELECT_SENTENCES = {
    "last": "each fold kept its last epoch (a fixed epoch count), so the out-of-fold AUCs were not chosen on the cases "
            "they score",
    "best": "each fold kept the epoch with the best AUC on that fold's own validation cases, so the mean CV AUC, the "
            "pooled out-of-fold AUC, the Youden thresholds and Table 2's training rows are optimistic",
}
TEST_SENTENCES = {
    "refit": "test cases were scored once, by one model per architecture refitted on every training case for the same "
             "number of epochs (the scale of the out-of-fold scores)",
    "fold-mean": "test cases were scored once, by the mean of the fold models, whose scores are on a shrunken scale "
                 "compared with the out-of-fold ones that fixed the thresholds",
}
WEIGHT_SENTENCES = {
    "none": "the loss was unweighted, so probabilities are on the cohort's prevalence",
    "balanced": "positives were weighted n0/n1 in the loss and the output corrected by -log(n0/n1), so probabilities "
                "are on the cohort's prevalence",
}


def honesty_paragraph(df: pd.DataFrame) -> str:
    """What a reader must know about the training numbers, from what each model recorded."""
    parts = []
    for col, sentences in (("select", SELECT_SENTENCES), ("test_scoring_mode", TEST_SENTENCES),
                           ("class_weight", WEIGHT_SENTENCES)):
        for value, names in df.groupby(df[col].fillna("not recorded"))["name"]:
            text = sentences.get(value, f"{col} was not recorded (a model trained by an older version)")
            who = "" if len(names) == len(df) else f" ({', '.join(map(html.escape, names))})"
            parts.append(html.escape(text) + who)
    return "<p>How these numbers were made: " + "; ".join(parts) + ".</p>" if parts else ""


def pretraining_paragraph(run: Path) -> str:
    """Self-supervised pretraining of the selected models, as its provenance record says."""
    sel = run / "selection.json"
    names = json.loads(sel.read_text()).get("best", {}).values() if sel.is_file() else []
    out = []
    for n in names:
        sp = RunLayout(run).model_summary(n)
        fact = json.loads(sp.read_text()).get("pretrain_provenance") if sp.is_file() else None
        if not fact:
            continue
        text = f"{n} started from self-supervised weights {fact.get('weights')}"
        if fact.get("test_overlap"):
            text += (f", pretrained on {len(fact['test_overlap'])} test case(s) of this cohort, used by the explicit "
                     "choice --allow-pretrain-overlap: its test results are not independent of those cases")
        if fact.get("transductive_train_frames"):
            text += ("; the pretraining saw the training cases' videos (validation folds included) without labels "
                     "(transductive), which can make cross-validation optimistic")
        if fact.get("note"):
            text += f"; {fact['note']}"
        out.append(html.escape(text) + ".")
    return "<p>" + " ".join(out) + "</p>" if out else ""


def evaluation_section(run: Path) -> str:
    ev = run / "evaluation"
    if not (ev / "metrics.json").is_file():
        return _missing("Evaluation")
    metrics = read_metrics(run)
    body = ""
    if (ev / "table2.csv").is_file():
        body += ("<h3>Table 2. Performance (AUC with its 95% CI; thresholds fixed on the training set)</h3>"
                 "<p>The <i>rows</i> column says how each set's probabilities were obtained: <i>out-of-fold</i> by a "
                 "model that never saw the case; <i>refit</i> by the model fitted on every training case, scoring "
                 "test cases it never saw; <i>optimistic</i> marks rows where something (an epoch, a classifier "
                 "family) was chosen on those same cases.</p>" + _table(pd.read_csv(ev / "table2.csv"))
                 + table2_notes(metrics))
    body += scale_block(ev)
    if (ev / "comparisons.csv").is_file():
        body += "<h3>Pairwise DeLong tests</h3>" + _table(pd.read_csv(ev / "comparisons.csv"))
    figs = ev / "figures"
    for stem in ("roc", "calibration", "dca"):
        for f in sorted(figs.glob(f"{stem}_*.png")):
            body += _img(f)
    return body


def threshold_sentence(metrics: dict) -> str:
    """What Table 2's threshold is, and which models (if any) had to take their own set's."""
    own = sorted({m for b in (metrics.get("sets") or {}).values() for m, r in (b.get("models") or {}).items()
                  if r.get("threshold_source") == "self"})
    text = ("Threshold: the Youden threshold (the probability that maximises sensitivity + specificity - 1) of each "
            "model on its training rows (out-of-fold), carried unchanged to the test set; a case is called positive "
            "when its probability is at or above it. Sensitivity, specificity, PPV, NPV and accuracy are read at it.")
    if own:
        text += (f" {', '.join(own)} had no training rows, so each took the Youden threshold of its own set, which "
                 "is optimistic on that set.")
    return text


def selection_sentence(metrics: dict) -> str:
    """How each model's "AUC (selection-corrected)" was computed (metrics.json selection_corrected_methods)."""
    methods = metrics.get("selection_corrected_methods") or {}
    if not methods:
        return ("AUC (selection-corrected): not computed in this run (the selection stage recorded no correction); "
                "a training AUC of a model chosen as the best of several is optimistic.")
    train = ((metrics.get("sets") or {}).get("train") or {}).get("models") or {}
    per = []
    for model, method in methods.items():
        k = (train.get(model, {}).get("selection_corrected") or {}).get("n_candidates")
        per.append(f"{model}: {method or 'method not recorded'}" + (f" ({k} candidates)" if k and k > 1 else ""))
    return ("AUC (selection-corrected), on the training rows: the AUC of a model chosen as the best of several "
            "candidates on the same rows is the maximum of noisy estimates, so it is corrected for that choice. "
            + "; ".join(per) + ".")


def ci_sentence(metrics: dict) -> str:
    """Which CI method each model's AUC and proportions used; per model and set only where they differ."""
    per = {(s, m): (r.get("ci_method_auc") or "delong", r.get("ci_method_proportions") or metrics.get("ci_method", ""))
           for s, b in (metrics.get("sets") or {}).items() for m, r in (b.get("models") or {}).items()}
    if not per:
        return ""
    if len(set(per.values())) == 1:
        auc, prop = next(iter(per.values()))
        return f"95% CIs: AUC by {_ci_name(auc)}; sensitivity, specificity, PPV, NPV and accuracy by {_ci_name(prop)}."
    return ("95% CIs (a set where a patient has several rows takes patient-level CIs): " + "; ".join(
        f"{m} ({s} set): AUC by {_ci_name(a)}, proportions by {_ci_name(p)}" for (s, m), (a, p) in per.items()) + ".")


def _ci_name(method: str) -> str:
    return {"delong": "DeLong", "wilson": "Wilson score", "bootstrap": "bootstrap"}.get(method, method)


def table2_notes(metrics: dict) -> str:
    return "".join(f'<p class="note">{html.escape(t)}</p>' for t in
                   (threshold_sentence(metrics), selection_sentence(metrics), ci_sentence(metrics)) if t)


def scale_block(ev: Path) -> str:
    """evaluation/scale.csv: is the test set scored on the scale of the out-of-fold rows?"""
    path = ev / "scale.csv"
    if not path.is_file():
        return ""
    df = pd.read_csv(path).rename(columns={
        "sd_oof": "SD of out-of-fold logits", "sd_test": "SD of test logits", "ratio": "ratio test / out-of-fold",
        "ci": "95% CI of the ratio", "citl": "calibration-in-the-large (test)", "ok": f"within {SCALE_RANGE[0]:g}-{SCALE_RANGE[1]:g}"})
    ok = df.columns[-1]
    df[ok] = df[ok].map(lambda v: "yes" if str(v) == "True" else ("no" if str(v) == "False" else v))
    return ("<h3>Test scores on the out-of-fold scale</h3>"
            + para("Thresholds, scalers and the fusion classifier were fitted on out-of-fold scores, while the test set "
                   "was scored by another model (the refit, or the fold mean). The ratio of the test logits' SD to the "
                   "out-of-fold logits' SD (with a patient-level bootstrap 95% CI) measures whether the test scores are "
                   "on the same scale: about 1 when they are, below 1 for shrunken scores, whose thresholds then "
                   "misplace cases. Calibration-in-the-large is the test set's intercept with the logit as offset "
                   "(0: predicted and observed risk agree on average). A test set from another centre can "
                   "legitimately differ.")
            + _table(df))


def table1_section(run: Path) -> str:
    """Table 1 (its Summary and Test columns name what each row shows), then the rule behind its p-values."""
    path = run / "evaluation" / "table1.csv"
    if not path.is_file():
        return _missing("Table 1")
    side = run / "evaluation" / "table1_tests.json"
    rule = json.loads(side.read_text()).get("note") if side.is_file() else None
    return _table(pd.read_csv(path, dtype=str, keep_default_na=False)) + (note(rule) if rule else "")


def fusion_section(run: Path) -> str:
    fdir = run / "fusion"
    if not fdir.is_dir():
        return _missing("Fusion (DL_combined)")
    body = ""
    if (fdir / "cv_results.csv").is_file():
        body += "<p>Classifier families compared by cross-validated AUC inside the training set:</p>" + _table(pd.read_csv(fdir / "cv_results.csv"))
    for f in sorted(fdir.rglob("*.png")):
        body += _img(f, f.stem.replace("_", " "))  # a figure report.captions knows gets its caption
    return body


def explain_section(run: Path) -> str:
    figs = sorted((run / "explain").rglob("figure5*.png")) or sorted((run / "explain").rglob("*.png"))[:6]
    if not figs:
        return _missing("Grad-CAM")
    o = outcome_of(run)
    return (f"<p>Grad-CAM heat maps for examples without and with {html.escape(o.name)} ({html.escape(o.negative)}, "
            f"{html.escape(o.positive)}; single-frame and five-frame models); each map shows the evidence for the class "
            "the model predicts for that case.</p>"
            + "".join(_img(f) for f in figs) + cam_checks(run))


def cam_checks(run: Path) -> str:
    """Do the maps mean something? Per explained model, the two checks' numbers and a verdict on each."""
    rows = []
    for ej in sorted((run / "explain").glob("*/explain.json")):
        d = json.loads(ej.read_text())
        rc = d.get("randomisation_check") or {}
        rows.append({"model": d.get("name"), "layer": d.get("layer"),
                     "rank correlation with randomised model": rc.get("mean_rank_correlation", "not run"),
                     "CAM energy in signal region": d.get("mean_cam_energy_in_region", "not measured"),
                     "region area share (uniform map)": d.get("mean_region_area_share", "not measured"),
                     "energy, randomised model": rc.get("mean_energy_in_region_randomised", "not measured"),
                     "localisation": localisation_verdict(d)[1], "randomisation": randomisation_verdict(d)[1]})
    if not rows:
        return ""
    return ("<p>Do the maps mean something? Two checks, each with its verdict. Localisation: a map that finds the "
            "signal puts more of its energy inside the known signal region than a uniform map would (the region's "
            "share of the image) and than the maps of a weight-randomised copy of the model. Randomisation (Adebayo "
            f"et al. 2018): the maps must change when the weights are randomised (mean rank correlation below "
            f"{RANK_LIMIT}). Where a check fails, read the maps with caution.</p>" + _table(pd.DataFrame(rows)))


def safeguards_section(run: Path, checks: dict | None = None) -> str:
    """Each safeguard as computed from the stages' records (``checks``, else manifest.json's): one marker per line
    (✔ holds, ✘ does not, • not run or not applicable), then the reason."""
    manifest = run / "manifest.json"
    m = json.loads(manifest.read_text()) if manifest.is_file() else {}
    checks = checks or m.get("safeguards") or {}
    if not checks:
        return _missing("The safeguards (computed by `ceusfusion study` or `ceusfusion report`)")
    items = []
    for name, c in checks.items():
        ok, reason = (c.get("ok"), c.get("reason", "")) if isinstance(c, dict) else (c, "")
        mark = "<span class=ok>✔</span>" if ok else ("<span class=warn>✘</span>" if ok is False else "<span>•</span>")
        items.append(f"<li>{mark} <b>{html.escape(name)}</b>" + (f": {html.escape(reason)}" if reason else "") + "</li>")
    return (f"<ul class=checks>{''.join(items)}</ul>"
            + note("✔ the safeguard holds; ✘ it does not, for the reason given; • the stage did not run or it does not apply."))


PRIVATE_ENVIRONMENT = ("host", "user")  # who ran it where: never in a report, which researchers share


def environment_section(run: Path) -> str:
    """The versions the run used; the host and user name stay out even where manifest.json holds them."""
    manifest = run / "manifest.json"
    m = json.loads(manifest.read_text()) if manifest.is_file() else {}
    env = m.get("environment") or {"python": platform.python_version(), "platform": platform.platform()}
    env = {k: v for k, v in env.items() if k not in PRIVATE_ENVIRONMENT}
    rows = pd.DataFrame({"item": list(env), "value": [str(v) for v in env.values()]})
    return _table(rows)


DEFAULT_TITLE = "ceusfusion study report"


def reportable(layout: RunLayout) -> tuple[Path, ...]:
    """A run with none of these has nothing to report."""
    return (layout.prepared_index, layout.manifest, layout.selection, layout.metrics, layout.fusion / "fusion.json")


def write_report(run: str | Path, out: str | Path | None = None, title: str | None = None, force: bool = False,
                 safeguards: dict | None = None) -> Path:
    """``ceusfusion report``: the report of a run however it was built (study, or command by command).

    Refuses a folder that holds no stage's output, an OUT among the run files it reads (ever), and (without
    ``force``) an OUT that ceusfusion did not write (``core.fsutil.claim``). The title is the one given, else the study's (manifest.json), else
    DEFAULT_TITLE; ``safeguards`` (computed from the run's records by the caller) replace the manifest's."""
    run = Path(run)
    if not run.is_dir():
        raise CeusError(f"{run}: no such run directory")
    layout = RunLayout(run)
    need = reportable(layout)
    if not any(p.is_file() for p in need):
        raise CeusError(f"{run}: nothing to report (none of {', '.join(p.relative_to(run).as_posix() for p in need)}); "
                        "run the stages first")
    out = Path(out) if out else layout.report
    if out.is_dir():
        raise CeusError(f"{out}: is a folder; --out takes the report's file name")
    claim(out.parent, files=[out], force=force, inputs=[*layout.stage_files, *layout.stage_folders])  # what it reads
    manifest = run / "manifest.json"
    recorded = (json.loads(manifest.read_text()).get("config") or {}).get("title") if manifest.is_file() else None
    return build_report(run, out, title or recorded or DEFAULT_TITLE, safeguards)


def outcome_paragraph(o) -> str:
    """The outcome the models predict, in the study's words, or that the study named none."""
    if not o.given:
        return note("Outcome: not named in the study config (its outcome section): label 1 is called 'positive', "
                    "label 0 'negative', and the intervention a positive prediction leads to 'treatment'.")
    return para(f"Outcome: {o.name} (label 1: {o.positive}; label 0: {o.negative}). A positive prediction would lead "
                f"to {o.intervention}.")


def wrap_tables(body: str) -> str:
    """Every table in a ``div.wide`` that scrolls sideways (those of ``report.parts.table`` already are)."""
    return re.sub(r'(?<!<div class="wide">)(<table\b.*?</table>)', r'<div class="wide">\1</div>', body, flags=re.S)


def build_report(run: str | Path, out: str | Path | None = None, title: str = DEFAULT_TITLE,
                 safeguards: dict | None = None) -> Path:
    """Write RUN/report.html (or OUT) from the files of the run directory (``safeguards``: see write_report)."""
    run = Path(run)
    out = Path(out) if out else run / "report.html"
    words = outcome_of(run)
    parts = [
        _section("Cohort flow and counts", cohort_section(run)),
        _section("Table 1. Baseline characteristics", table1_section(run)),
        _section("Cross-validated results per architecture (Figure 3)", training_section(run)),
        _section("DL_combined: feature fusion", fusion_section(run)),
        *([_section("Radiomics (IBSI) beside the deep features: Rad, DL, DLR, DLR + clinical", radiomics_section(run), "radiomics")]
          if has_radiomics(run) else []),
        _section("Performance on the training (out-of-fold) and test sets (Table 2, Figure 4)", evaluation_section(run)),
        _section("Internal validation of DL_combined (bootstrap or nested cross-validation, whichever is valid for it)", validation_section(run), "validation"),
        _section("Reclassification (NRI, IDI)", reclassification_section(run), "reclassification"),
        _section(f"Clinical utility: {words.avoided} and {words.missed}", interventions_section(run), "interventions"),
        _section("Performance by centre and subgroup", subgroups_section(run), "subgroups"),
        _section("Nomogram (DL + clinical logistic model)", nomogram_section(run), "nomogram"),
        _section("Sample size (Riley et al.)", sample_size_section(run), "sample-size"),
        _section("Explainability (Figure 5)", explain_section(run)),
        _section("Safeguards", safeguards_section(run, safeguards)),
        _section("Environment", environment_section(run)),
        _section("TRIPOD+AI checklist", tripod_section(run), "tripod"),
    ]
    doc = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{CSS}</style></head>"
           f"<body><h1>{html.escape(title)}</h1><p>Run directory: <code>{html.escape(run.resolve().name)}</code></p>"
           f"{outcome_paragraph(words)}"
           f"{wrap_tables(''.join(parts))}</body></html>\n")
    write_text(out, doc)
    return out
