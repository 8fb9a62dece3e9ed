"""Grad-CAM maps mean something: on synthetic data, where the generator recorded where the
discriminative signal lives, a trained five-frame model puts more of its map there than a
uniform map and than the same model with randomised weights (issue 7).

The cohort is the synthetic generator with its controls for experiments: label effects
2.5x the reference-like ones (so a 64 px model trained from scratch on 100 cases learns
them), and nodule size untied from the label (otherwise a ROI crop resized to a fixed side
shows size everywhere as texture scale, and no region holds the evidence). The ROI margin
is wide (0.75 of the lesion on each side) so that the nodule-and-margin region is a
quarter of the input, not nearly all of it.
"""

import json

import numpy as np
import pytest
import torch

from ceusfusion.explain.cases import explain
from ceusfusion.ingest.prepare import PrepareParams, prepare
from ceusfusion.models.train import TrainConfig, train
from ceusfusion.synthetic.synth import SynthConfig, generate

pytestmark = pytest.mark.slow

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def localisation(module_tmp_factory):
    root = module_tmp_factory.mktemp("loc")
    data = generate(root / "data", SynthConfig(n=160, seed=0, size=192, duration=12, signal=2.5, size_tied=False),
                    workers=2)
    run = root / "run"
    prepare(data, run, PrepareParams(size=72, margin=0.75), workers=2, progress=False)
    summary = train(run, TrainConfig(modality="video", arch="resnet18", weights="none", epochs=8, folds=3,
                                     batch_size=32, lr=1e-3, crop=64, seed=0), progress=False)
    out = explain(run, "DL_video_resnet18", root / "explain", per_class=10, truth=data.parent / "truth.csv",
                  sanity=True)
    return summary, json.loads(out.read_text())


def test_model_learned_the_signal(localisation):
    summary, _ = localisation
    # otherwise the maps below explain noise; 0.838, 0.827 (two threads), 0.843 (AVX2 kernels): 0.8 was 1.7x the spread
    assert summary["cv_auc_mean"] > 0.77


def test_cam_energy_in_signal_region_beats_uniform_and_randomised(localisation):
    """The maps of the positive class, where the generator put the label's evidence (its effects live in the
    nodule and its margin), are measured. Over all 20 cases the map's energy against the uniform map moved from
    1.60x (1.63x at two threads) to 1.16x and the share of cases above uniform from 0.65 (0.75) to 0.45 between
    this CPU's kernels and AVX2 ones (the negative-class maps are localised on one trajectory and not on the
    other), so no threshold on them holds on every machine; the positive-class maps' did not move that much
    (BENCHMARKS.md, "Test margins")."""
    _, d = localisation
    assert d["layer"] == "encoder.layer2"  # 8x8 at 64 px; layer4 would be 2x2
    cases = d["cases"]
    assert len(cases) == 20 and {c["cam_class"] for c in cases} == {0, 1}
    energy = np.array([c["cam_energy_in_region"] for c in cases])
    area = np.array([c["region_area_share"] for c in cases])  # what a uniform map puts there
    rand = np.array([c["randomised_energy_in_region"] for c in cases])
    assert 0.15 < area.mean() < 0.4  # the region is a part of the input, not all of it (0.23, 0.23, 0.24)
    pos = np.array([c["cam_class"] == 1 for c in cases])
    # the middle positive-class map, not a few extreme ones: 1.91, 1.63, 1.75 (6, 5, 8 maps: one thread, two, AVX2
    # kernels); a map of the BatchNorm offset, of the padded border or upsampled from 2x2 gives about 1 or less
    assert np.median(energy[pos] / area[pos]) > 1.15
    # the trained model's positive-class maps against the randomised model's on the same cases: 5.3, 5.6, 5.1
    assert energy[pos].mean() > 2 * rand[pos].mean()
    # and the randomised model's maps are unlike the trained model's (model-randomisation test): 0.12, 0.15, 0.00
    assert abs(d["randomisation_check"]["mean_rank_correlation"]) < 0.5
