"""The model card ``GET /api/model`` returns and the page renders: the bundle's models, their locked
thresholds, and what ``card.json`` recorded (cohort, test-set metrics, training out-of-fold probabilities).

A bundle exported before model cards has none: every field it lacks is None, which the page shows as
"not recorded"; the research-only statement is shown whatever the bundle holds.
"""

from __future__ import annotations

import html
from pathlib import Path

from ceusfusion.core.outcome import Outcome
from ceusfusion.deploy.export import RESEARCH_ONLY, bundled_models, finite, load_card

NOT_RECORDED = "not recorded"


def _model_entries(meta: dict, card: dict) -> list[dict]:
    """One entry per bundled model (image, video, then the fused one), card fields merged in."""
    recorded = card.get("models", {}) if card else {}
    entries = []
    for modality, m in bundled_models(meta).items():
        entries.append({"name": m.name, "modality": modality, "arch": m.record.arch, "input": m.record.input_mode,
                        "threshold": m.threshold, "test_scoring": m.test_scoring})
    comb = meta.get("combined")
    if comb:
        entries.append({"name": comb["name"], "modality": "combined", "arch": None, "input": comb.get("inputs"),
                        "threshold": comb["threshold"], "test_scoring": None})
    for m in (meta.get("radiomics") or {}).get("models", []):  # Rad, DLR, DLR + clinical
        entries.append({"name": m["name"], "modality": "radiomics", "arch": None, "input": m["inputs"],
                        "threshold": m["threshold"], "test_scoring": None})
    for e in entries:
        rec = recorded.get(e["name"], {})
        e.update(test=rec.get("test"), train_cv=rec.get("train_cv"), train_oof=rec.get("train_oof"))
    return entries


def model_card(bundle: Path, meta: dict) -> dict:
    """The card of a verified bundle (``meta`` from ``load_bundle``), as strict JSON."""
    card = load_card(bundle, meta)
    outcome = Outcome.from_record((card or {}).get("outcome") or meta.get("outcome"))  # neutral words if none recorded
    return finite({"bundle_sha256": meta["bundle_sha256"], "created": meta.get("created"), "outcome": outcome.record(),
                   "ceusfusion": meta.get("ceusfusion"), "card_recorded": card is not None,
                   "intended_use": (card or {}).get("intended_use") or RESEARCH_ONLY,
                   "cohort": (card or {}).get("cohort"), "ci_method": (card or {}).get("ci_method"),
                   "thresholds": meta.get("thresholds"), "models": _model_entries(meta, card),
                   "roi_sources": (card or {}).get("roi_sources"), "segmenters": (card or {}).get("segmenters"),
                   "covariates": covariates(meta), "radiomics": (card or {}).get("radiomics")})


def covariates(meta: dict) -> list[str]:
    """The clinical covariates the bundle's fused models read (the page asks for them; the API's ``clinical``)."""
    comb = [str(c).removeprefix("clin__") for c in (meta.get("combined") or {}).get("clinical", [])]
    rad = [c for m in (meta.get("radiomics") or {}).get("models", []) for c in m["clinical"]]
    return list(dict.fromkeys(comb + rad))


def _num(v, digits: int = 3) -> str:
    return NOT_RECORDED if v is None else f"{v:.{digits}f}"


def _with_ci(value, ci) -> str:
    if value is None:
        return NOT_RECORDED
    return f"{value:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci and None not in ci else "")


def _cohort_html(cohort: dict | None, positive: str) -> str:
    if not cohort:
        return f"<p class='muted'>Training cohort: {NOT_RECORDED}.</p>"
    rows = []
    for split in sorted(cohort, key=lambda s: (s != "train", s)):
        c = cohort[split]
        centres = ", ".join(f"{html.escape(k)}: {v}" for k, v in (c.get("centres") or {}).items()) or NOT_RECORDED
        prev = NOT_RECORDED if c.get("prevalence") is None else f"{100 * c['prevalence']:.1f} %"
        rows.append(f"<tr><td>{html.escape(split)}</td><td>{c.get('n')}</td><td>{c.get('n_pos')}</td>"
                    f"<td>{prev}</td><td>{centres}</td></tr>")
    return ("<table class='card-cohort'><thead><tr><th>set</th><th>patients</th>"
            f"<th>{html.escape(positive)}</th><th>prevalence</th>"
            "<th>centres</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def outcome_html(outcome: Outcome) -> str:
    """What the models predict, in the study's words (neutral ones when the bundle recorded none)."""
    if not outcome.given:
        return ("<p class='outcome muted'>Outcome: not named by the study that built this bundle "
                "(label 1: positive, label 0: negative).</p>")
    return (f"<p class='outcome'>Predicts <b>{html.escape(outcome.name)}</b> (label 1: {html.escape(outcome.positive)}; "
            f"label 0: {html.escape(outcome.negative)}). A positive prediction would lead to "
            f"{html.escape(outcome.intervention)}.</p>")


def rois_html(card: dict) -> str:
    """Where the training cohort's ROIs came from, and the segmenter behind its predicted masks (its CV Dice, what
    trained it, whether a test-split mask did)."""
    rows = [f"<li>{html.escape(pic)}: " + ", ".join(f"{html.escape(src.replace('_', ' '))} "
                                                    f"{sum(int(v) for v in per.values())}" for src, per in by.items())
            + "</li>" for pic, by in (card.get("roi_sources") or {}).items()]
    for s in card.get("segmenters") or []:
        if s.get("problem"):
            rows.append(f"<li>segmenter: {html.escape(s['problem'])}</li>")
            continue
        dice = "; ".join(f"{html.escape(str(r['mode']))} {_num(r.get('Dice'))}" for r in s.get("cv") or [])
        leak = s.get("test_cases_in_training") or [t for t, _ in s.get("test_patients_in_training") or []]
        rows.append(f"<li>segmenter {html.escape(str(s.get('model')))}: trained on {s.get('trained_cases')} cases of "
                    f"{s.get('trained_patients')} patients; cross-validated Dice {dice or NOT_RECORDED}; "
                    + (f"<b>test-split case(s) {html.escape(', '.join(leak[:5]))} among its training</b>" if leak
                       else "no test-split case or patient among its training") + "</li>")
    return f"<p>Regions of interest:</p><ul class='card-rois'>{''.join(rows)}</ul>" if rows else ""


def card_html(card: dict) -> str:
    """The card as server-rendered HTML (every value escaped): the page needs no script to show it."""
    rows = []
    for m in card["models"]:
        t = m.get("test") or {}
        cv = m.get("train_cv") or {}
        rows.append(
            f"<tr data-model='{html.escape(m['name'])}'><td>{html.escape(m['name'])}</td><td>{html.escape(m['modality'])}</td>"
            f"<td>{_num(m['threshold'])}</td><td>{_with_ci(t.get('auc'), t.get('auc_ci'))}</td>"
            f"<td>{_with_ci(t.get('sensitivity'), t.get('sensitivity_ci'))}</td>"
            f"<td>{_with_ci(t.get('specificity'), t.get('specificity_ci'))}</td>"
            f"<td>{t.get('n', NOT_RECORDED)}</td><td>{_with_ci(cv.get('auc'), cv.get('auc_ci'))}</td></tr>")
    table = ("<table class='card-models'><thead><tr><th>model</th><th>input</th><th>threshold (train)</th>"
             "<th>test AUC (95% CI)</th><th>sensitivity</th><th>specificity</th><th>test n</th>"
             "<th>training CV AUC</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    outcome = Outcome.from_record(card.get("outcome"))
    return (f"<p class='research'><strong>{html.escape(card['intended_use'])}</strong></p>" + outcome_html(outcome)
            + _cohort_html(card.get("cohort"), outcome.positive) + rois_html(card) + table
            + f"<p class='muted'>Thresholds: {html.escape(card.get('thresholds') or NOT_RECORDED)}. "
              f"Bundle id <code>{html.escape(card['bundle_sha256'])}</code>, exported {html.escape(card.get('created') or NOT_RECORDED)} "
              f"with ceusfusion {html.escape(card.get('ceusfusion') or NOT_RECORDED)}.</p>")
