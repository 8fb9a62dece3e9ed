"""Issue 27, the DL arm: ImageNet weights fed a crop far below 224 px lose what their features separate (DDTI:
frozen Lite0 probes 0.57 at 64-128 px, 0.70 at 224 px; BENCHMARKS.md). ``train`` says so in one line."""

from __future__ import annotations

import warnings

import pytest
import torch
from fake_run import make_fake_run

from ceusfusion.models import lite_weights as L
from ceusfusion.models.backbones import InputScaleWarning, final_map_side, input_scale_warning
from ceusfusion.models.train import TrainConfig, train

torch.set_num_threads(1)


@pytest.mark.parametrize("arch, sides", [("tf_efficientnet_lite0", [2, 4, 6, 7, 7]), ("resnet18", [2, 4, 6, 7, 7]),
                                         ("densenet121", [1, 3, 6, 6, 7])])
def test_final_map_side_is_the_network_s_own(arch, sides):
    """Measured on the network: TF "same" padding and torchvision's convolutions round up, DenseNet's pooling down."""
    assert [final_map_side(arch, c) for c in (56, 112, 192, 193, 224)] == sides


def test_the_warning_names_the_map_and_the_crop_that_fixes_it():
    msg = input_scale_warning("tf_efficientnet_lite0", 112, "imagenet")
    assert msg is not None and "\n" not in msg
    assert "crop 112" in msg and "4x4" in msg and "7x7" in msg and "--crop 224" in msg and "--weights none" in msg
    assert input_scale_warning("tf_efficientnet_lite0", 196, "imagenet") is None  # 7x7: ImageNet's own map
    assert input_scale_warning("tf_efficientnet_lite0", 56, "none") is None  # random init: nothing to lose
    # weights from `ceusfusion pretrain` learnt at the cohort's own size: no ImageNet scale to miss
    assert input_scale_warning("resnet18", 56, "simclr_pocus") is None


def test_train_warns_once_for_imagenet_weights_at_a_small_crop(tmp_path):
    if "tf_efficientnet_lite0" not in L.available_lite_weights():
        pytest.skip("the lite-weights extra is not installed (ImageNet Lite0 offline)")
    run = make_fake_run(tmp_path, n_train=8, n_test=0, size=32, frames=1, with_video=False)
    cfg = dict(modality="image", arch="tf_efficientnet_lite0", epochs=1, folds=2, batch_size=4, crop=32,
               test_scoring="fold-mean")
    with pytest.warns(InputScaleWarning) as rec:
        train(run, TrainConfig(**cfg, weights="imagenet", name="imagenet"), progress=False)
    scale = [w for w in rec if issubclass(w.category, InputScaleWarning)]
    assert len(scale) == 1 and "1x1" in str(scale[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputScaleWarning)
        train(run, TrainConfig(**cfg, weights="none", name="random"), progress=False)


def test_measuring_the_map_leaves_the_global_seed_alone():
    final_map_side.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    final_map_side("resnet18", 56)
    assert torch.equal(torch.rand(3), expected)
