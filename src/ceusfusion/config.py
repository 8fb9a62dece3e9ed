"""The study YAML: one section per stage, each built from that stage's own pydantic config.

Each stage owns one config model (``ingest.prepare.PrepareParams``, ``models.train.TrainSettings``,
``fusion.pipeline.FusionConfig``, ``explain.cases.ExplainSettings``); the CLI takes its defaults from
the same models, and a trained model's config.json is a dump of ``TrainConfig``. A study section is
that model minus what the study sets once for every stage (seed, device, names), plus what only a
study needs (which architectures and modalities to train, whether a stage runs). So a default or a
bound is written once, and the YAML, the CLI and the saved records cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ceusfusion.core.config import format_errors
from ceusfusion.core.errors import CeusError
from ceusfusion.core.outcome import Outcome
from ceusfusion.explain.cases import ExplainSettings
from ceusfusion.fusion.pipeline import FusionConfig
from ceusfusion.ingest.prepare import PrepareParams
from ceusfusion.models.backbones import check_arch
from ceusfusion.models.train import TrainSettings
from ceusfusion.radiomics.settings import RadiomicsConfig

STUDY_WIDE = {"seed", "name"}  # set once at the top of the study, not per section


def default(model: type[BaseModel], field: str):
    """A stage config's default for ``field`` (what the CLI shows and uses)."""
    return model.model_fields[field].default


def _section(stage: type[BaseModel], name: str, __base__: type[BaseModel] = BaseModel, **extra) -> type[BaseModel]:
    """A study section: the stage config's fields (same types, bounds and defaults) minus the study-wide
    ones, plus ``extra``; validated by building the stage config from it."""
    fields = {k: (f.annotation, f) for k, f in stage.model_fields.items() if k not in STUDY_WIDE}

    def check(self):
        stage(**{k: getattr(self, k) for k in fields})  # the stage's own validators (raise CeusError)
        return self

    base = create_model(f"_{name}Base", __base__=__base__, **fields, **extra)
    base.model_config["extra"] = "forbid"
    return create_model(name, __base__=base, __validators__={"_check": model_validator(mode="after")(check)})


PrepareSection = _section(PrepareParams, "PrepareSection", workers=(int, Field(2, ge=1)))
FusionSection = _section(FusionConfig, "FusionSection", enabled=(bool, True),
                         # penultimate deep features, or each model's out-of-fold logit (late fusion)
                         inputs=(Literal["features", "scores"], "features"),
                         clinical=(list[str], []), perfusion=(bool, False))
ExplainSection = _section(ExplainSettings, "ExplainSection", enabled=(bool, True))
# present: the radiomics stage runs, and Rad / DLR / DLR + clinical are fitted and compared with the deep model
RadiomicsSection = _section(RadiomicsConfig, "RadiomicsSection", workers=(int, Field(1, ge=1)))


class _TrainChoices(BaseModel):
    """What only a study's ``train`` section has: which models to train."""

    archs: list[str] = ["densenet121", "densenet169", "densenet201", "resnet18", "resnet34"]
    modalities: list[Literal["image", "video"]] = ["image", "video"]
    video_inputs: list[Literal["stack", "temporal", "summary"]] = ["stack"]
    # starting weights of some architectures other than `weights` (e.g. {resnet18: none}: random
    # initialisation meant, not a fallback, so no download is tried and no warning printed)
    weights_by_arch: dict[str, str] = {}

    @field_validator("archs")
    @classmethod
    def _known(cls, v):
        for arch in v:
            check_arch(arch)  # the five study architectures, the EfficientNet-Lite ones, or any timm name
        if not v:
            raise ValueError("at least one architecture is needed")
        return v

    @model_validator(mode="after")
    def _weights_of_trained_archs(self):
        extra = sorted(set(self.weights_by_arch) - set(self.archs))
        if extra:
            raise ValueError(f"weights_by_arch names {', '.join(extra)}, not in archs {self.archs}")
        return self

    def weights_of(self, arch: str) -> str:
        """The starting weights of ``arch``: its ``weights_by_arch`` entry, else ``weights``."""
        return self.weights_by_arch.get(arch, self.weights)



TrainSection = _section(TrainSettings, "TrainSection", __base__=_TrainChoices)


class EvaluateSection(BaseModel):
    """The clinical statistics' threshold probabilities (``evaluate --thresholds``) and the categorical NRI's
    risk cut points (``--nri-cuts``); unset: a range around the training prevalence (``evaluate.clinical.
    resolve_thresholds``), recorded with its source in metrics.json."""

    model_config = ConfigDict(extra="forbid")

    thresholds: list[float] | None = None
    nri_cuts: list[float] | None = None

    @field_validator("thresholds", "nri_cuts")
    @classmethod
    def _probabilities(cls, v):
        if v is not None and (not v or any(not 0 < x < 1 for x in v) or any(b <= a for a, b in zip(v, v[1:]))):
            raise ValueError(f"expected increasing probabilities strictly between 0 and 1, got {v}")
        return v


def stage_kwargs(section: BaseModel, stage: type[BaseModel]) -> dict:
    """The values of a study section that belong to the stage config ``stage``."""
    return {k: getattr(section, k) for k in stage.model_fields if k not in STUDY_WIDE}


class StudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cohort: Path
    boxes: Path | None = None  # a boxes file merged into the cohort (ingest.cohort.merge_boxes)
    out: Path
    seed: int = 0
    device: str = "auto"
    title: str = "ceusfusion study"
    # the outcome in words (name, the words for 0 and 1, the intervention a positive prediction leads to):
    # neutral words when not given, never another study's
    outcome: Outcome = Outcome()
    prepare: PrepareSection = PrepareSection()
    train: TrainSection = TrainSection()
    fusion: FusionSection = FusionSection()
    explain: ExplainSection = ExplainSection()
    evaluate: EvaluateSection = EvaluateSection()
    radiomics: RadiomicsSection | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _crop_fits(self):
        """train.crop is cut from arrays of train.size (else prepare.size): refused before any stage runs."""
        side = self.train.size or self.prepare.size
        if self.train.crop > side:
            where = "train.size" if self.train.size else "prepare.size"
            raise CeusError(f"bad study config: train.crop {self.train.crop} is larger than the {side} px arrays "
                            f"({where}): set {where} to {self.train.crop} or more, or train.crop to {side} or less")
        return self


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML; paths inside are relative to the YAML's folder."""
    path = Path(path)
    if not path.is_file():
        raise CeusError(f"{path}: study config not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CeusError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise CeusError(f"{path}: the study config must be a mapping of keys to values")
    for key in ("cohort", "out", "boxes"):
        if key in raw and raw[key] is not None and not Path(str(raw[key])).is_absolute():
            raw[key] = str(path.parent / str(raw[key]))
    return parse_config(raw, source=str(path))


def parse_config(raw: dict, source: str = "config") -> StudyConfig:
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise CeusError(f"{source}: bad study config: " + format_errors(exc)) from None
