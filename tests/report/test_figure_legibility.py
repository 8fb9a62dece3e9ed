"""Issue 24: the nomogram's labels overlapped and the feature-weight labels were about 4 px high in the report.
Measured on the drawn figures: text extents from matplotlib's renderer, sizes as the report shows them."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from ceusfusion.figures.fusion import feature_weights_figure
from ceusfusion.figures.nomogram import nomogram_figure
from ceusfusion.report.captions import CAPTIONS
from ceusfusion.stats.nomogram import nomogram

SAVE_DPI = 150  # what figures.fusion writes its PNGs at


def _crowded_nomogram():
    """A strong score (risk axis from 0.1 to 0.9 in a narrow band) and a factor whose levels get close points."""
    rng = np.random.default_rng(0)
    n = 300
    score, age = rng.normal(0, 2.5, n), rng.normal(45, 12, n)
    sex, size = rng.choice(["female", "male"], n), rng.choice(["<1 cm", "1-2 cm", ">2 cm (large)"], n)
    lp = 1.6 * score + 0.03 * (age - 45) + 0.4 * (sex == "male")
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    return nomogram(pd.DataFrame({"DL_combined score (logit)": score, "age": age, "sex": sex, "size": size}), y)


def test_nomogram_labels_do_not_overlap():
    nm = _crowded_nomogram()
    fig = nomogram_figure(nm)
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.axes[0].texts if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    overlaps = [(texts[i].get_text(), texts[j].get_text()) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                if boxes[i].overlaps(boxes[j])]
    assert not overlaps
    shown = {t.get_text() for t in texts}
    for axis in nm.axes:  # a factor's every level is named (a numeric axis may drop a label, as R's axis does)
        if axis.discrete:
            assert {str(v) for v in axis.values} <= shown, axis.name
    assert min(t.get_fontsize() for t in texts) >= 7.5


def test_feature_weight_labels_are_legible_where_the_report_shows_them():
    names = [f"DL_image_resnet18__f{j:04d}" for j in range(20)] + [f"DL_video_densenet121__f{j:04d}" for j in range(20)]
    sel = pd.DataFrame({"feature": names, "coefficient": np.linspace(1, -1, 40), "selected": True})
    fig = feature_weights_figure(sel)  # the top 30 of 40
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=SAVE_DPI, bbox_inches="tight")
    png_width = Image.open(buf).size[0]
    shown = min(1.0, CAPTIONS["feature_weights"].width / png_width)  # the report scales the PNG down to its width
    renderer = fig.canvas.get_renderer()
    labels = fig.axes[0].get_yticklabels()
    assert len(labels) == 30 and min(t.get_fontsize() for t in labels) >= 9  # points (was 7)
    heights = [t.get_window_extent(renderer).height * SAVE_DPI / fig.dpi * shown for t in labels]
    assert min(heights) >= 12, min(heights)  # pixels on the page (was about 7, capitals about 4)
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
