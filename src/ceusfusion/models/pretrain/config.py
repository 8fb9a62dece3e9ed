"""The settings of a pretraining run: one pydantic model, checked on construction.

Saved in the sidecar and in the resumable checkpoint; a resume continues only when
every setting but ``epochs`` and ``device`` is unchanged.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator

from ceusfusion.core.config import StageConfig
from ceusfusion.models.backbones import check_arch

METHODS = ("simclr", "moco")
# settings a resume may change: how long and where it runs, not what each epoch computes
RESUMABLE_KEYS = ("epochs", "device")


class PretrainConfig(StageConfig):
    """Everything that defines a pretraining run (saved in the sidecar; resume checks it).

    Invalid settings raise :class:`CeusError` with one line naming the setting.
    """

    model_config = ConfigDict(extra="forbid")

    arch: str = "resnet18"
    size: int = Field(64, ge=16)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=2)
    method: str = "simclr"
    frames_per_video: int = Field(32, ge=1)
    max_gap_s: float = Field(1.0, ge=0)
    seed: int = 0
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    temperature: float = Field(0.2, gt=0)
    min_crop: float = Field(0.3, ge=0.05, le=1)  # smallest random-resized-crop area, as a share of the frame
    proj_dim: int = Field(128, ge=1)
    queue: int = Field(4096, ge=1)
    momentum: float = Field(0.99, ge=0, lt=1)
    init: str = "none"  # starting weights: none, imagenet or a state-dict file
    splits: tuple[str, ...] = ("train",)
    device: str = "auto"

    _known_arch = field_validator("arch")(check_arch)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}; choose simclr or moco")
        return v

    @field_validator("splits")
    @classmethod
    def _no_test(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if "test" in v:
            raise ValueError("pretraining never uses the test split")
        return v

    def check(self) -> PretrainConfig:
        """Validate again (after attributes were changed by hand); returns ``self``."""
        type(self)(**self.model_dump())
        return self

    def as_json(self) -> dict:
        return self.model_dump(mode="json")

    def identity(self) -> dict:
        """The settings a resumed run must share with the interrupted one."""
        return {k: v for k, v in self.as_json().items() if k not in RESUMABLE_KEYS}
