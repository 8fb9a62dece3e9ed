"""Issue 24: the demo says `weights: none` where random initialisation is meant (resnet18 beside the ImageNet
Lite0), so it tries no download and prints no warning; a study's train.crop must fit the arrays it is cut from."""

from __future__ import annotations

import warnings

import pytest

from ceusfusion.config import parse_config
from ceusfusion.core.errors import CeusError
from ceusfusion.demo import demo_archs, demo_config
from ceusfusion.models import resolver
from ceusfusion.models.backbones import fetch_backbone_weights
from ceusfusion.study import Study


def test_weights_by_arch_sets_one_architecture_s_start():
    cfg = parse_config({"cohort": "c.csv", "out": "run", "train": {"archs": ["densenet121", "resnet18"],
                                                                      "weights_by_arch": {"resnet18": "none"}}})
    got = {(c.arch, c.modality): c.weights for c in Study(cfg).model_configs()}
    assert got == {("densenet121", "image"): "imagenet", ("resnet18", "image"): "none",
                   ("densenet121", "video"): "imagenet", ("resnet18", "video"): "none"}
    with pytest.raises(CeusError, match="weights_by_arch names vgg11, not in archs"):
        parse_config({"cohort": "c.csv", "out": "run", "train": {"archs": ["resnet18"], "weights_by_arch": {"vgg11": "none"}}})


@pytest.mark.skipif("tf_efficientnet_lite0" not in demo_archs(), reason="the lite-weights extra is not installed")
def test_demo_resolves_every_start_offline_without_a_warning(tmp_path, monkeypatch):
    def no_download(arch, tv):
        raise AssertionError(f"the demo tried to download weights for {arch}")

    monkeypatch.setattr(resolver, "SOURCES", tuple((n, no_download if n == "download" else f) for n, f in resolver.SOURCES))
    cfg = parse_config(demo_config(tmp_path / "run", tmp_path / "cohort.csv"))
    starts = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for arch in cfg.train.archs:
            starts[arch] = fetch_backbone_weights(arch, cfg.train.weights_of(arch)).used
    assert starts == {"tf_efficientnet_lite0": "imagenet", "resnet18": "none"}


def test_a_study_crop_larger_than_the_arrays_is_refused_at_once():
    with pytest.raises(CeusError, match=r"train.crop 224 is larger than the 96 px arrays \(prepare.size\)"):
        parse_config({"cohort": "c.csv", "out": "run", "prepare": {"size": 96}})
    with pytest.raises(CeusError, match=r"train.crop 64 is larger than the 48 px arrays \(train.size\)"):
        parse_config({"cohort": "c.csv", "out": "run", "prepare": {"size": 96}, "train": {"size": 48, "crop": 64}})
    parse_config({"cohort": "c.csv", "out": "run", "prepare": {"size": 96}, "train": {"crop": 96}})


def test_readme_describes_the_demo_that_runs():
    from paths import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = " ".join(readme[readme.index("## Quick start"):readme.index("### Honest by default")].split())
    assert "tf_efficientnet_lite0" in quick and "resnet18" in quick and "weights_by_arch: {resnet18: none}" in quick
    assert "about 4 minutes" not in quick and "7–9 minutes" in quick
