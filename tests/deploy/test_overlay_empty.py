"""predict flags an empty Grad-CAM map, so the page and the JSON say so instead of showing a dark square."""

from types import SimpleNamespace

import numpy as np
import torch

import ceusfusion.explain.cam as cam
from ceusfusion.deploy.predict import overlay


def test_an_all_zero_map_is_flagged_and_a_real_one_is_not(tmp_path, monkeypatch):
    frames = np.zeros((1, 1, 16, 16, 3))
    monkeypatch.setattr(cam, "display_frames", lambda *a, **k: frames)
    cfg = SimpleNamespace(input_mode="stack", frames=1, frame_channels=3)  # the ModelRecord fields overlay reads
    x = torch.zeros(1, 3, 16, 16)
    for maps, empty in ((np.zeros((1, 1, 16, 16)), True), (np.random.default_rng(0).random((1, 1, 16, 16)), False)):
        monkeypatch.setattr(cam, "model_cams", lambda *a, maps=maps, **k: maps)
        path, flag = overlay(None, cfg, x, None, tmp_path / f"{empty}.png")
        assert flag is empty and path.is_file()
