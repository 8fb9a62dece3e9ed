"""The radiomics stage's settings: what the features depend on, recorded with them (``RadiomicsConfig``).

Ultrasound grey levels are uncalibrated (gain, dynamic range and time-gain compensation differ per
machine and per examination), so the default discretisation is a fixed bin number, as IBSI advises
for arbitrary intensity units; a fixed bin width (``bin_width``) is for a cohort acquired with one
fixed preset. The pixel spacing comes from DICOM when it is known, from ``spacing_mm`` when given, and
is otherwise one pixel (the features are then in pixel units, and the record says so).
"""

from __future__ import annotations

from pydantic import field_validator, model_validator

from ceusfusion.core.config import StageConfig

NAME = "radiomics"  # the features file's model name (RUN/features/radiomics.parquet), its columns' prefix
DISCRETISATIONS = ("fixed_bin_number", "fixed_bin_size", "none")
FAMILIES = ("morphology", "intensity", "histogram", "ivh", "glcm", "glrlm", "glszm", "gldzm", "ngtdm", "ngldm")


class RadiomicsConfig(StageConfig):
    """Everything the feature values depend on; invalid values raise one CeusError line."""

    families: tuple[str, ...] = FAMILIES
    discretisation: str = "fixed_bin_number"
    bins: int = 32  # fixed_bin_number
    bin_width: float = 8.0  # fixed_bin_size, in grey levels
    intensity_range: tuple[float, float] | None = None  # re-segmentation range: pixels outside leave the ROI
    spacing_mm: float | None = None  # pixel side in mm when DICOM does not give it (None: 1 px)
    glcm_distance: float = 1.0
    keyframes: bool = True  # the CEUS keyframes' ROIs too (mean, SD, value at the peak frame)
    icc_threshold: float = 0.75  # robustness filter: features below it are dropped
    icc_cases: int = 40  # training cases perturbed to measure the ICC (seeded draw; 0: no filter)
    perturb_px: tuple[int, ...] = (1, 2)  # erode and dilate the mask by these many pixels
    jitter_px: int = 2  # and shift it (a box: shift and resize it) by up to this many pixels
    seed: int = 0

    @field_validator("families")
    @classmethod
    def _families(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [f for f in v if f not in FAMILIES]
        if bad or not v:
            raise ValueError(f"radiomics families must be among {', '.join(FAMILIES)}, got {', '.join(bad) or 'none'}")
        return tuple(dict.fromkeys(v))

    @field_validator("discretisation")
    @classmethod
    def _discretisation(cls, v: str) -> str:
        if v not in DISCRETISATIONS:
            raise ValueError(f"--discretisation must be one of {', '.join(DISCRETISATIONS)}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> "RadiomicsConfig":
        checks = [(self.bins >= 2, f"--bins must be at least 2, got {self.bins}"),
                  (self.bin_width > 0, f"--bin-width must be > 0, got {self.bin_width}"),
                  (self.spacing_mm is None or self.spacing_mm > 0, f"--spacing-mm must be > 0, got {self.spacing_mm}"),
                  (self.glcm_distance >= 1, f"--glcm-distance must be >= 1, got {self.glcm_distance}"),
                  (0 <= self.icc_threshold <= 1, f"--icc-threshold must be in [0, 1], got {self.icc_threshold}"),
                  (self.icc_cases == 0 or self.icc_cases >= 3, f"--icc-cases must be 0 or at least 3, got {self.icc_cases}"),
                  (all(p >= 1 for p in self.perturb_px) and self.jitter_px >= 0, "perturbations must be positive pixels"),
                  (self.intensity_range is None or self.intensity_range[0] < self.intensity_range[1],
                   f"--intensity-range must be LOW,HIGH with LOW < HIGH, got {self.intensity_range}")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        return self

    def label(self) -> str:
        """The discretisation in words, for the report and the features' record."""
        if self.discretisation == "fixed_bin_number":
            return f"fixed bin number ({self.bins} bins)"
        if self.discretisation == "fixed_bin_size":
            return f"fixed bin width ({self.bin_width:g} grey levels)"
        return "none (the grey levels as they are)"
