"""Segmentation figures: the cross-validated Dice per fold and mode, and contact sheets of contours.

The Dice figure is a matplotlib ``Figure`` on the Agg canvas (no pyplot state); the contact sheet is a
Pillow image: each predicted mask's outline over its picture, a red frame around cases to review.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from scipy import ndimage

MODE_NAMES = {"box": "box-prompted", "auto": "automatic"}


def cv_figure(per_case: pd.DataFrame) -> Figure:
    """Dice of every held-out picture, per fold (box plots) and pooled, one panel per mode."""
    modes = list(dict.fromkeys(per_case["mode"]))
    fig = Figure(figsize=(3.4 * max(1, len(modes)), 3.2), dpi=100)
    FigureCanvasAgg(fig)
    for i, mode in enumerate(modes):
        d = per_case[per_case["mode"] == mode]
        folds = sorted(d["fold"].unique())
        data = [d.loc[d["fold"] == f, "dice"].to_numpy() for f in folds] + [d["dice"].to_numpy()]
        ax = fig.add_subplot(1, len(modes), i + 1)
        ax.boxplot(data, widths=0.6, showmeans=True)
        ax.set_xticks(range(1, len(data) + 1), [str(int(f) + 1) for f in folds] + ["all"])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("fold")
        ax.set_ylabel("Dice")
        ax.set_title(f"{MODE_NAMES.get(mode, mode)}: mean {d['dice'].mean():.3f}", fontsize=9)
    fig.tight_layout()
    return fig


@dataclass
class Tile:
    frame: np.ndarray  # (H, W) uint8
    mask: np.ndarray  # (H, W) bool
    label: str
    review: bool = False


def outline(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels, thickened by one pixel so that it shows on a small tile."""
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    return ndimage.binary_dilation(edge)


def tile_image(t: Tile, side: int) -> Image.Image:
    """One tile: the picture, resized to fit ``side``, with the contour in yellow (red when to review)."""
    h, w = t.frame.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = np.asarray(Image.fromarray(t.frame).convert("RGB").resize(size, Image.Resampling.BILINEAR)).copy()
    small = np.asarray(Image.fromarray(t.mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
    rgb[outline(small)] = (255, 60, 60) if t.review else (255, 230, 0)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(Image.fromarray(rgb), ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas


def contour_sheet(tiles: list[Tile], side: int = 160, cols: int = 8) -> Image.Image:
    """A grid of tiles with their labels; a case to review is framed in red."""
    rows = max(1, -(-len(tiles) // cols))
    sheet = Image.new("RGB", (cols * side, rows * (side + 14)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, t in enumerate(tiles):
        x, y = (i % cols) * side, (i // cols) * (side + 14)
        sheet.paste(tile_image(t, side), (x, y + 14))
        draw.text((x + 3, y + 1), t.label[:28], fill=(255, 80, 80) if t.review else (255, 255, 0))
        if t.review:
            draw.rectangle([x, y + 14, x + side - 1, y + 13 + side], outline=(255, 0, 0), width=2)
    return sheet
