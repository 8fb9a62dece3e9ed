"""Figures (``report.figures``) and the HTML report (``report.html``) of a run."""

from .figures import auc_label, calibration_figure, dca_figure, roc_figure, save_figure

__all__ = ["auc_label", "calibration_figure", "dca_figure", "roc_figure", "save_figure"]
