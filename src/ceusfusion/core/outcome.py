"""The study's outcome in words: what label 1 means, and what a positive prediction leads to.

ceusfusion was built for one study (occult lymph node metastasis, OLNM, and the prophylactic central neck
dissection a positive prediction would lead to), but a cohort may be of any binary outcome. The words are
study configuration (the study YAML's ``outcome`` section; the demo sets the OLNM ones), recorded by
``evaluate`` in metrics.json and by ``export`` in the bundle's model card, and read from there by every
place that prints them: the report (headings, sentences, Table 1's classes, the cohort counts, the
TRIPOD+AI wording), the nomogram's title, Figure 5's rows, the interventions table, ``predict`` (its
printed class and prediction.json) and the serve page. Without an ``outcome`` section the words are
neutral (``negative``/``positive``, ``treatment``): never another study's.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ceusfusion.core.config import format_errors
from ceusfusion.core.errors import CeusError


class Outcome(BaseModel):
    """The outcome and its consequence, in the words a report prints (neutral by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field("outcome", min_length=1, max_length=120)  # e.g. "occult lymph node metastasis"
    short: str = Field("outcome", min_length=1, max_length=120)  # in titles: "Nomogram (risk of OLNM)"; default: name
    negative: str = Field("negative", min_length=1, max_length=40)  # label 0, e.g. "no OLNM"
    positive: str = Field("positive", min_length=1, max_length=40)  # label 1, e.g. "OLNM"
    intervention: str = Field("treatment", min_length=1, max_length=120)  # what a positive prediction leads to
    treated: str = Field("treatments", min_length=1, max_length=80)  # its count per 100, e.g. "dissections"
    avoided: str = Field("treatments avoided", min_length=1, max_length=80)  # e.g. "dissections avoided"
    missed: str = Field("positives missed", min_length=1, max_length=80)  # e.g. "metastases missed"

    @model_validator(mode="before")
    @classmethod
    def _short_from_name(cls, data):
        if isinstance(data, dict) and data.get("name") and not data.get("short"):
            data = {**data, "short": data["name"]}
        return data

    @property
    def given(self) -> bool:
        """Whether the study named its outcome (any word differs from the neutral defaults)."""
        return self != Outcome()

    def label(self, y) -> str:
        """The word of class ``y`` (0/1, or a truthy value)."""
        return self.positive if int(y) else self.negative

    @property
    def class_names(self) -> tuple[str, str]:
        """(the word of label 0, the word of label 1): Table 1's column names."""
        return self.negative, self.positive

    def record(self) -> dict:
        """What metrics.json and the model card hold (``given``: whether the study named it)."""
        return {**self.model_dump(), "given": self.given}

    @classmethod
    def from_record(cls, rec) -> Outcome:
        """The outcome of a record (metrics.json, card.json, manifest.json's config): its known words, the
        neutral ones for any it lacks; a run or bundle made before outcomes were recorded gets neutral words."""
        if not isinstance(rec, dict):
            return cls()
        words = {k: v.strip() for k, v in rec.items() if k in cls.model_fields and isinstance(v, str) and v.strip()}
        try:
            return cls(**words)
        except ValueError:  # a record edited by hand beyond the bounds: neutral words rather than a crash
            return cls()


def read_outcome(path) -> Outcome:
    """The outcome of a YAML or JSON file: a study config (its ``outcome`` section) or the section alone
    (``evaluate --outcome FILE`` for a run built stage by stage); one-line errors."""
    import yaml  # here: only the CLI's --outcome reads a file; every other reader gets a record

    p = Path(path)
    if not p.is_file():
        raise CeusError(f"{p}: outcome file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise CeusError(f"{p}: not valid YAML or JSON ({str(exc).splitlines()[0]})") from None
    if isinstance(raw, dict) and isinstance(raw.get("outcome"), dict):
        raw = raw["outcome"]
    if not isinstance(raw, dict):
        raise CeusError(f"{p}: expected a mapping of the outcome's words (name, short, negative, positive, ...)")
    try:
        return Outcome.model_validate(raw)
    except ValidationError as exc:
        raise CeusError(f"{p}: bad outcome: " + format_errors(exc)) from None
