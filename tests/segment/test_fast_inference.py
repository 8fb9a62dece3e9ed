"""Predict's fast path (BatchNorm folded, channels-last) gives the masks of the models as trained.

Compared on probabilities with a tolerance, and on masks away from the 0.5 threshold, never on time
(the speed is bench/segment.py --time-only's ratio).
"""

import numpy as np
import pytest
import torch
from torch import nn

from ceusfusion.core.errors import CeusError
from ceusfusion.segment.infer import Segmenter, segment_auto, segment_box
from ceusfusion.segment.net import build_net, fold_batchnorm, for_inference
from ceusfusion.segment.predict import segment_predict

SIZE = 64


def trained_like(seed: int) -> nn.Module:
    """A U-Net whose BatchNorms hold non-trivial statistics and affine terms, as after training."""
    torch.manual_seed(seed)
    net = build_net("tf_efficientnet_lite0")
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def segmenters():
    nets = [trained_like(s) for s in (1, 2)]
    args = (SIZE, 0.25, 0.45, 0.23, torch.device("cpu"))
    return Segmenter(nets, *args, fast=False), Segmenter(nets, *args)


def frame() -> np.ndarray:
    yy, xx = np.mgrid[:90, :120]
    blob = ((yy - 45) / 20.0) ** 2 + ((xx - 60) / 30.0) ** 2 <= 1
    noise = np.random.default_rng(0).normal(0, 12, blob.shape)
    return np.clip(120 - 70 * blob + noise, 0, 255).astype(np.uint8)


def same(ref, got) -> None:
    """Probabilities within float rounding; masks equal wherever the reference is not on the threshold."""
    np.testing.assert_allclose(got.prob, ref.prob, atol=1e-4)
    settled = np.abs(ref.prob - 0.5) > 1e-3
    assert np.array_equal(got.mask[settled], ref.mask[settled])
    assert got.box == ref.box


def test_every_batchnorm_after_a_convolution_is_folded():
    net = trained_like(0)
    _, n = fold_batchnorm(net)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert n == bns > 0  # this U-Net has no BatchNorm that does not follow a convolution


def test_the_fast_path_gives_the_reference_masks(segmenters):
    ref, fast = segmenters
    assert fast.nets[0] is not ref.nets[0]
    f = frame()
    same(segment_box(ref, f, (28, 35, 62, 88)), segment_box(fast, f, (28, 35, 62, 88)))
    same(segment_auto(ref, f), segment_auto(fast, f))


class Crossed(nn.Module):
    """A BatchNorm registered right after a convolution but applied to something else: folding would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1)
        self.bn = nn.BatchNorm2d(1)
        self.bn.running_mean.fill_(0.7)
        self.bn.running_var.fill_(3.0)

    def forward(self, x):
        return self.conv(x) + self.bn(x[:, :1])


def test_a_model_where_folding_would_change_the_output_keeps_its_batchnorm():
    net = Crossed().eval()
    fast = for_inference(net, 32)
    assert isinstance(fast.bn, nn.BatchNorm2d)
    x = torch.rand(1, 2, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x))


def test_bfloat16_is_opt_in_close_and_a_wrong_precision_is_one_line(segmenters):
    ref, _ = segmenters
    bf = Segmenter(ref.nets, *(SIZE, 0.25, 0.45, 0.23, torch.device("cpu")), precision="bfloat16")
    assert next(bf.nets[0].parameters()).dtype == torch.bfloat16
    assert next(ref.nets[0].parameters()).dtype == torch.float32
    got, want = segment_box(bf, frame(), (28, 35, 62, 88)), segment_box(ref, frame(), (28, 35, 62, 88))
    assert got.prob.dtype == np.float32 and np.abs(got.prob - want.prob).mean() < 0.05
    with pytest.raises(CeusError) as e:
        Segmenter(ref.nets, SIZE, 0.25, 0.45, 0.23, torch.device("cpu"), precision="float16")
    assert "\n" not in str(e.value) and "float16" in str(e.value)


def test_predict_refuses_an_unknown_precision_before_writing(tmp_path):
    with pytest.raises(CeusError, match="--precision"):
        segment_predict(tmp_path / "cohort.csv", tmp_path / "model", tmp_path / "out", precision="int8")
    assert not (tmp_path / "out").exists()
