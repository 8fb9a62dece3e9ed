"""Issue 26: a cohort with boxes and no mask file runs the whole study; the report, Table 1's record and the model card
say where each ROI came from."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from rich.console import Console

from ceusfusion.config import parse_config
from ceusfusion.demo import demo_config
from ceusfusion.deploy.export import CARD, export
from ceusfusion.ingest.roi import mask_box
from ceusfusion.io.mask import read_mask
from ceusfusion.study import run_study
from ceusfusion.synthetic.synth import SynthConfig, generate

pytestmark = pytest.mark.slow


def test_boxes_without_masks_run_the_study(tmp_path):
    data = tmp_path / "data"
    generate(data, SynthConfig(n=48, seed=1, size=48, fps=2.0, duration=10.0), workers=2)
    cohort = pd.read_csv(data / "cohort.csv", dtype=str)
    boxes = []
    for r in cohort.itertuples():  # each mask's bounding box as x,y,w,h, then no mask file at all
        row = {"case_id": r.case_id}
        for pic in ("image", "video"):
            y0, x0, y1, x1 = mask_box(read_mask(data / getattr(r, f"{pic}_mask")), pic)
            row[f"{pic}_box"] = f"{x0},{y0},{x1 - x0},{y1 - y0}"
        boxes.append(row)
    pd.DataFrame(boxes).to_csv(data / "BOXES.csv", index=False)
    cohort.drop(columns=["image_mask", "video_mask"]).to_csv(data / "nomask.csv", index=False)
    cfg = demo_config(tmp_path / "run", data / "nomask.csv", quick=True)
    cfg.update(boxes=str(data / "BOXES.csv"), explain={"enabled": False})
    cfg["train"]["archs"] = cfg["train"]["archs"][:1]
    out = tmp_path / "run"
    run_study(parse_config(cfg), console=Console(record=True, width=200), progress=False)
    index = pd.read_csv(out / "prepared" / "index.csv", dtype=str)
    assert len(index) == 48 and set(index["image_roi"]) == {"box"} and set(index["video_roi"]) == {"box"}
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {"DL_image", "DL_video"} <= {n.split("_")[0] + "_" + n.split("_")[1] for n in metrics["sets"]["test"]["models"]}
    assert json.loads((out / "evaluation" / "table1_tests.json").read_text())["roi_sources"]["video"] == {"box": {"test": 14, "train": 34}}
    report = (out / "report.html").read_text()
    assert "region of interest came from" in report and "box" in report
    assert "image_box" in pd.read_csv(out / "cohort.csv").columns  # later stages see the boxes prepared
    card = json.loads((export(out, tmp_path / "bundle") / CARD).read_text())
    assert card["roi_sources"] == {pic: {"box": {"test": 14, "train": 34}} for pic in ("image", "video")}
