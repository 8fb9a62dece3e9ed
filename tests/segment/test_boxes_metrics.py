"""Boxes from the manifest, the segmenter's views of a frame, and the agreement metrics (no network)."""

import numpy as np
import pytest

from ceusfusion.core.errors import CeusError
from ceusfusion.segment.boxes import box_text, context_region, jitter_box, parse_box, parse_time, whole_region
from ceusfusion.segment.metrics import dice, hd95, iou
from ceusfusion.segment.sampling import View, inputs, paste


def test_parse_box_reads_x_y_w_h_as_a_row_column_box():
    assert parse_box("10,20,30,40") == (20, 10, 60, 40)
    assert box_text((20, 10, 60, 40)) == "10,20,30,40"
    assert parse_box(" 0, 0, 5, 5 ", (5, 5)) == (0, 0, 5, 5)
    assert parse_box(float("nan")) is None and parse_box("") is None


@pytest.mark.parametrize("text, why", [("1,2,3", "four integers"), ("1,2,0,4", "positive"), ("a,b,c,d", "four integers"),
                                       ("-1,2,3,4", "four integers"), ("90,10,20,20", "outside the 100x50 px frame")])
def test_a_bad_box_is_one_line_naming_the_column(text, why):
    with pytest.raises(CeusError) as e:
        parse_box(text, (50, 100), "image_box")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("image_box") and why in msg


def test_box_time_must_be_seconds():
    assert parse_time("2.5") == 2.5 and parse_time(None) is None
    for bad in ("soon", "-1"):
        with pytest.raises(CeusError, match="video_box_time"):
            parse_time(bad)


def test_jitter_moves_each_side_by_at_most_the_share_of_the_size():
    rng = np.random.default_rng(0)
    box = (100, 200, 150, 300)  # 50 high, 100 wide
    moved = [jitter_box(box, rng, 0.1) for _ in range(200)]
    d = np.abs(np.array(moved) - np.array(box))
    assert d[:, [0, 2]].max() <= 5 and d[:, [1, 3]].max() <= 10
    assert len(set(moved)) > 50  # really random, and seeded:
    assert jitter_box(box, np.random.default_rng(3), 0.1) == jitter_box(box, np.random.default_rng(3), 0.1)


def test_a_view_and_its_paste_return_the_mask_and_the_prompt_marks_the_box():
    m = np.zeros((80, 120), bool)
    yy, xx = np.mgrid[:80, :120]
    m[((yy - 30) / 12) ** 2 + ((xx - 70) / 20) ** 2 <= 1] = True
    frame = (m * 200).astype(np.uint8)
    box = (18, 50, 43, 91)
    for view in (View(*whole_region(m.shape)), View(*context_region(box, 0.25))):
        x, _ = inputs(frame, view, box, 96)
        assert dice(paste(x[0], view, m.shape) > 0.5, m) > 0.95
    x, _ = inputs(frame, View(*context_region(box, 0.25)), box, 96)
    assert x[1].mean().item() == pytest.approx(25 * 41 / (41 * 1.5) ** 2, rel=0.1)  # the box's share of the square
    mirrored, _ = inputs(frame, View(*whole_region(m.shape), flip=True), None, 96)
    plain, _ = inputs(frame, View(*whole_region(m.shape)), None, 96)
    assert np.allclose(mirrored[0].numpy(), plain[0].flip(-1).numpy(), atol=1e-4)
    assert not inputs(frame, View(*whole_region(m.shape)), None, 96)[0][1].any()  # no box, no prompt


def test_dice_iou_hd95_on_known_shapes():
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=1)
    assert dice(a, b) == pytest.approx(2 * 70 / 200) and iou(a, b) == pytest.approx(70 / 130)
    assert hd95(a, b) == pytest.approx(3.0)
    assert dice(a, a) == 1.0 and hd95(a, a) == 0.0
    assert np.isnan(hd95(a, np.zeros_like(a)))
