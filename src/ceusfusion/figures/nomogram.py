"""Figures of the clinical statistics: the classic nomogram, net interventions avoided, AUC by subgroup.

The nomogram is drawn as ``plot.nomogram`` (rms) lays it out: a Points scale
on top, one axis per predictor at its points, then Total Points, the linear
predictor and the risk, the last three rescaled so that the largest total
points spans the width of the Points scale. Inputs are plain records (the
stats results are duck-typed: figures sit beside stats and do not import it).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _label(v) -> str:
    if isinstance(v, str):
        return v
    v = float(v)
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


TICK_FONT, NAME_FONT = 7.5, 8.5  # points; the report shows the figure at its own size (about 1000 px wide)


def _free(text, placed: list, renderer, pad: float = 2.0) -> bool:
    """Whether ``text`` (drawn) keeps ``pad`` pixels from every label in ``placed`` (window extents)."""
    box = text.get_window_extent(renderer).padded(pad)
    return not any(box.overlaps(b) for b in placed)


def _axis(ax, row: float, xs, labels, name: str, lo: float, hi: float, placed: list, discrete: bool = False) -> None:
    """One horizontal axis at height ``row``: a line, a tick at every x, its label below, else above, else left out.

    As R's ``axis`` (which ``plot.nomogram`` uses) leaves out a label that would overlap another, a label
    goes below the line, or above it when that place is taken, and is dropped (its tick stays) when both
    are: ``placed`` holds the window extents of the figure's labels so far, across axes. The levels of a
    ``discrete`` predictor have two more places, further out, as no level may go unnamed."""
    renderer = ax.figure.canvas.get_renderer()
    ax.plot([lo, hi], [row, row], color="black", lw=0.8)
    name_text = ax.text(-4, row, name, ha="right", va="center", fontsize=NAME_FONT)
    placed.append(name_text.get_window_extent(renderer))
    xs = np.asarray(xs, dtype=float)
    for i in np.argsort(xs, kind="stable"):
        ax.plot([xs[i], xs[i]], [row, row + 0.12], color="black", lw=0.8)
        for dy in (-0.2, 0.26, -0.42, 0.46) if discrete else (-0.2, 0.26):
            t = ax.text(xs[i], row + dy, labels[i], ha="center", va="top" if dy < 0 else "bottom", fontsize=TICK_FONT)
            if _free(t, placed, renderer):
                placed.append(t.get_window_extent(renderer))
                break
            t.remove()


def nomogram_figure(nm, title: str = "Nomogram") -> Figure:
    """The nomogram of ``ceusfusion.stats.nomogram`` (attributes axes, total_points, lp_at, ...)."""
    rows = 4 + len(nm.axes)
    fig = Figure(figsize=(8.0, 0.62 * rows + 0.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.24, 0.03, 0.72, 0.9])
    m = float(nm.maxscale)
    top = rows - 1
    pts = np.linspace(0, m, 11)
    ax.set_xlim(-2, m + 4)  # before any label: their extents in pixels follow from the limits
    ax.set_ylim(-0.8, rows - 0.4)
    ax.axis("off")
    placed: list = []
    _axis(ax, top, pts, [_label(round(p)) for p in pts], "Points", 0, m, placed)
    for k, a in enumerate(nm.axes, start=1):
        p = np.asarray(a.points, dtype=float)
        _axis(ax, top - k, p, [_label(v) for v in a.values], a.name, float(p.min()), float(p.max()), placed,
              bool(getattr(a, "discrete", False)))
    scale = m / float(np.max(nm.total_points))
    tp = np.asarray(nm.total_points, dtype=float)
    r = top - len(nm.axes) - 1
    _axis(ax, r, tp * scale, [_label(v) for v in tp], "Total Points", 0, float(tp.max() * scale), placed)
    lp = np.asarray(nm.lp_points, dtype=float) * scale
    _axis(ax, r - 1, lp, [_label(round(v, 2)) for v in nm.lp_at], "Linear Predictor", float(lp.min()), float(lp.max()),
          placed)
    fp = np.asarray(nm.fun_points, dtype=float) * scale
    if len(fp):
        _axis(ax, r - 2, fp, [_label(v) for v in nm.fun_at], "Risk", float(fp.min()), float(fp.max()), placed)
    ax.set_title(title, fontsize=10)
    return fig


def nia_window(thresholds) -> tuple[float, float]:
    """The threshold range a net-interventions-avoided figure shows: 0-0.6 (the usual clinical range) when the
    table's thresholds lie in 0.05-0.5, else 0.1 either side of them (at a prevalence of 0.83 they are 0.71-0.91)."""
    t = [float(v) for v in thresholds or ()]
    if not t or (min(t) >= 0.05 and max(t) <= 0.5):
        return 0.0, 0.6
    return max(0.0, min(t) - 0.1), min(1.0, max(t) + 0.1)


def nia_figure(curves, title: str = "Net interventions avoided", ylabel: str = "Net interventions avoided per 100 patients",
               window: tuple[float, float] = (0.0, 0.6)) -> Figure:
    """curves: long DataFrame with model, threshold, net_intervention_avoided (per 100 patients); ``window`` the
    threshold range shown (``nia_window`` of the table's thresholds)."""
    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    hi, lo = 1.0, 0.0
    a, b = window
    for name, d in curves.groupby("model", sort=False):
        ax.plot(d["threshold"], d["net_intervention_avoided"], lw=1.6, label=name)
        hi = max(hi, float(np.nanmax(d["net_intervention_avoided"])))
        shown = d.loc[(d["threshold"] >= max(a, 0.05)) & (d["threshold"] <= b), "net_intervention_avoided"]
        lo = min(lo, float(np.nanmin(shown)) if len(shown) else 0.0)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlim=window, ylim=(max(lo, -25) - 3, min(100, hi + 5)), xlabel="Threshold probability",
           ylabel=ylabel, title=title)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return fig


def subgroup_figure(per_model: dict, title: str = "AUC by subgroup") -> Figure:
    """Forest plot: per model (colour) and stratum (row), the AUC with its DeLong CI."""
    rows = [(m, s) for m, r in per_model.items() for s in r["strata"]]
    fig = Figure(figsize=(6.5, 0.4 * len(rows) + 1.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels = []
    for i, (m, s) in enumerate(rows):
        y = len(rows) - 1 - i
        if s.get("auc") is not None:
            lo, hi = s["auc_ci"]
            if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [y, y], color="black", lw=1.0)
            ax.plot([s["auc"]], [y], "s", ms=5, color=f"C{list(per_model).index(m) % 10}")
        labels.append(f"{m}: {s['stratum']} (n={s['n']})")
    ax.set_yticks(range(len(rows) - 1, -1, -1), labels, fontsize=8.5)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), xlabel="AUC (95% DeLong CI)", title=title)
    fig.tight_layout()
    return fig
