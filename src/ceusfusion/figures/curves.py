"""Evaluation figures: ROC (AUC and CI in the legend), calibration, decision curves.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas (no
pyplot state, safe in worker processes and without a display) and saved
atomically as PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ceusfusion.core.fsutil import savefig


def _fig(size=(5.2, 5.0)) -> tuple[Figure, object]:
    fig = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def auc_label(name: str, auc: float, ci: tuple[float, float] | None) -> str:
    if ci is None or not np.all(np.isfinite(ci)):
        return f"{name} (AUC {auc:.3f}, CI n/a)"
    return f"{name} (AUC {auc:.3f}, 95% CI {ci[0]:.3f}-{ci[1]:.3f})"


def roc_figure(curves: list[dict], title: str = "ROC") -> Figure:
    """curves: dicts with name, fpr, tpr, auc, ci."""
    fig, ax = _fig()
    for c in curves:
        order = np.lexsort((c["tpr"], c["fpr"]))
        ax.plot(np.asarray(c["fpr"])[order], np.asarray(c["tpr"])[order], lw=1.6, label=auc_label(c["name"], c["auc"], c.get("ci")))
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - Specificity", ylabel="Sensitivity", title=title)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    return fig


def calibration_figure(items: list[dict], title: str = "Calibration") -> Figure:
    """items: dicts with name, binned=(mean predicted, observed), smooth=(x, y) or None."""
    fig, ax = _fig()
    for it in items:
        line = None
        if it.get("smooth") is not None:
            (line,) = ax.plot(*it["smooth"], lw=1.6, label=it["name"])
        bx, by = it["binned"]
        ax.plot(bx, by, "o", ms=4, color=None if line is None else line.get_color(),
                label=None if line is not None else it["name"])
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="ideal")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Predicted probability", ylabel="Observed proportion", title=title)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return fig


def dca_figure(curves, title: str = "Decision curves") -> Figure:
    """curves: long DataFrame with model, threshold, net_benefit (incl. "treat all" / "treat none")."""
    fig, ax = _fig((6.0, 4.5))
    lo = 0.0
    for name, d in curves.groupby("model", sort=False):
        style = {"treat all": dict(color="grey", lw=1.0), "treat none": dict(color="black", lw=1.0)}.get(name, dict(lw=1.6))
        ax.plot(d["threshold"], d["net_benefit"], label=name, **style)
        if name not in ("treat all",):
            lo = min(lo, float(np.nanmin(d["net_benefit"])))
    top = float(np.nanmax(curves["net_benefit"]))
    ax.set(xlim=(0, 1), ylim=(max(lo, -0.05) - 0.02, top + 0.05), xlabel="Threshold probability", ylabel="Net benefit", title=title)
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    return fig


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically; return the paths."""
    stem = Path(stem)
    out = []
    for ext in (".png", ".svg"):
        path = stem.with_suffix(ext)
        savefig(fig, path)
        out.append(path)
    return out
