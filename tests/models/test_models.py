"""Backbones x input modes, first-conv inflation, weights loading (and refusing pickles)."""

import os

import pytest
import torch

from ceusfusion.core.errors import CeusError
from ceusfusion.models import weights as W
from ceusfusion.models.backbones import ARCHS, CeusNet, TemporalNet, build_model, gradcam_layer, inflate_conv

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_backbone_and_input_mode_runs_forward_and_backward(arch):
    torch.manual_seed(0)
    for mode, frames, fc in [("single", 1, 1), ("stack", 3, 1), ("temporal", 2, 3)]:
        model, used = build_model(arch, mode, frames, fc, weights="none")
        assert used == "none"
        c = 3 if mode == "single" else frames * fc
        x = torch.rand(2, c, 32, 32, requires_grad=False)
        out = model(x)
        assert out.shape == (2,)
        out.sum().backward()
        first = next(p for p in model.parameters() if p.grad is not None)
        assert torch.isfinite(first.grad).all()
        assert model.features(x).shape == (2, model.feature_dim)
        assert isinstance(gradcam_layer(model, arch), torch.nn.Module)
        if mode == "temporal":
            assert isinstance(model, TemporalNet)
            assert model.attention.shape == (2, frames)
            assert torch.allclose(model.attention.sum(1), torch.ones(2))
        else:
            assert isinstance(model, CeusNet)


def test_inflated_conv_keeps_activations_of_a_replicated_grey_frame():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    for c in (5, 15):
        new = inflate_conv(conv, c)
        g = torch.rand(1, 1, 12, 12)
        # the same grey frame in every channel gives the same output as the RGB conv on grey-as-RGB
        assert torch.allclose(new(g.expand(-1, c, -1, -1)), conv(g.expand(-1, 3, -1, -1)), atol=1e-5)
        assert new.stride == conv.stride and new.padding == conv.padding


def test_state_dict_file_loads_as_safetensors_and_weights_only_torch(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    src = torchvision.models.resnet18(weights=None)
    sd = src.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "r18.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "r18.pth")
    for f in ("r18.safetensors", "r18.pth"):
        model, used = build_model("resnet18", "stack", 5, 1, weights=str(tmp_path / f))
        assert used.startswith("file:")
        assert torch.equal(model.encoder.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])
        expect = sd["conv1.weight"].mean(1, keepdim=True).repeat(1, 5, 1, 1) * 3 / 5
        assert torch.allclose(model.encoder.conv1.weight, expect)
    with pytest.raises(CeusError, match="no parameter matches"):
        build_model("densenet121", "single", weights=str(tmp_path / "r18.safetensors"))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_pickle_checkpoint_is_refused(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Evil()}, path)
    with pytest.raises(CeusError, match="refused"):
        build_model("resnet18", "single", weights=str(path))
    assert not _Evil.marker.exists()


def test_missing_imagenet_weights_warn_and_fall_back_or_fail(monkeypatch):
    import torchvision

    def no_weights(name):
        raise OSError("no internet")

    monkeypatch.setattr(torchvision.models, "get_model_weights", no_weights)
    with pytest.warns(W.WeightsUnavailableWarning, match="RANDOM initialisation"):
        _, used = build_model("resnet18", "single", weights="imagenet")
    assert used == "none"
    with pytest.raises(CeusError, match="ImageNet weights for resnet18 could not be obtained"):
        build_model("resnet18", "single", weights="imagenet", require_weights=True)
    with pytest.raises(CeusError, match="unknown architecture"):
        build_model("not_a_network", "single")


def _imagenet_cache(tmp_path, monkeypatch, arch="resnet18"):
    """A private TORCH_HOME; torch.hub's own loader and any download made to fail loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def forbidden(*a, **k):
        raise AssertionError("torch.hub.load_state_dict_from_url unpickles without weights_only")

    def offline(*a, **k):
        raise OSError("offline")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", forbidden)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    _, path, prefix = W.imagenet_file(arch)
    path.parent.mkdir(parents=True)
    return path, prefix


def test_imagenet_cache_payload_never_runs(tmp_path, monkeypatch):
    """Issue 16: a pickle planted in $TORCH_HOME/hub/checkpoints under the expected name ran code."""
    path, prefix = _imagenet_cache(tmp_path, monkeypatch)
    assert prefix and path.name == f"resnet18-{prefix}.pth"
    _Evil.marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Evil()}, path)
    for require in (False, True):
        with pytest.raises(CeusError, match=f"{path}: sha256 does not start with the published {prefix}") as e:
            build_model("resnet18", "single", weights="imagenet", require_weights=require)
        assert "\n" not in str(e.value)
    assert not _Evil.marker.exists()
    # even where no hash is published, the file is read weights-only
    monkeypatch.setattr(W, "imagenet_file", lambda arch: ("https://example.invalid/x.pth", path, None))
    with pytest.raises(CeusError, match="refused, it holds objects other than tensors") as e:
        build_model("resnet18", "single", weights="imagenet")
    assert str(path) in str(e.value) and not _Evil.marker.exists()


def test_imagenet_cache_file_with_the_published_hash_loads(tmp_path, monkeypatch):
    import hashlib

    import torchvision

    path, _ = _imagenet_cache(tmp_path, monkeypatch)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(sd, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    monkeypatch.setattr(W, "imagenet_file", lambda arch: ("https://example.invalid/x.pth", path, digest))
    model, used = build_model("resnet18", "single", weights="imagenet")
    assert used == "imagenet"
    assert torch.equal(model.encoder.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])


def test_imagenet_missing_offline_warns_naming_the_cache(tmp_path, monkeypatch):
    path, _ = _imagenet_cache(tmp_path, monkeypatch)
    with pytest.warns(W.WeightsUnavailableWarning, match="RANDOM initialisation") as rec:
        _, used = build_model("resnet18", "single", weights="imagenet")
    assert used == "none" and str(path.parent) in str(rec[0].message)
    assert "downloads are off" in str(rec[0].message)  # the tests run with CEUSFUSION_OFFLINE=1 (conftest)
    monkeypatch.delenv("CEUSFUSION_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(CeusError, match="download failed \\(OSError: offline\\)"):
        build_model("resnet18", "single", weights="imagenet", require_weights=True)


def test_densenet_files_with_torchvision_legacy_key_names_load(tmp_path):
    """torchvision's DenseNet ImageNet files name ``norm1`` ``norm.1``; they must load all the same."""
    import re

    import torchvision

    sd = torchvision.models.densenet121(weights=None).state_dict()
    old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in sd.items()}
    assert old != sd
    torch.save(old, tmp_path / "d121.pth")
    model, _ = build_model("densenet121", "single", weights=str(tmp_path / "d121.pth"))
    assert torch.equal(model.encoder.features.denseblock1.denselayer1.conv1.weight,
                       sd["features.denseblock1.denselayer1.conv1.weight"])
