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


def _axis(ax, row: float, xs, labels, name: str, lo: float, hi: float) -> None:
    """One horizontal axis at height ``row``: a line, ticks at xs labelled below (alternating when crowded)."""
    ax.plot([lo, hi], [row, row], color="black", lw=0.8)
    xs = np.asarray(xs, dtype=float)
    order = np.argsort(xs)
    crowded = len(xs) > 1 and np.min(np.diff(xs[order])) < 4.0
    for k, i in enumerate(order):
        ax.plot([xs[i], xs[i]], [row, row + 0.12], color="black", lw=0.8)
        dy = -0.22 if not crowded or k % 2 == 0 else 0.3
        ax.text(xs[i], row + dy, labels[i], ha="center", va="top" if dy < 0 else "bottom", fontsize=6.5)
    ax.text(-4, row, name, ha="right", va="center", fontsize=8)


def nomogram_figure(nm, title: str = "Nomogram") -> Figure:
    """The nomogram of ``ceusfusion.stats.nomogram`` (attributes axes, total_points, lp_at, ...)."""
    rows = 4 + len(nm.axes)
    fig = Figure(figsize=(8.0, 0.62 * rows + 0.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.24, 0.03, 0.72, 0.9])
    m = float(nm.maxscale)
    top = rows - 1
    pts = np.linspace(0, m, 11)
    _axis(ax, top, pts, [_label(round(p)) for p in pts], "Points", 0, m)
    for k, a in enumerate(nm.axes, start=1):
        p = np.asarray(a.points, dtype=float)
        _axis(ax, top - k, p, [_label(v) for v in a.values], a.name, float(p.min()), float(p.max()))
    scale = m / float(np.max(nm.total_points))
    tp = np.asarray(nm.total_points, dtype=float)
    r = top - len(nm.axes) - 1
    _axis(ax, r, tp * scale, [_label(v) for v in tp], "Total Points", 0, float(tp.max() * scale))
    lp = np.asarray(nm.lp_points, dtype=float) * scale
    _axis(ax, r - 1, lp, [_label(round(v, 2)) for v in nm.lp_at], "Linear Predictor", float(lp.min()), float(lp.max()))
    fp = np.asarray(nm.fun_points, dtype=float) * scale
    if len(fp):
        _axis(ax, r - 2, fp, [_label(v) for v in nm.fun_at], "Risk", float(fp.min()), float(fp.max()))
    ax.set_xlim(-2, m + 4)
    ax.set_ylim(-0.8, rows - 0.4)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return fig


def nia_figure(curves, title: str = "Net interventions avoided") -> Figure:
    """curves: long DataFrame with model, threshold, net_intervention_avoided (per 100 patients)."""
    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    hi, lo = 1.0, 0.0
    for name, d in curves.groupby("model", sort=False):
        ax.plot(d["threshold"], d["net_intervention_avoided"], lw=1.6, label=name)
        hi = max(hi, float(np.nanmax(d["net_intervention_avoided"])))
        shown = d.loc[(d["threshold"] >= 0.05) & (d["threshold"] <= 0.6), "net_intervention_avoided"]
        lo = min(lo, float(np.nanmin(shown)) if len(shown) else 0.0)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlim=(0, 0.6), ylim=(max(lo, -25) - 3, min(100, hi + 5)), xlabel="Threshold probability",
           ylabel="Net interventions avoided per 100 patients", title=title)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return fig


def subgroup_figure(per_model: dict, title: str = "AUC by subgroup") -> Figure:
    """Forest plot: per model (colour) and stratum (row), the AUC with its DeLong CI."""
    rows = [(m, s) for m, r in per_model.items() for s in r["strata"]]
    fig = Figure(figsize=(6.0, 0.35 * len(rows) + 1.2), dpi=120)
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
    ax.set_yticks(range(len(rows) - 1, -1, -1), labels, fontsize=6.5)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), xlabel="AUC (95% DeLong CI)", title=title)
    fig.tight_layout()
    return fig
