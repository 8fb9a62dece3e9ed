"""The base of every stage's config model: pydantic validation, reported as one line.

A stage config (prepare, train, fusion, explain) is built by the CLI from its options, by the study
from its YAML section, and read back from a saved config.json. A bad value must reach the user as
one line naming the option (``--epochs must be greater than or equal to 1, got 0``), not
as pydantic's multi-line report, so construction converts a ValidationError into a CeusError.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from ceusfusion.core.errors import CeusError


def option_error(err: dict, stage: str = "") -> str:
    """One pydantic error in the CLI's words: the option, what is wrong, the value given."""
    loc = [str(p) for p in err.get("loc", ())]
    name = "--" + loc[0].replace("_", "-") if loc else stage or "config"
    if err["type"] == "value_error":
        return str(err["ctx"]["error"])
    if err["type"] == "extra_forbidden":
        return f"unknown {stage + ' ' if stage else ''}option {loc[0]!r}" if loc else "unknown option"
    return f"{name} {err['msg'].replace('Input should be', 'must be', 1)}, got {err.get('input')!r}"


def format_errors(exc: ValidationError) -> str:
    """A ValidationError of a nested config (the study YAML) as one line: ``where: what (got value)``."""
    msgs = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        show = e["type"] != "extra_forbidden" and "input" in e and not isinstance(got, dict)
        msgs.append(f"{loc}: {what}" + (f" (got {got!r})" if show else ""))
    return "; ".join(msgs)


class StageConfig(BaseModel):
    """Strict (unknown keys are errors); invalid values raise :class:`CeusError` with one line."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise CeusError(one_line(type(self), exc)) from None

    @classmethod
    def model_validate(cls, obj, **kwargs):
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise CeusError(one_line(cls, exc)) from None


def one_line(cls: type, exc: ValidationError) -> str:
    stage = cls.__name__.removesuffix("Params").removesuffix("Config").removesuffix("Settings").lower()
    return "; ".join(option_error(e, stage) for e in exc.errors())
