"""The report's figure captions: what each figure shows, on which set, for which models, and n.

:data:`CAPTIONS` is the table, keyed by figure name; a figure's file stem (``roc_test``, ``cv_roc_image``,
``feature_weights``, ...) picks its row, and the facts (models, n, the chosen classifier) are read from the
run files beside the figure (``metrics.json``, ``fusion.json``, ``explain.json``, the predictions), so a
caption says what the figure holds in this run. :func:`figure_caption` is what ``report.parts.img`` asks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Caption:
    pattern: str  # a regular expression the whole file stem matches; named groups become facts
    text: str  # str.format over the facts; a fact the run did not record reads "(not recorded)"
    facts: str  # where the facts come from: evaluation, cv, fusion, nomogram, explain, figure5
    width: int = 520  # the most pixels wide the report shows the figure


CAPTIONS = {
    "roc": Caption(r"roc_(?P<set>[A-Za-z]+)", "ROC curves of {models} on the {set_words} ({n}). Each legend entry gives "
                   "the model's AUC with its 95% CI ({ci_method}); the dashed diagonal is a model no better than chance.",
                   "evaluation"),
    "calibration": Caption(r"calibration_(?P<set>[A-Za-z]+)", "Calibration of {models} on the {set_words} ({n}): the "
                           "observed share of positive cases against the predicted probability, in bins of cases "
                           "(points) and smoothed (lines); the dashed diagonal is perfect calibration.", "evaluation"),
    "dca": Caption(r"dca_(?P<set>[A-Za-z]+)", "Decision curves of {models} on the {set_words} ({n}): the net benefit of "
                   "intervening in the cases whose predicted risk is at or above each threshold probability, beside "
                   "intervening in all (grey) and in none (black).", "evaluation"),
    "nia": Caption(r"nia_(?P<set>[A-Za-z]+)", "Net interventions avoided per 100 patients by {models} on the {set_words} "
                   "({n}), against intervening in every patient, at each threshold probability (decision-curve "
                   "analysis).", "evaluation"),
    "subgroups": Caption(r"subgroups_(?P<col>.+)_(?P<set>[A-Za-z]+)", "AUC with its 95% CI in each stratum of {col} for "
                         "{models} on the {set_words} ({n}); the dashed line is chance (AUC 0.5).", "evaluation", 800),
    "nomogram": Caption(r"nomogram", "Nomogram of {nomogram_model}, fitted on {nomogram_n}: read each predictor's points "
                        "on the Points scale, add them, and read the predicted risk below the Total Points. A tick "
                        "label that would overlap another is left out, as R's rms draws it.", "nomogram", 1000),
    "cv_roc": Caption(r"cv_roc_(?P<modality>.+)", "Cross-validated ROC curves of the {modality} architectures "
                      "({models}) on the training set ({n}): every case is scored by the fold model that did not see it "
                      "(out-of-fold); each legend entry gives the pooled out-of-fold AUC with its DeLong 95% CI. The "
                      "architecture with the best mean CV AUC was selected (Figure 3).", "cv"),
    "lasso_path": Caption(r"lasso_path", "LASSO coefficient path of {fusion_name} on {fusion_n}: one line per candidate "
                          "feature (of {n_in}) that is ever non-zero, its standardised coefficient as the penalty weakens "
                          "(left to right); the {n_sel} kept at the chosen penalty (dashed line) are in colour.", "fusion"),
    "lasso_cv": Caption(r"lasso_cv", "Choice of the LASSO penalty of {fusion_name}: inner cross-validated AUC (mean ± SE) "
                        "over {fusion_n} at each penalty, with the best and the one-standard-error choices marked.",
                        "fusion"),
    "feature_weights": Caption(r"feature_weights", "Feature weights of {fusion_name}: the standardised LASSO coefficient "
                               "of each of the {n_sel} features kept of {n_in} (red: positive, blue: negative; the "
                               "strongest 30 at most), fitted on {fusion_n}.", "fusion", 800),
    "cv_auc": Caption(r"cv_auc", "Classifier families for {fusion_name} compared by outer cross-validated AUC on "
                      "{fusion_n}: bars are the mean ± SD over the folds, dots single folds; the chosen family "
                      "({family}) is in green.", "fusion"),
    "figure5": Caption(r"figure5.*", "Figure 5: Grad-CAM maps of {explain_models}, for cases without and with the "
                       "outcome: each map shows where the evidence lies for the class the model predicts for that "
                       "case (warm colours: more evidence).", "figure5", 1000),
    "case": Caption(r"(?P<case>.+)", "Grad-CAM of {explain_model} for case {case} ({case_facts}): the model's input "
                    "frames with the map of the evidence for the class it predicts.", "explain", 1000),
}
SET_WORDS = {"train": "training set", "test": "test set"}


class _Facts(dict):
    def __missing__(self, key: str) -> str:
        return "(not recorded)"


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _names(names) -> str:
    names = [str(n) for n in names]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def _count(n: int, n_pos: int, n_groups: int | None = None) -> str:
    patients = f" of {n_groups} patients" if n_groups and n_groups < n else ""
    return f"n = {n} cases{patients}, {n_pos} positive"


def evaluation_facts(folder: Path, groups: dict) -> dict:
    """Models, n and scoring of one set of metrics.json (the figure's folder is evaluation/figures)."""
    s = groups.get("set", "")
    models = (_json(folder.parent / "metrics.json").get("sets") or {}).get(s, {}).get("models") or {}
    # the scoring labels' first clause (out-of-fold, refit on all training cases, ...): Table 2 has the rest
    scoring = sorted({re.split(r"[,(]", str(r["scoring"]))[0].strip() for r in models.values() if r.get("scoring")})
    facts = {"set_words": SET_WORDS.get(s, f"{s} set") + (f", {'; '.join(scoring)}" if scoring else "")}
    if not models:
        return facts
    sizes = {(r.get("n"), r.get("n_pos"), r.get("n_groups")) for r in models.values()}
    if len(sizes) == 1:
        facts["n"] = _count(*sizes.pop())
    else:
        facts["n"] = "; ".join(f"{m}: {_count(r.get('n'), r.get('n_pos'), r.get('n_groups'))}" for m, r in models.items())
    methods = sorted({str(r.get("ci_method_auc", "delong")) for r in models.values()})
    facts["ci_method"] = "; ".join("DeLong" if m == "delong" else m for m in methods)
    return {**facts, "models": _names(models)}


def cv_facts(folder: Path, groups: dict) -> dict:
    """The architectures of one modality in RUN/evaluation/cv_ranking.csv and their training rows."""
    run = folder.parent.parent
    path = run / "evaluation" / "cv_ranking.csv"
    if not path.is_file():
        return {}
    ranking = pd.read_csv(path, dtype=str)
    names = ranking.loc[ranking["modality"] == groups.get("modality"), "name"].tolist()
    facts = {"models": _names(names)} if names else {}
    pred = run / "predictions" / f"{names[0]}.csv" if names else None
    if pred is not None and pred.is_file():
        tr = pd.read_csv(pred, dtype={"case_id": str}).query("set == 'train'")
        n_groups = tr["group"].nunique() if "group" in tr else None
        facts["n"] = _count(len(tr), int(tr["y"].sum()), n_groups)
    return facts


def fusion_facts(folder: Path, groups: dict) -> dict:
    """The fusion stage's record (fusion.json in the figure's folder or the one above)."""
    f = _json(folder / "fusion.json") or _json(folder.parent / "fusion.json")
    if not f:
        return {}
    lasso = f.get("lasso") or {}
    return {"fusion_name": f.get("name", "DL_combined"),
            "fusion_n": f"the {f.get('n_train')} training cases ({f.get('n_train_pos')} positive)",
            "n_in": lasso.get("n_features_in", "(not recorded)"), "n_sel": lasso.get("n_selected", "(not recorded)"),
            "family": f.get("chosen_classifier") or f.get("chosen_family", "(not recorded)")}


def nomogram_facts(folder: Path, groups: dict) -> dict:
    nm = _json(folder.parent / "metrics.json").get("nomogram") or {}
    if not nm.get("model"):
        return {}
    return {"nomogram_model": nm["model"],
            "nomogram_n": f"{nm.get('n_train')} training cases ({nm.get('n_train_pos')} positive)"}


def explain_facts(folder: Path, groups: dict) -> dict:
    """The explained model and the case (explain.json in the figure's folder)."""
    d = _json(folder / "explain.json")
    if not d:
        return {}
    case = next((c for c in d.get("cases", []) if str(c.get("case_id")) == groups.get("case")), None)
    facts = {"explain_model": f"{d.get('name')} (layer {d.get('layer')})"}
    if case:
        facts["case_facts"] = (f"{SET_WORDS.get(case.get('set'), case.get('set'))}, label {case.get('label')}, "
                               f"predicted probability {case.get('prob', float('nan')):.2f}")
    return facts


def figure5_facts(folder: Path, groups: dict) -> dict:
    names = [_json(p).get("name", p.parent.name) for p in sorted(folder.glob("*/explain.json"))]
    return {"explain_models": _names(names)} if names else {}


FACTS = {"evaluation": evaluation_facts, "cv": cv_facts, "fusion": fusion_facts, "nomogram": nomogram_facts,
         "explain": explain_facts, "figure5": figure5_facts}


def caption_key(path: Path) -> str | None:
    """The figure's row in CAPTIONS: a per-case Grad-CAM figure is one beside an explain.json, the rest by stem."""
    path = Path(path)
    if (path.parent / "explain.json").is_file():
        return "case"
    return next((k for k, c in CAPTIONS.items() if k != "case" and re.fullmatch(c.pattern, path.stem)), None)


def figure_caption(path: Path) -> tuple[str, int] | None:
    """(caption, display width) of a known figure of a run, or None for a figure the table does not know."""
    path = Path(path)
    key = caption_key(path)
    if key is None:
        return None
    spec = CAPTIONS[key]
    groups = re.fullmatch(spec.pattern, path.stem).groupdict()
    facts = _Facts(groups)
    facts.update(FACTS[spec.facts](path.parent, groups))
    return spec.text.format_map(facts), spec.width
