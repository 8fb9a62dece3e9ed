"""Grad-CAM explanations: maps, per-frame numbers, files, Figure 5, and the sanity-check helpers."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from explain_fake_run import make_region_run
from torch import nn

from ceusfusion.cli import main
from ceusfusion.core.errors import CeusError
from ceusfusion.explain.cam import frame_contributions
from ceusfusion.explain.cases import explain_cases, select_per_class
from ceusfusion.explain.regions import region_to_input, signal_regions
from ceusfusion.explain.sanity import cascade_prefixes, energy_share, randomise_model, rank_correlation
from ceusfusion.models.registry import load_fold_model
from ceusfusion.models.train import TrainConfig, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(module_tmp_factory):
    """An image model (learns the planted disk) and stack / temporal video models (1 epoch: structure only)."""
    run, regions = make_region_run(module_tmp_factory.mktemp("run"), n_train=24, n_test=8, size=48, frames=3)
    common = dict(arch="resnet18", weights="none", folds=2, batch_size=12, crop=48, lr=2e-3, seed=0)
    train(run, TrainConfig(modality="image", epochs=4, **common), progress=False)
    train(run, TrainConfig(modality="video", epochs=1, **common), progress=False)
    train(run, TrainConfig(modality="video", input_mode="temporal", epochs=1, **common), progress=False)
    return run, regions


def test_image_maps_shapes_folds_and_probabilities(trained):
    run, regions = trained
    res = explain_cases(run, "DL_image_resnet18", regions=regions)
    assert len(res) == 8 and all(r.set == "test" and r.folds == ["full"] for r in res)  # the model that scored them
    for r in res:
        assert r.image.shape == (1, 48, 48, 3) and r.cam.shape == (1, 48, 48)
        assert 0 <= r.cam.min() and r.cam.max() <= 1 + 1e-6
        assert r.contribution is None and r.attention is None
    # the probability is the refitted model's, as in the predictions file
    import pandas as pd

    pred = pd.read_csv(run / "predictions" / "DL_image_resnet18.csv", dtype={"case_id": str}).set_index("case_id")
    np.testing.assert_allclose([r.prob for r in res], pred.loc[[r.case_id for r in res], "prob"], atol=1e-5)
    # a training case is explained by the fold model that held it out
    folds = pd.read_csv(run / "models" / "DL_image_resnet18" / "folds.csv", dtype={"case_id": str})
    cid, k = folds.iloc[0]["case_id"], int(folds.iloc[0]["fold"])
    (tr,) = explain_cases(run, "DL_image_resnet18", [cid])
    assert tr.folds == [k] and tr.set == "train"


def test_maps_follow_the_model_and_randomisation_changes_them(trained):
    run, _ = trained
    model, cfg = load_fold_model(run, "DL_image_resnet18", 0)
    ids = ["case024", "case025", "case026", "case027"]
    a = explain_cases(run, "DL_image_resnet18", ids, fold=0)
    b = explain_cases(run, "DL_image_resnet18", ids, fold=0)
    assert all(rank_correlation(x.cam, y.cam) == pytest.approx(1.0) for x, y in zip(a, b))  # deterministic
    rnd = randomise_model(model, seed=1)
    assert not any(torch.equal(p, q) for p, q in zip(model.parameters(), rnd.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), load_fold_model(run, "DL_image_resnet18", 0)[0].parameters()))
    c = explain_cases(run, "DL_image_resnet18", ids, fold=0, models={0: rnd})
    assert any(not np.allclose(x.cam, z.cam, atol=1e-3) for x, z in zip(a, c))
    head_only = randomise_model(model, seed=1, prefixes=["head"])
    assert torch.equal(head_only.encoder.conv1.weight, model.encoder.conv1.weight)
    assert not torch.equal(head_only.head.weight, model.head.weight)
    steps = cascade_prefixes(model)
    assert steps[0] == ["dropout", "head"] or steps[0] == ["head"] or "head" in steps[0]
    assert steps[1][-1] == "encoder.layer4" and steps[-1][-1] == "encoder.conv1"


def test_energy_share_and_rank_correlation_helpers():
    region = np.zeros((10, 10), bool)
    region[:5, :5] = True
    assert energy_share(np.ones((10, 10)), region) == pytest.approx(0.25)  # uniform map = area share
    inside = region.astype(float)
    assert energy_share(inside, region) == pytest.approx(1.0)
    assert energy_share(1 - inside, region) == pytest.approx(0.0)
    coarse = np.zeros((5, 5))
    coarse[:2, :2] = 1.0  # a coarse map: the region is resized (nearest) to it
    big = np.zeros((10, 10), bool)
    big[:4, :4] = True
    assert energy_share(coarse, big) == pytest.approx(1.0)
    assert energy_share(np.zeros((10, 10)), region) == pytest.approx(0.25)  # no evidence anywhere = uniform
    rng = np.random.default_rng(0)
    a = rng.random((8, 8))
    assert rank_correlation(a, a ** 3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.ones((8, 8))) == 0.0


def test_frame_contributions_are_exact_for_a_linear_model():
    """grad × input per frame equals each frame's exact share of a linear logit."""
    w = torch.tensor([1.0, -2.0, 0.5])

    class Linear(nn.Module):
        def forward(self, x):
            return (x.mean((2, 3)) * w).sum(1)

    x = torch.rand(2, 3, 4, 4)
    c = frame_contributions(Linear(), x, 3)
    np.testing.assert_allclose(c, (x.mean((2, 3)) * w).numpy(), rtol=1e-5)


def test_stack_and_temporal_video_models(trained):
    run, _ = trained
    (s,) = explain_cases(run, "DL_video_resnet18", ["case025"])
    assert s.image.shape == (3, 48, 48, 3) and s.cam.shape == (1, 48, 48)
    assert s.contribution.shape == (3,) and s.share.sum() == pytest.approx(1.0)
    assert s.maps_per_frame().shape == (3, 48, 48) and s.attention is None
    (t,) = explain_cases(run, "DL_video_resnet18_temporal", ["case025"], fold=0)
    assert t.cam.shape == (3, 48, 48) and t.cam.max() == pytest.approx(1.0, abs=1e-5)  # joint normalisation
    assert t.attention.shape == (3,) and t.attention.sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(CeusError, match="scorecam"):
        explain_cases(run, "DL_video_resnet18_temporal", ["case025"], method="scorecam")


@pytest.mark.parametrize("method", ["gradcam++", "scorecam"])
def test_other_methods(trained, method):
    run, _ = trained
    (r,) = explain_cases(run, "DL_image_resnet18", ["case025"], fold=0, method=method)
    assert r.cam.shape == (1, 48, 48) and np.isfinite(r.cam).all() and r.cam.max() <= 1 + 1e-6


def test_per_class_selection_rule():
    ids = ["a", "b", "c", "d", "e"]
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.4, 0.1, 0.6, 0.9, 0.9])
    assert select_per_class(ids, y, p, 1) == ["b", "d"]  # tie at 0.9 broken by id
    assert select_per_class(ids, y, p, 2) == ["b", "a", "d", "e"]
    with pytest.raises(CeusError):
        select_per_class(ids, y, p, 0)


def test_region_mapping_follows_the_prepared_roi_box(tmp_path):
    """A signal mask in the raw frame is cut with keyframes.json's box, resized, centre-cropped."""
    from ceusfusion.core.fsutil import write_json
    from ceusfusion.synthetic.synth import write_mask

    raw = np.zeros((100, 100), bool)
    raw[40:60, 50:70] = True  # inside the box (y 30..70, x 40..80)
    write_mask(tmp_path / "signal" / "c1_margin.nii.gz", raw)
    (tmp_path / "truth.csv").write_text("case_id,image_signal\nc1,signal/c1_margin.nii.gz\n")
    write_json(tmp_path / "run" / "prepared" / "keyframes.json",
               {"params": {"size": 40}, "cases": {"c1": {"image": {"box": [30, 40, 70, 80]}}}})
    m = signal_regions(tmp_path / "run", tmp_path / "truth.csv", "image", ["c1", "absent"])
    assert set(m) == {"c1"} and m["c1"].shape == (40, 40)
    ys, xs = np.nonzero(m["c1"])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 29, 10, 29)
    crop = region_to_input(m["c1"], SimpleNamespace(image_size=20, crop=16))  # half size, then centre 16 of 20
    ys, xs = np.nonzero(crop)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (3, 12, 3, 12)


def _cli(args) -> int:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code


def test_cli_writes_overlays_json_and_figure5(trained, tmp_path, capsys):
    run, _ = trained
    img, vid = tmp_path / "img", tmp_path / "vid"
    assert _cli(["explain", "--model", str(run / "models" / "DL_image_resnet18"), "--per-class", "1",
                 "--out", str(img), "--sanity"]) == 0
    assert _cli(["explain", "--model", str(run / "models" / "DL_video_resnet18_temporal"), "--per-class", "1",
                 "--out", str(vid)]) == 0
    d = json.loads((img / "explain.json").read_text())
    assert [c["label"] for c in d["cases"]] == [0, 1] and d["method"] == "gradcam"
    assert "randomised_rank_correlation" in d["cases"][0] and "mean_rank_correlation" in d["randomisation_check"]
    v = json.loads((vid / "explain.json").read_text())
    assert len(v["cases"][0]["attention"]) == 3 and len(v["cases"][0]["frame_share"]) == 3
    for c in d["cases"] + v["cases"]:
        assert (img / f"{c['case_id']}.png").is_file() or (vid / f"{c['case_id']}.png").is_file()
    assert _cli(["explain-figure", "--image", str(img), "--video", str(vid), "--out", str(tmp_path / "fig5")]) == 0
    assert (tmp_path / "fig5.png").stat().st_size > 10_000 and (tmp_path / "fig5.svg").is_file()
    assert _cli(["explain", "--model", str(run / "models" / "DL_image_resnet18"), "--cases", "nope",
                 "--out", str(img)]) == 2
    assert "nope" in capsys.readouterr().err
