"""``MODEL/segmenter.json``: the typed, versioned record of a trained segmenter (this stage owns it).

It says how to rebuild and feed the fold models, where the encoder's starting weights came from,
which cases' masks trained it (``trained_on``, each picture's patient group in ``pictures``) and which
cases were the test split then (``test_cases``: none of them may be in ``trained_on``), and the
cross-validated Dice, IoU and HD95, pooled (``cv``) and per fold (``cv_folds``).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import write_json

RECORD_NAME = "segmenter.json"
VERSION = 1


class SegmenterRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = VERSION
    kind: str = "ceusfusion-segmenter"
    encoder: str
    decoder: list[int]
    size: int
    context: float
    mean: float
    std: float
    fold_files: list[str]
    settings: dict
    weights: dict
    cohort: str
    cohort_sha256: str
    trained_on: list[str]  # case ids whose masks trained the fold models (training split only)
    pictures: list[dict]  # case_id, modality, fold, group (the patient; records before it: none)
    test_cases: list[str]  # the cohort's test-split cases at training time
    cv: dict  # {mode: pooled summary}
    failures: list[dict] = []
    cv_folds: dict = {}  # {mode: [per-fold summary]} (records before it: {})

    @model_validator(mode="after")
    def _no_test_mask(self):
        seen = sorted(set(self.trained_on) & set(self.test_cases))
        if seen:
            raise ValueError(f"test-split case(s) {', '.join(seen[:5])} among the cases that trained it")
        return self

    def patients(self) -> dict[str, str]:
        """case id -> patient group of every case that trained it (the case id where the record has no group)."""
        groups = {str(p.get("case_id")): str(p.get("group") or p.get("case_id")) for p in self.pictures}
        return {c: groups.get(c, c) for c in self.trained_on}


def write_record(folder: Path, rec: SegmenterRecord) -> Path:
    path = Path(folder) / RECORD_NAME
    write_json(path, rec.model_dump())
    return path


def read_record(folder: Path) -> SegmenterRecord:
    """The record of a model folder; one line when it is missing, unreadable, of another version or not ours."""
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        raise CeusError(f"{folder}: not a segment model folder (no {RECORD_NAME}; make one with `ceusfusion segment train`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CeusError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != "ceusfusion-segmenter":
        raise CeusError(f"{path}: not a segmenter record")
    if data.get("version") != VERSION:
        raise CeusError(f"{path}: record version {data.get('version')!r}, this ceusfusion reads version {VERSION}")
    try:
        return SegmenterRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CeusError(f"{path}: {where + ': ' if where else ''}{first['msg']}") from None
