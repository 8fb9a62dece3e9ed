"""Figures of the fusion stage: LASSO path, penalty CV curve, feature weights, CV AUC per family.

The first three are panel III of the reference study's Figure 2; all are drawn
from the final LASSO fit on the training rows and the outer-CV results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ceusfusion.core.fsutil import savefig


def _save(fig: Figure, folder: Path, stem: str, paths: dict) -> None:
    for ext in ("png", "svg"):
        p = folder / f"{stem}.{ext}"
        savefig(fig, p, dpi=150) if ext == "png" else savefig(fig, p)
        paths[f"{stem}_{ext}"] = p


LABEL_FONT = 10  # points: feature names stay legible where the report shows the figure (about 800 px wide)


def write_figures(result, folder: str | Path, top: int = 30) -> dict[str, Path]:
    """Write the four fusion figures as PNG and SVG; return their paths.

    ``result`` needs ``model`` (fitted pipeline with ``lasso`` step), ``selected`` and ``cv_results``
    (as made by the fusion stage); matplotlib ``Figure`` objects are used directly (no pyplot state).
    """
    folder = Path(folder)
    lasso = result.model.named_steps["lasso"]
    names = np.asarray(result.model[:-2].get_feature_names_out())
    paths: dict[str, Path] = {}
    _save(lasso_path_figure(lasso, names), folder, "lasso_path", paths)
    _save(lasso_cv_figure(lasso), folder, "lasso_cv", paths)
    _save(feature_weights_figure(result.selected, top), folder, "feature_weights", paths)
    _save(cv_auc_figure(result.cv_results), folder, "cv_auc", paths)
    return paths


def lasso_path_figure(lasso, names) -> Figure:
    """LASSO coefficient path: one line per feature that is ever non-zero (kept ones in colour)."""
    logc = np.log10(lasso.Cs_)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    path = lasso.path_ if lasso.path_ is not None else np.zeros((len(logc), len(names)))
    active = np.flatnonzero(np.any(path != 0, axis=0))
    for j in active:
        ax.plot(logc, path[:, j], lw=0.8, color="C0" if lasso.support_[j] else "0.7")
    ax.axvline(np.log10(lasso.C_), color="k", ls="--", lw=1, label=f"chosen C = {lasso.C_:.3g}")
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set(xlabel="log10(C)  (larger C = weaker penalty)", ylabel="coefficient (standardised)",
           title=f"LASSO path ({len(active)} features ever non-zero)")
    ax.legend(frameon=False, fontsize=8)
    return fig


def lasso_cv_figure(lasso) -> Figure:
    """CV curve of the penalty: mean AUC ± SE, chosen and 1-SE C marked."""
    logc = np.log10(lasso.Cs_)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.errorbar(logc, lasso.cv_mean_, yerr=lasso.cv_se_, fmt="o-", ms=3, lw=1, capsize=2, color="C3")
    ax.axvline(np.log10(lasso.C_best_), color="k", ls="--", lw=1, label=f"best C = {lasso.C_best_:.3g}")
    ax.axvline(np.log10(lasso.C_1se_), color="k", ls=":", lw=1, label=f"1-SE C = {lasso.C_1se_:.3g}")
    ax.set(xlabel="log10(C)", ylabel="inner-CV AUC (mean ± SE)",
           title="LASSO penalty by cross-validation" + (" (1-SE rule used)" if lasso.C_ == lasso.C_1se_ != lasso.C_best_ else ""))
    ax.legend(frameon=False, fontsize=8)
    return fig


def feature_weights_figure(selected, top: int = 30) -> Figure:
    """The kept features' LASSO coefficients, strongest first (``selected``: feature, coefficient, selected).

    Each bar has 0.3 in and its name LABEL_FONT points, so that the names stay legible (about 12 px) where
    the report shows the figure, whatever the number of features."""
    sel = selected[selected["selected"]].head(top)
    fig = Figure(figsize=(5.5, max(2.2, 0.3 * len(sel) + 1.2)))
    ax = fig.subplots()
    vals = sel["coefficient"].to_numpy()[::-1]
    ax.barh(np.arange(len(sel)), vals, color=np.where(vals >= 0, "C3", "C0"))
    ax.set_yticks(np.arange(len(sel)), sel["feature"].to_numpy()[::-1], fontsize=LABEL_FONT)
    ax.tick_params(axis="x", labelsize=LABEL_FONT)
    ax.axvline(0, color="0.3", lw=0.5)
    n_sel = int(selected["selected"].sum())
    more = f", top {len(sel)} shown" if n_sel > len(sel) else ""
    ax.set_xlabel("LASSO coefficient (standardised)", fontsize=LABEL_FONT + 1)
    ax.set_title(f"Feature weights ({n_sel} selected{more})", fontsize=LABEL_FONT + 2)
    return fig


def cv_auc_figure(cv) -> Figure:
    """CV AUC per classifier family: per-fold points, mean ± SD, the chosen family in green."""
    fold_cols = [c for c in cv.columns if c.startswith("auc_fold")]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    x = np.arange(len(cv))
    colors = ["C2" if c else "C0" for c in cv["chosen"]]
    ax.bar(x, cv["mean_auc"], yerr=cv["sd_auc"], color=colors, alpha=0.7, capsize=3)
    for i, row in enumerate(cv[fold_cols].to_numpy()):
        ax.plot(np.full(len(row), i), row, "k.", ms=3)
    ax.axhline(0.5, color="0.5", ls=":", lw=1)
    ax.set_xticks(x, cv["classifier"], rotation=30, ha="right")
    ax.set(ylabel="outer-CV AUC (mean ± SD)", ylim=(0, 1), title="Classifier families (chosen in green)")
    return fig
