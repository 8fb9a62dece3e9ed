"""Every path of a run directory, in one place (docs/contracts.md describes what each file holds).

A stage asks ``RunLayout(run).predictions(name)`` instead of joining strings, so a change of layout
is one edit here and the stages cannot disagree about where a file lives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ceusfusion.core.errors import CeusError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_name(name: str, what: str = "model name") -> str:
    """A name that becomes a folder or file inside the run: letters, digits, ``_ . + -``; no path parts."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise CeusError(f"{what} {name!r} is not allowed: use letters, digits and _ . + - only (no path separators)")
    return name


@dataclass(frozen=True)
class RunLayout:
    """The files and folders of one run directory ``root``."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # ingest
    @property
    def cohort(self) -> Path:
        return self.root / "cohort.csv"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def keyframes(self) -> Path:
        """The run-level record of the prepare (its parameters and fingerprint, each case's keyframes), written last."""
        return self.prepared / "keyframes.json"

    @property
    def prepared_index(self) -> Path:
        return self.prepared / "index.csv"

    @property
    def prepare_failures(self) -> Path:
        return self.prepared / "failures.csv"

    @property
    def prepared_cases(self) -> Path:
        return self.prepared / "cases"

    def prepared_case(self, case_id: str) -> Path:
        """One case's arrays and its record (``cases/<case_id>.npz``)."""
        return self.prepared_cases / f"{check_name(str(case_id), 'case id')}.npz"

    @property
    def sheets(self) -> Path:
        return self.prepared / "sheets"

    def sheet(self, case_id: str) -> Path:
        """One case's contact sheet."""
        return self.sheets / f"{check_name(str(case_id), 'case id')}.png"

    @property
    def tic_plots(self) -> Path:
        return self.prepared / "tic"

    def tic_plot(self, case_id: str) -> Path:
        """One case's time-intensity curve plot (``prepare --tic-plots``)."""
        return self.tic_plots / f"{check_name(str(case_id), 'case id')}.png"

    @property
    def perfusion(self) -> Path:
        return self.prepared / "perfusion.csv"

    @property
    def segmenter_link(self) -> Path:
        """Which segmenter made the run's predicted masks, and what it was trained on (``segment.link``)."""
        return self.prepared / "segmenter.json"

    # models
    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, name: str) -> Path:
        return self.models / check_name(name)

    def fold(self, name: str, k: int | str) -> Path:
        """A fold model's folder (``fold<k>``), or a named one such as the refitted ``full`` model."""
        return self.model(name) / (check_name(k) if isinstance(k, str) else f"fold{int(k)}")

    def model_config(self, name: str) -> Path:
        """A trained model's config.json (read through ``models.registry.read_config``)."""
        return self.model(name) / "config.json"

    def model_summary(self, name: str) -> Path:
        """A trained model's summary.json (CV AUCs, the weights it started from, the steps it took)."""
        return self.model(name) / "summary.json"

    def model_folds(self, name: str) -> Path:
        """Which fold holds out each training case (``models.ensemble.FoldPlan``)."""
        return self.model(name) / "folds.csv"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    def predictions(self, name: str) -> Path:
        return self.predictions_dir / f"{check_name(name)}.csv"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    # fusion
    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def features(self, name: str) -> Path:
        return self.features_dir / f"{check_name(name)}.parquet"

    def score_features(self, name: str) -> Path:
        return self.features_dir / f"{check_name(name)}.score.parquet"

    @property
    def fusion(self) -> Path:
        return self.root / "fusion"

    @property
    def radiomics(self) -> Path:
        """values.csv, cases.csv, icc.csv, failures.csv, radiomics.json (the radiomics stage's record)."""
        return self.root / "radiomics"

    # evaluate, explain, report
    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def metrics(self) -> Path:
        return self.evaluation / "metrics.json"

    @property
    def cv_ranking(self) -> Path:
        return self.evaluation / "cv_ranking.csv"

    @property
    def figures(self) -> Path:
        return self.evaluation / "figures"

    @property
    def explain_dir(self) -> Path:
        return self.root / "explain"

    def explain(self, name: str) -> Path:
        return self.explain_dir / check_name(name)

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    # the whole run
    @property
    def stage_files(self) -> tuple[Path, ...]:
        """The run's top-level files that stages write, the report aside (``study`` claims them; the report reads them)."""
        return (self.manifest, self.selection, self.cohort)

    @property
    def stage_folders(self) -> tuple[Path, ...]:
        """The run's folders that stages fill (``study`` claims them; the report reads them)."""
        return (self.prepared, self.models, self.predictions_dir, self.features_dir, self.fusion, self.evaluation,
                self.explain_dir)
