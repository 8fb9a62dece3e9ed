"""The ``summary`` video input: mean / std / rank-pooled dynamic image channels, models, training, features, explain."""

import json

import numpy as np
import pytest
import torch
from cli_run import exit_code
from fake_run import make_fake_run

from ceusfusion.config import TrainSection
from ceusfusion.core.errors import CeusError
from ceusfusion.explain.cases import explain_cases
from ceusfusion.explain.results import load_explanations
from ceusfusion.fusion.extract import extract_features
from ceusfusion.models.backbones import CeusNet, build_model, model_channels
from ceusfusion.models.registry import read_config
from ceusfusion.models.train import TrainConfig
from ceusfusion.models.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, rank_pool_weights, summary_channels

torch.set_num_threads(1)


def _frames(values, size=4):
    """(1, T, size, size) uint8 keyframes, frame t constant at values[t]."""
    return torch.tensor(values, dtype=torch.uint8).view(1, -1, 1, 1).expand(1, len(values), size, size).clone()


def test_rank_pool_weights_match_bilen_and_sum_to_zero():
    # T = 5 by hand: H = 0, 1, 3/2, 11/6, 25/12, 137/60
    np.testing.assert_allclose(rank_pool_weights(5).numpy(), [-3.7, 0.3, 1.3, 1.3, 0.8], atol=1e-12)
    for t in (1, 2, 3, 8):
        assert float(rank_pool_weights(t).sum()) == pytest.approx(0.0, abs=1e-12)
    assert rank_pool_weights(1).tolist() == [0.0]


def test_summary_channels_of_constant_and_increasing_sequences():
    const = summary_channels(_frames([100] * 5), 5, 1)
    assert const.shape == (1, 3, 4, 4)
    np.testing.assert_allclose(const[0, :, 0, 0].numpy(), [100 / 255, 0.0, 0.5], atol=1e-6)

    vals = [0, 51, 102, 153, 204]
    ramp = summary_channels(_frames(vals), 5, 1)[0, :, 0, 0].numpy()
    f = np.array(vals) / 255
    alpha = np.array([-3.7, 0.3, 1.3, 1.3, 0.8])
    assert ramp[0] == pytest.approx(f.mean(), abs=1e-6)
    assert ramp[1] == pytest.approx(f.std() / 0.5, abs=1e-6)
    assert ramp[2] == pytest.approx(0.5 + (alpha @ f) / (2 * 3.7), abs=1e-6) and ramp[2] > 0.5
    # a decreasing sequence mirrors it below the zero level
    down = summary_channels(_frames(vals[::-1]), 5, 1)[0, 2, 0, 0].item()
    assert down == pytest.approx(1.0 - ramp[2], abs=1e-6)
    # extremes stay inside [0, 1]: a 0 -> 255 jump at the first frame gives the largest |D| = P
    jump = summary_channels(_frames([0, 255, 255, 255, 255]), 5, 1)[0, :, 0, 0].numpy()
    assert jump[2] == pytest.approx(1.0, abs=1e-6) and 0 <= jump.min() and jump.max() <= 1
    # one frame: no motion, the zero level
    assert summary_channels(_frames([40]), 1, 1)[0, 2, 0, 0].item() == pytest.approx(0.5)


def test_colour_frames_use_luminance():
    rgb = torch.zeros(1, 2 * 3, 2, 2, dtype=torch.uint8)
    rgb[:, 0::3], rgb[:, 1::3], rgb[:, 2::3] = 200, 100, 50  # R, G, B of both frames
    s = summary_channels(rgb, 2, 3)
    assert s[0, 0, 0, 0].item() == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, abs=1e-6)
    assert s[0, 1].abs().max() == 0
    with pytest.raises(CeusError, match="summary input expects 2x3 channels"):
        summary_channels(rgb[:, :5], 2, 3)


def test_batch_transform_summarises_after_crop_and_flip_then_normalises():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 4, 10, 10), dtype=torch.uint8, generator=g)
    raw = BatchTransform("summary", 4, 1, crop=6, size=10, pretrained=False)
    out = raw(x)
    assert out.shape == (2, 3, 6, 6)
    torch.testing.assert_close(out, summary_channels(x[..., 2:8, 2:8], 4, 1), atol=1e-5, rtol=0)
    params = {"oy": torch.tensor([0, 4]), "ox": torch.tensor([1, 3]), "hflip": torch.tensor([True, False]),
              "vflip": torch.tensor([False, True])}
    aug = raw(x, params)
    torch.testing.assert_close(aug[0], summary_channels(x[:1, :, 0:6, 1:7], 4, 1)[0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(aug[1], summary_channels(x[1:, :, 4:10, 3:9], 4, 1)[0].flip(-2), atol=1e-5, rtol=0)
    pre = BatchTransform("summary", 4, 1, crop=6, size=10, pretrained=True)(x)
    m, s = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(pre, (out - m) / s, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_summary_models_take_three_channels_and_train(arch):
    torch.manual_seed(0)
    model, _ = build_model(arch, "summary", frames=5, frame_channels=3, weights="none")
    assert isinstance(model, CeusNet) and model_channels("summary", 5, 3) == 3
    first = model.encoder.conv1 if arch == "resnet18" else model.encoder.features.conv0
    assert first.in_channels == 3  # RGB weights load as they are, no inflation
    x = BatchTransform("summary", 5, 3, crop=32, size=32, pretrained=True)(
        torch.randint(0, 256, (2, 15, 32, 32), dtype=torch.uint8))
    out = model(x)
    assert out.shape == (2,)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_config_names_and_validation():
    c = TrainConfig(modality="video", input_mode="summary")
    assert c.name == "DL_video_resnet18_summary"
    with pytest.raises(CeusError, match="needs keyframes"):
        TrainConfig(modality="image", input_mode="summary")
    assert TrainSection(video_inputs=["stack", "summary"]).video_inputs == ["stack", "summary"]


def test_train_features_and_explain_on_a_summary_model(tmp_path):
    run = make_fake_run(tmp_path / "run", n_train=12, n_test=4, size=20, frames=3, group_size=1, colour=True)
    assert exit_code(["train", "--run", str(run), "--modality", "video", "--input", "summary", "--weights", "none",
                 "--epochs", "1", "--folds", "2", "--batch-size", "4", "--crop", "16", "--no-progress"]) == 0
    name = "DL_video_resnet18_summary"
    assert (run / "predictions" / f"{name}.csv").is_file()
    cfg = read_config(run, name)
    assert cfg.input_mode == "summary" and cfg.raw["channels"] == 3 and cfg.frames == 3
    df, meta = extract_features(run, name, batch_size=5, device="cpu")
    assert len(df) == 16 and meta["feature_dim"] == 512
    assert np.isfinite(df[[c for c in df.columns if c.startswith("f")]].to_numpy()).all()
    (r,) = explain_cases(run, name, ["case013"], fold=0)
    assert r.image.shape == (3, 16, 16, 3) and r.cam.shape == (1, 16, 16)
    assert r.contribution.shape == (3,) and r.share.sum() == pytest.approx(1.0)
    # the three panels are the de-normalised mean / std / dynamic-image channels, shown grey
    assert np.allclose(r.image[..., 0], r.image[..., 2]) and r.extra["panels"] == ["mean", "std", "dynamic image"]
    out = tmp_path / "ex"
    assert exit_code(["explain", "--model", str(run / "models" / name), "--cases", "case013", "--out", str(out)]) == 0
    d = json.loads((out / "explain.json").read_text())
    assert d["input_mode"] == "summary" and len(d["cases"][0]["frame_share"]) == 3
    assert (out / "case013.png").is_file()
    meta, res = load_explanations(out)
    assert res[0].extra["panels"] == ["mean", "std", "dynamic image"]
