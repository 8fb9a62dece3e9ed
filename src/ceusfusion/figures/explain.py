"""Figures for Grad-CAM explanations: one PNG per case, the reference study's Figure 5 layout, and the
plain overlay of a new patient's prediction.

Maps are shown normalised to [0, 1] (per case; temporal models: jointly over the
frames) in the jet colour map over the de-normalised model input, with a colour
bar; every overlay is drawn by one function (``_show``: one colour map, one alpha).
Uses ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend).

Drawn from arrays and duck-typed result objects (``explain.results.CaseExplanation``
or anything with its attributes: ``case_id``, ``label``, ``prob``, ``image``,
``attention``, ``share``, ``region``, ``extra``, ``maps_per_frame()``); nothing here
reads an explain folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import savefig
from ceusfusion.core.outcome import Outcome

CMAP = "jet"
ALPHA = 0.45


def _grey(img: np.ndarray) -> np.ndarray:
    return img.mean(-1) if img.ndim == 3 and np.allclose(img[..., 0], img[..., -1]) else img


def _show(ax, img, cam=None, region=None):
    g = _grey(img)
    ax.imshow(g, cmap="gray" if g.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    im = None
    if cam is not None:
        im = ax.imshow(cam, cmap=CMAP, vmin=0, vmax=1, alpha=ALPHA, interpolation="bilinear")
    if region is not None and region.any():
        ax.contour(region.astype(float), levels=[0.5], colors="white", linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _kind(r) -> str:
    if len(r.image) == 1:
        return "single"
    return "temporal" if r.attention is not None else "stack"


def case_figure(r, path, title_extra: str = "") -> Path:
    """One case: input and overlay (still), or every frame with its overlay plus per-frame bars (video)."""
    kind = _kind(r)
    maps = r.maps_per_frame()
    nf = len(r.image)
    if kind == "single":
        fig = Figure(figsize=(6.4, 3.2))
        axs = fig.subplots(1, 2)
        _show(axs[0], r.image[0])
        axs[0].set_title("ROI input")
        im = _show(axs[1], r.image[0], maps[0], r.region)
        axs[1].set_title("Grad-CAM")
    else:
        fig = Figure(figsize=(2.2 * nf + 2.4, 4.6))
        gs = fig.add_gridspec(2, nf + 1, height_ratios=[3, 1.3], width_ratios=[1] * nf + [1.2])
        for t in range(nf):
            ax = fig.add_subplot(gs[0, t])
            im = _show(ax, r.image[t], maps[t], r.region)
            panels = r.extra.get("panels")
            lab = panels[t] if panels else f"frame {t + 1}"
            if kind == "temporal":
                lab += f"\nattention {r.attention[t]:.2f}"
            ax.set_title(lab, fontsize=9)
        ax = fig.add_subplot(gs[1, :nf])
        xs = np.arange(1, nf + 1)
        if kind == "temporal":
            ax.bar(xs - 0.2, r.attention, 0.4, label="attention", color="tab:blue")
        ax.bar(xs + (0.2 if kind == "temporal" else 0), r.share, 0.4, label="grad×input share", color="tab:orange")
        ax.set_xticks(xs)
        if r.extra.get("panels"):
            ax.set_xticklabels(r.extra["panels"], fontsize=7)
        ax.set_xlabel("summary channel" if r.extra.get("panels") else "keyframe")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
        axs = [fig.add_subplot(gs[0, nf])]
        axs[0].axis("off")
    cb = fig.colorbar(im, ax=axs[-1] if kind == "single" else axs[0], fraction=0.08 if kind == "single" else 0.5)
    cb.set_label("Grad-CAM (normalised)")
    why = {0: "  map: evidence for negative", 1: "  map: evidence for positive"}.get(r.extra.get("cam_class"), "")
    fig.suptitle(f"{title_extra}  {r.case_id}  label {r.label}  p = {r.prob:.2f}{why}".strip(), fontsize=10)
    savefig(fig, path, dpi=110)
    return Path(path)


def _pick(results, label: int):
    """The case most confidently predicted as ``label`` (the per-class rule of ``explain``)."""
    own = [r for r in results if int(r.label) == label]
    if not own:
        raise CeusError(f"no explained case with label {label}; explain at least one case per class (--per-class 1)")
    return max(own, key=lambda r: ((r.prob if label == 1 else 1 - r.prob), r.case_id))


def overlay_figure(frames: np.ndarray, maps: np.ndarray, path, title: str = "") -> Path:
    """One row of panels: each frame (F, H, W, 3) in [0, 1] with its map (M, H, W) over it, and a colour bar.

    Frame i gets map ``min(i, M - 1)`` (one map for a still or a whole stack, one per frame for a
    temporal model). Written as PNG (or the format of ``path``'s suffix).
    """
    n = len(frames)
    fig = Figure(figsize=(2.4 * n + 0.6, 2.6), dpi=110)
    axes = fig.subplots(1, n, squeeze=False)[0]
    im = None
    for i, ax in enumerate(axes):
        im = _show(ax, frames[i], maps[min(i, len(maps) - 1)])
        ax.set_axis_off()
    cb = fig.colorbar(im, ax=list(axes), fraction=0.02)
    cb.set_label("Grad-CAM (normalised)")
    if title:
        fig.suptitle(title, fontsize=10)
    savefig(fig, path)
    return Path(path)


def _evidence(rows, outcome: Outcome) -> str:
    """What the maps of Figure 5's rows show evidence for, from the class each was explained for."""
    classes = [int(r.extra.get("cam_class", 1)) for r in rows]
    if all(c == 1 for c in classes):
        return f"evidence for {outcome.positive}"
    if all(c == int(r.prob >= 0.5) for c, r in zip(classes, rows)):
        return "evidence for the predicted class"
    if all(c == 0 for c in classes):
        return f"evidence for {outcome.negative}"
    return "evidence for the class named per row"


def figure5(image_results, video_results, out, image_name: str = "", video_name: str = "",
            outcome: Outcome | None = None) -> tuple[Path, Path]:
    """Figure 5 layout of the reference study: rows A/B label 0 (five-frame, single-frame), C/D label 1.

    ``image_results`` / ``video_results``: explained cases (``CaseExplanation``-like) of a
    DL_image and a DL_video model; per row the case most confidently predicted as the row's
    label; ``image_name`` / ``video_name`` name the models in the row titles, ``outcome`` the classes
    (neutral words when None). Writes ``out`` as .png and .svg; returns both paths. (From explain folders:
    ``explain.results.figure5_from_folders``.)
    """
    o = outcome or Outcome()
    ires, vres = list(image_results), list(video_results)
    iname, vname = image_name, video_name
    if any(len(r.image) != 1 for r in ires):
        raise CeusError("figure5: the image source holds multi-frame explanations; pass the DL_image explain folder first")
    if any(len(r.image) < 2 for r in vres):
        raise CeusError("figure5: the video source holds single-frame explanations; pass a DL_video explain folder second")
    rows = [("A", f"{o.negative}, five-frame CEUS", _pick(vres, 0), vname),
            ("B", f"{o.negative}, single-frame image", _pick(ires, 0), iname),
            ("C", f"{o.positive}, five-frame CEUS", _pick(vres, 1), vname),
            ("D", f"{o.positive}, single-frame image", _pick(ires, 1), iname)]
    evidence = _evidence([r for _, _, r, _ in rows], o)
    per_row = evidence.endswith("per row")
    nf = max(len(r.image) for r in vres)
    fig = Figure(figsize=(2.0 * nf + 1.0, 2.3 * 4))
    gs = fig.add_gridspec(4, nf + 1, width_ratios=[1] * nf + [0.12], hspace=0.35, wspace=0.05)
    im = None
    for i, (letter, what, r, model) in enumerate(rows):
        maps = r.maps_per_frame()
        panels = [(r.image[t], maps[t]) for t in range(len(r.image))] if len(r.image) > 1 else \
            [(r.image[0], None), (r.image[0], maps[0])]
        for j, (img, cam) in enumerate(panels):
            ax = fig.add_subplot(gs[i, j])
            h = _show(ax, img, cam)
            im = h if h is not None else im
            if len(r.image) > 1:
                sub = f"frame {j + 1}"
                if r.attention is not None:
                    sub += f" (att {r.attention[j]:.2f})"
                elif r.share is not None:
                    sub += f" ({100 * r.share[j]:.0f}%)"
                ax.set_title(sub, fontsize=8)
            else:
                ax.set_title("ROI" if cam is None else "Grad-CAM", fontsize=8)
            if j == 0:
                why = f" (map: evidence for {o.label(r.extra.get('cam_class', 1))})" if per_row else ""
                ax.text(-0.08, 1.18, f"{letter}  {what} — {model} {r.case_id}, p = {r.prob:.2f}{why}",
                        transform=ax.transAxes, fontsize=9, fontweight="bold", ha="left", va="bottom")
    cax = fig.add_subplot(gs[:, nf])
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(f"Grad-CAM (normalised; {evidence})")
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".png", ".svg") else out
    png, svg = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")
    savefig(fig, png, dpi=130)
    savefig(fig, svg)
    return png, svg
