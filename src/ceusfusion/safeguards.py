"""The report's safeguards, each computed from what the stages recorded in the run directory.

A tick that only tests whether a file exists asserts a safeguard; these read the facts the stages
wrote (the split and groups, the fold plans, the selection source, each model's selection rule,
test scoring and loss weighting, the thresholds' source, the fusion CVs' groups, the pretraining
provenance, the segmenter's training cases) and say why when one does not hold. Each check returns a
:class:`Check`: ``ok`` is True, False, or None (the stage did not run or does not apply), with a reason
a reader can act on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.ingest.cache import read_index
from ceusfusion.ingest.cohort import groups_of, read_manifest
from ceusfusion.models.registry import ModelRecord, read_config
from ceusfusion.segment.link import SegmenterFacts, overlap_with_test, predicted_pictures, read_link


@dataclass(frozen=True)
class Check:
    ok: bool | None
    reason: str


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _names(ids, limit: int = 5) -> str:
    ids = sorted(map(str, ids))
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


NO_PATIENTS = ("grouped by case: no patient column given, so each case counts as its own patient; give a `group` "
               "column (`ceusfusion split --group COLUMN`) if a patient can have several cases")


def patients_known(layout: RunLayout) -> bool | None:
    """Whether the cohort names its patients: RUN/cohort.csv has a filled ``group`` column (None: no cohort).

    prepare keeps the column only where the user gave it; the case_id that stands in for a missing group
    elsewhere would make a tick assert patient grouping that nobody recorded."""
    if not layout.cohort.is_file():
        return None
    cohort = pd.read_csv(layout.cohort, dtype=str)
    return bool("group" in cohort.columns and cohort["group"].notna().any())


def split_check(layout: RunLayout) -> Check:
    """No patient group in both the training and the test split."""
    if not layout.cohort.is_file():
        return Check(None, "no RUN/cohort.csv")
    cohort = pd.read_csv(layout.cohort, dtype=str)
    if "split" not in cohort:
        return Check(None, "the cohort has no split column")
    if not patients_known(layout):
        return Check(None, NO_PATIENTS)
    g = groups_of(cohort)
    both = set(g[cohort["split"] == "train"]) & set(g[cohort["split"] == "test"])
    if both:
        return Check(False, f"{len(both)} patient group(s) in both training and test: {_names(both)}")
    return Check(True, f"{g.nunique()} patient groups, none in both training and test")


def selected_summaries(layout: RunLayout) -> dict[str, dict] | None:
    """Each selected model's summary.json (None before selection)."""
    sel = _json(layout.selection)
    if sel is None:
        return None
    return {n: _json(layout.model_summary(n)) or {} for n in sel.get("best", {}).values()}


def folds_check(layout: RunLayout) -> Check:
    """The training folds of every selected model keep each patient group in one fold."""
    sums = selected_summaries(layout)
    if not sums:
        return Check(None, "no selected model")
    if patients_known(layout) is False:
        return Check(None, NO_PATIENTS)
    groups = read_index(layout.root).set_index("case_id")["group"].astype(str)
    for name in sums:
        folds = pd.read_csv(layout.model_folds(name), dtype={"case_id": str})
        split = folds.assign(group=folds["case_id"].map(groups)).groupby("group")["fold"].nunique()
        if (split > 1).any():
            return Check(False, f"{name}: patient group(s) {_names(split.index[split > 1])} in more than one fold")
    return Check(True, "every patient's cases in one fold of each selected model")


def selection_check(layout: RunLayout) -> Check:
    """The architecture chosen by cross-validation inside the training set."""
    sel = _json(layout.selection)
    if sel is None:
        return Check(None, "no selection.json")
    if sel.get("source") != "cross-validation":
        return Check(False, f"selection.json says the choice came from {sel.get('source')!r}")
    return Check(True, f"by {sel.get('rule', 'mean CV AUC')}, training set only")


def selected_records(layout: RunLayout) -> dict[str, ModelRecord] | None:
    """Each selected model's config.json record (None before selection; a model without one is left out)."""
    sel = _json(layout.selection)
    if sel is None:
        return None
    out = {}
    for n in sel.get("best", {}).values():
        try:
            out[n] = read_config(layout.root, n)
        except CeusError:
            continue
    return out


def per_model_check(layout: RunLayout, fails, reason: str, ok: str) -> Check:
    """A check over the selected models' records: ✘ naming those for which ``fails(record)``, with ``reason``."""
    recs = selected_records(layout)
    if not recs:
        return Check(None, "no selected model")
    bad = [n for n, r in recs.items() if fails(r)]
    return Check(False, f"{_names(bad)}: {reason}") if bad else Check(True, ok)


def oof_check(layout: RunLayout) -> Check:
    """Out-of-fold rows not chosen on the cases they score (``select: last``)."""
    return per_model_check(
        layout, lambda r: r.select != "last",
        "select 'best' keeps each fold's epoch with the best AUC on that fold's validation cases, so their "
        "out-of-fold AUC, the ranking, the thresholds and Table 2's training rows are optimistic",
        "each fold kept its last epoch (a fixed count), not one chosen on the cases it scores")


SCALE_FIX = ("the thresholds and fusion fitted on the out-of-fold scores meet test scores on another scale. Why: the "
             "test rows are scored by another model than the out-of-fold rows (the refit, or the fold mean), and one "
             "model's spread varies between training runs (up to 2x for a few epochs from random initialisation); a "
             "test set from another centre can also differ. Fix: retrain with `test_scoring: fold-mean` (or `refit` "
             "where the fold mean was used), train longer, or recalibrate the test scores on the out-of-fold rows")


def scale_line(name: str, sc: dict) -> str:
    """One model's measured scale: the SD ratio, its CI and calibration-in-the-large."""
    lo, hi = sc.get("ratio_ci") or (float("nan"), float("nan"))
    return (f"{name}: test/out-of-fold logit SD {sc['ratio']:.2f} (95% CI {lo:.2f}-{hi:.2f}; {sc['sd_test']:.2f} vs "
            f"{sc['sd_oof']:.2f}), calibration-in-the-large {sc.get('citl', float('nan')):+.2f}")


def test_scoring_check(layout: RunLayout) -> Check:
    """Test cases on the out-of-fold rows' scale, as measured by evaluate (test/OOF logit SD ratio, metrics.json)."""
    m = _json(layout.metrics)
    if m is None:
        return Check(None, "no metrics.json")
    scales = {n: v["scale"] for n, v in m.get("sets", {}).get("test", {}).get("models", {}).items() if v.get("scale")}
    if not scales:
        return Check(None, "no model scored both out-of-fold training rows and test rows: the scale was not measured")
    lo, hi = next(iter(scales.values())).get("range", (0.8, 1.25))
    bad = [n for n, sc in scales.items() if not sc.get("ok")]
    lines = "; ".join(scale_line(n, sc) for n, sc in scales.items())
    if bad:
        return Check(False, f"{_names(bad)} outside {lo}-{hi}: {SCALE_FIX}. Measured: {lines}")
    return Check(True, f"measured, within {lo}-{hi}: {lines}")


def prevalence_check(layout: RunLayout) -> Check:
    """Deep-model probabilities on the cohort's prevalence (unweighted loss, or a prior-corrected weighted one)."""
    check = per_model_check(
        layout, lambda r: not r.prior_corrected,
        "trained with a class-weighted loss without the prior correction; probabilities lean towards 50 % prevalence",
        "unweighted loss")
    kinds = {r.class_weight for r in (selected_records(layout) or {}).values()}
    if check.ok and kinds != {"none"}:
        return Check(True, "class-weighted loss with the -log(n0/n1) correction")
    return check


def thresholds_check(layout: RunLayout) -> Check:
    """Every test-set threshold fixed on the training set."""
    m = _json(layout.metrics)
    if m is None:
        return Check(None, "no metrics.json")
    test = m.get("sets", {}).get("test", {}).get("models", {})
    bad = [n for n, v in test.items() if v.get("threshold_source") != "train"]
    if bad:
        return Check(False, f"{_names(bad)}: test threshold not from the training set")
    return Check(True, "Youden-optimal on the training rows, carried to test unchanged") if test else Check(None, "no test set")


def fusion_checks(layout: RunLayout) -> dict[str, Check]:
    """Fusion fitted inside each outer fold, and every fusion CV (outer and inner) grouped by patient."""
    f = _json(layout.fusion / "fusion.json")
    if f is None:
        return {"inside": Check(None, "no fusion"), "grouped": Check(None, "no fusion")}
    cv = f.get("cv", {})
    n_fold = len(f.get("lasso", {}).get("folds", []))
    inside = (Check(True, f"scaler, LASSO and classifier refitted in each of {n_fold} outer folds")
              if n_fold == cv.get("folds", -1) else Check(False, "fusion.json does not record a fit per outer fold"))
    grouped = cv.get("grouped")
    if patients_known(layout) is False or cv.get("group_source") == "case_id":
        return {"inside": inside, "grouped": Check(None, NO_PATIENTS)}
    levels = grouped if isinstance(grouped, dict) else {"outer": grouped}
    ungrouped = [k for k, v in levels.items() if v is not True]
    if ungrouped:
        return {"inside": inside, "grouped": Check(False, f"not grouped by patient: {', '.join(ungrouped)} CV")}
    return {"inside": inside, "grouped": Check(True, f"grouped by patient: {', '.join(levels)} CV")}


def pretraining_check(layout: RunLayout) -> Check:
    """Self-supervised weights that saw no test case (or the user's explicit permission, said here)."""
    sums = selected_summaries(layout)
    if not sums:
        return Check(None, "no selected model")
    facts = {n: s.get("pretrain_provenance") for n, s in sums.items() if s.get("pretrain_provenance")}
    if not facts:
        return Check(None, "no self-supervised pretraining")
    absent = [n for n, f in facts.items() if f.get("record") == "absent" or f.get("test_overlap_check") == "no"]
    if absent:
        return Check(False, f"{_names(absent)}: no provenance record of the pretraining (or no cohort to check it "
                            "against), so whether it saw a test case is unknown (pretrain with `ceusfusion pretrain`, "
                            "which writes the record)")
    by_bytes = [n for n, f in facts.items() if f.get("test_overlap_check") == "bytes only"]
    if by_bytes:
        return Check(False, f"{_names(by_bytes)}: an old provenance record (version 1) matched test videos by their "
                            "bytes only, so a re-encoded copy of a test video would not be found; pretrain again")
    overlap = {n: f for n, f in facts.items() if f.get("test_overlap")}
    if overlap:
        return Check(False, "; ".join(f"{n}: pretrained on {len(f['test_overlap'])} test case(s) "
                                      f"({_names(f['test_overlap'])}), allowed by --allow-pretrain-overlap"
                                      for n, f in overlap.items()))
    notes = [f"{n}: {f['note']}" for n, f in facts.items() if f.get("note")]
    seen = [n for n, f in facts.items() if f.get("transductive_train_frames")]
    why = "no test case in the pretraining"
    if seen:
        why += f"; {_names(seen)} pretrained on the training cases' videos, validation folds included (unlabeled: transductive)"
    return Check(True, "; ".join([why] + notes))


UNKNOWN_SEGMENTER = "whether a test-split mask trained it is unknown"


def segmenter_facts_check(f: SegmenterFacts, cohort: pd.DataFrame) -> tuple[bool, str]:
    """One segmenter's record against the run's test split: (holds, why)."""
    name = Path(f.model).name if f.model else Path(f.folder).name
    if f.problem:
        return False, (f"{len(f.pictures)} predicted mask(s) from {Path(f.folder).name}: {f.problem_in_words()}; "
                       f"{UNKNOWN_SEGMENTER}")
    o = overlap_with_test(f, cohort)
    parts = []
    if o.cases:
        parts.append(f"segmenter {name} was trained on the masks of {len(o.cases)} test-split case(s): {_names(o.cases)}")
    if o.patients:
        pairs = [f"{t} (its patient's case {c})" for t, c in o.patients]
        parts.append(f"segmenter {name} was trained on another case of the patient of {len(o.patients)} test-split "
                     f"case(s): {', '.join(pairs[:5])}{' and more' if len(pairs) > 5 else ''}")
    if parts:
        return False, "; ".join(parts)
    return True, (f"segmenter {name} (record sha256 {f.record_sha256[:12]}) was trained on the masks of "
                  f"{len(f.trained_on)} cases of {f.n_patients()} patients, none a test-split case or patient")


def segmenter_check(layout: RunLayout) -> Check:
    """No test-split mask, nor one of a test patient's other case, trained the segmenter behind the run's predicted
    masks: the segmenter's record (through RUN/prepared/segmenter.json) against RUN/cohort.csv's test split."""
    if not layout.cohort.is_file():
        return Check(None, "no RUN/cohort.csv")
    cohort = read_manifest(layout.cohort)
    try:
        link = read_link(layout.root)
    except CeusError as exc:
        return Check(False, f"{exc}; {UNKNOWN_SEGMENTER}")
    if link is None:
        n = sum(len(p) for p in predicted_pictures(cohort).values())
        if n:
            return Check(False, f"{n} mask(s) predicted by a segmenter, but prepare recorded no link to it "
                                f"(RUN/prepared/segmenter.json); {UNKNOWN_SEGMENTER} (prepare the run again)")
        return Check(None, "no ROI came from a segmenter")
    results = [segmenter_facts_check(f, cohort) for f in link.segmenters]
    bad = [why for ok, why in results if not ok]
    if bad:
        return Check(False, "; ".join(bad))
    test = cohort[cohort["split"].astype(str).str.strip() == "test"] if "split" in cohort.columns else cohort.iloc[:0]
    return Check(True, "; ".join(why for _, why in results)
                 + f" (checked against {len(test)} test-split cases of {groups_of(test).nunique()} patients)")


def safeguards(run) -> dict[str, dict]:
    """Every safeguard of the report: name -> {"ok": True/False/None, "reason": ...}."""
    layout = RunLayout(run)
    fusion = fusion_checks(layout)
    checks = {
        "patient-level split (no patient in both training and test)": split_check(layout),
        "training folds grouped by patient": folds_check(layout),
        "model selection by cross-validation inside the training set": selection_check(layout),
        "out-of-fold scores not chosen on the cases they score": oof_check(layout),
        "test set scored on the out-of-fold scale (measured)": test_scoring_check(layout),
        "probabilities on the cohort's prevalence": prevalence_check(layout),
        "thresholds fixed on the training set and carried to test": thresholds_check(layout),
        "fusion fitted inside each CV fold (scaler, LASSO, classifier)": fusion["inside"],
        "every fusion CV grouped by patient (outer and inner)": fusion["grouped"],
        "pretraining saw no test case": pretraining_check(layout),
        "no test-split mask trained the segmenter": segmenter_check(layout),
    }
    return {k: asdict(v) for k, v in checks.items()}
