"""A run's link to the segmenter that made its predicted masks: ``RUN/prepared/segmenter.json`` (this stage owns it).

A mask that ``segment predict`` wrote lives in its folder DIR (``DIR/masks/<case>_<image|video>.nii.gz``) and
the manifest it wrote says so (``image_roi_source`` / ``video_roi_source`` = predicted_box | predicted_auto);
``DIR/summary.json`` names the model folder MODEL and the sha256 its segmenter.json had then.
:func:`record_link` follows that chain from RUN/cohort.csv once prepare has written it (``ceusfusion prepare``
and the study call it) and copies into the run what the report, the model card and the safeguard need:
MODEL, the record's sha256, the cases and patients whose masks trained it, its cross-validated Dice, IoU and
HD95, pooled and per fold. They hold when MODEL later moves. :func:`overlap_with_test` compares the trained
cases and patients with the run's test split. Torch-free: the report and the model card read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file, write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.ingest.cohort import ROI_SOURCE_COLUMNS, groups_of, read_manifest
from ceusfusion.segment.record import RECORD_NAME, read_record

LINK_VERSION = 1
LINK_KIND = "ceusfusion-segmenter-link"
PREDICT_KIND = "ceusfusion-segment-predict"  # DIR/summary.json's kind (segment.predict writes it)
PREDICTED = ("predicted_box", "predicted_auto")
MODE_WORDS = {"box": "box-prompted", "auto": "automatic"}


class PredictRecord(BaseModel):
    """What the link reads of DIR/summary.json."""

    model_config = ConfigDict(extra="ignore")

    version: int
    kind: str = PREDICT_KIND  # summaries written before the kind: the other keys say what it is
    model: str
    model_sha256: str | None = None  # summaries written before it: the record is not checked against it


class SegmenterFacts(BaseModel):
    """One segmenter behind some of the run's masks; ``problem`` says why its record could not be followed."""

    model_config = ConfigDict(extra="forbid")

    folder: str  # segment predict's DIR
    pictures: list[str]  # "<case_id> image|video" of the run's cohort whose mask came from it
    model: str | None = None
    record_sha256: str | None = None
    encoder: str | None = None
    trained_on: list[str] = []
    patients: dict[str, str] = {}  # trained case -> its patient group
    test_cases: list[str] = []  # the segmenter's cohort's test split when it was trained
    cv: dict = {}  # {mode: pooled summary}
    cv_folds: dict = {}  # {mode: [per-fold summary]}
    problem: str | None = None

    def n_patients(self) -> int:
        return len(set(self.patients.values()))

    def problem_in_words(self) -> str | None:
        """The problem with the folders' paths shortened to their names: a report and a card travel, the disk's
        layout stays here."""
        text = self.problem
        for p in sorted(filter(None, (self.folder, self.model)), key=len, reverse=True):  # the longer first
            if text:
                text = text.replace(p, Path(p).name)
        return text


class SegmenterLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = LINK_VERSION
    kind: str = LINK_KIND
    segmenters: list[SegmenterFacts]


def predicted_pictures(cohort: pd.DataFrame) -> dict[Path, list[str]]:
    """DIR -> the pictures (``"<case> image"``) whose mask the manifest says a segmenter predicted, by the folder
    that holds their masks/ folder (the mask paths are absolute in RUN/cohort.csv)."""
    out: dict[Path, list[str]] = {}
    for col in ROI_SOURCE_COLUMNS:
        pic, mask_col = col.split("_")[0], col.replace("roi_source", "mask")
        if col not in cohort.columns or mask_col not in cohort.columns:
            continue
        for cid, src, mask in zip(cohort["case_id"].astype(str), cohort[col], cohort[mask_col]):
            if isinstance(src, str) and src.strip() in PREDICTED and isinstance(mask, str) and mask.strip():
                out.setdefault(Path(mask.strip()).parent.parent, []).append(f"{cid} {pic}")
    return out


def read_predict_summary(folder: Path) -> PredictRecord:
    """DIR/summary.json as `segment predict` wrote it; one line when it is missing or not one."""
    path = folder / "summary.json"
    if not path.is_file():
        raise CeusError(f"{folder}: no summary.json of `segment predict` beside the predicted masks (the folder "
                        "was moved, or ceusfusion did not write these masks)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CeusError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("kind", PREDICT_KIND) != PREDICT_KIND:
        raise CeusError(f"{path}: not a `segment predict` summary")
    try:
        return PredictRecord.model_validate(data)
    except ValidationError as exc:
        raise CeusError(f"{path}: not a `segment predict` summary ({exc.errors()[0]['msg']})") from None


def follow(folder: Path, pictures: list[str]) -> SegmenterFacts:
    """DIR -> summary.json -> MODEL/segmenter.json; a broken link is recorded as the problem, never raised."""
    facts = SegmenterFacts(folder=str(folder), pictures=pictures)
    try:
        pred = read_predict_summary(folder)
        model = Path(pred.model)
        rec = read_record(model)
        sha = sha256_file(model / RECORD_NAME)
    except (CeusError, OSError) as exc:
        return facts.model_copy(update={"problem": (str(exc).splitlines() or [""])[0]})
    if pred.model_sha256 and pred.model_sha256 != sha:
        return facts.model_copy(update={
            "model": str(model), "record_sha256": sha,
            "problem": f"{model / RECORD_NAME} changed after `segment predict` wrote {folder} (sha256 {sha[:12]}, was "
                       f"{pred.model_sha256[:12]}): retrained, so it is not the segmenter that made these masks"})
    return facts.model_copy(update={
        "model": str(model), "record_sha256": sha, "encoder": rec.encoder, "trained_on": rec.trained_on,
        "patients": rec.patients(), "test_cases": rec.test_cases, "cv": rec.cv, "cv_folds": rec.cv_folds})


def record_link(run: str | Path) -> SegmenterLink | None:
    """Write RUN/prepared/segmenter.json from RUN/cohort.csv (remove a stale one where no mask was predicted)."""
    layout = RunLayout(run)
    found = predicted_pictures(read_manifest(layout.cohort))
    if not found:
        layout.segmenter_link.unlink(missing_ok=True)
        return None
    link = SegmenterLink(segmenters=[follow(d, p) for d, p in sorted(found.items())])
    write_json(layout.segmenter_link, link.model_dump())
    return link


def read_link(run: str | Path) -> SegmenterLink | None:
    """The run's link (None: no mask of the run was predicted, or it was prepared before links were recorded)."""
    path = RunLayout(run).segmenter_link
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("kind") != LINK_KIND or data.get("version") != LINK_VERSION:
            raise ValueError(f"not a version-{LINK_VERSION} segmenter link")
        return SegmenterLink.model_validate(data)
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise CeusError(f"{path}: unreadable ({(str(exc).splitlines() or [''])[0]}); prepare the run again") from None


@dataclass(frozen=True)
class Overlap:
    """Where a segmenter's training touches the run's test split."""

    cases: list[str]  # test-split cases whose own mask trained it
    patients: list[tuple[str, str]]  # (test-split case, another case of the same patient whose mask trained it)

    def __bool__(self) -> bool:
        return bool(self.cases or self.patients)


def overlap_with_test(facts: SegmenterFacts, cohort: pd.DataFrame) -> Overlap:
    """The trained cases and patients (the segmenter's record, and the run's groups of the cases it shares) against
    the run's test split (its cases and their patient groups)."""
    if "split" not in cohort.columns:
        return Overlap([], [])
    ids, groups = cohort["case_id"].astype(str), groups_of(cohort)
    is_test = cohort["split"].astype(str).str.strip() == "test"
    test = dict(zip(ids[is_test], groups[is_test]))
    run_group = dict(zip(ids, groups))
    trained_by_group: dict[str, set[str]] = {}
    for case in facts.trained_on:
        for g in {facts.patients.get(case, case), run_group.get(case, case)}:
            trained_by_group.setdefault(g, set()).add(case)
    cases = sorted(set(facts.trained_on) & set(test))
    pairs = sorted((t, c) for t, g in test.items() for c in trained_by_group.get(g, ()) if c != t)
    return Overlap(cases, pairs)


def cv_rows(facts: SegmenterFacts) -> list[dict]:
    """One row per mode: the pooled Dice, IoU and median HD95 over the held-out pictures, and each fold's Dice."""
    rows = []
    for mode, pooled in facts.cv.items():
        folds = facts.cv_folds.get(mode, [])
        rows.append({"mode": MODE_WORDS.get(mode, mode), "pictures": pooled.get("n"), "Dice": pooled.get("dice"),
                     "IoU": pooled.get("iou"), "HD95 median (px)": pooled.get("hd95_median"),
                     "Dice per fold": [f.get("dice") for f in folds]})
    return rows
