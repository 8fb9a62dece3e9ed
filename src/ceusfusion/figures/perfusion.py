"""Perfusion figures: the time–intensity curve of one case, its ring curve and the gamma-variate fit.

Built with ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot state,
safe in worker processes and without a display).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_tic(times: np.ndarray, lesion: np.ndarray, ring: np.ndarray, title: str,
             fit: np.ndarray | None = None, fit_r2: float = np.nan) -> Figure:
    """The nodule's TIC, the parenchyma ring's (when measured) and the fitted curve (when the fit worked)."""
    fig = Figure(figsize=(6, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(times, lesion, lw=1, label="nodule")
    if np.isfinite(ring).any():
        ax.plot(times, ring, lw=1, alpha=0.7, label="parenchyma ring")
    if fit is not None:
        ax.plot(times, fit, "k--", lw=1, label=f"gamma-variate (R²={fit_r2:.2f})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mean intensity")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
