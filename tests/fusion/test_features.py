"""Deep features: out-of-fold training rows, test rows from the refitted model, parquet layout, CLI and errors.

Three tiny resnet18 models (image single, video stack, video temporal; 3 folds,
1 epoch, 24 px crops) are trained once on a fake run; references are computed
here straight from each fold model's ``features()`` method.
"""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from fake_run import make_fake_run

from ceusfusion.cli import main
from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.fusion.extract import extract_features, make_extractor, score_features
from ceusfusion.fusion.features import feature_names, read_features
from ceusfusion.ingest.cache import read_index
from ceusfusion.models.data import load_cached
from ceusfusion.models.registry import load_fold_model, transform_for
from ceusfusion.models.train import TrainConfig, train

torch.set_num_threads(1)
K = 3
MODELS = {"img": ("image", "single"), "stk": ("video", "stack"), "tmp": ("video", "temporal")}


@pytest.fixture(scope="module")
def run(module_tmp_factory):
    run = make_fake_run(module_tmp_factory.mktemp("run"), n_train=30, n_test=8, size=28, frames=3, seed=1)
    for name, (modality, mode) in MODELS.items():
        cfg = TrainConfig(modality=modality, arch="resnet18", input_mode=mode, weights="none", epochs=1, folds=K,
                          batch_size=8, crop=24, seed=0, device="cpu", name=name)
        train(run, cfg, progress=False)
    return run


def reference(run, name):
    """Per fold model (then the refitted ``full`` one), features of every cached case via model.features()."""
    _, cfg = load_fold_model(run, name, 0)
    data = load_cached(run, cfg.modality)
    tf = transform_for(cfg)
    refs = []
    for f in [*range(K), "full"]:
        model, _ = load_fold_model(run, name, f)
        with torch.no_grad():
            refs.append(torch.cat([model.features(tf(data.x[i:i + 1])) for i in range(len(data))]).numpy())
    return data, np.stack(refs)


@pytest.mark.parametrize("name", list(MODELS))
def test_train_rows_are_out_of_fold_and_test_rows_the_refitted_models(run, name):
    df, meta = extract_features(run, name, batch_size=5, device="cpu")
    data, refs = reference(run, name)
    assert list(df["case_id"]) == data.case_ids
    folds = pd.read_csv(run / "models" / name / "folds.csv", dtype={"case_id": str}).set_index("case_id")["fold"]
    X = df[[c for c in df.columns if c.startswith("f")]].to_numpy()
    assert X.shape == (len(data), 512) and meta["feature_dim"] == 512
    n_train = 0
    for i, (cid, s) in enumerate(zip(df["case_id"], df["set"])):
        if s == "train":
            f = folds[cid]
            np.testing.assert_allclose(X[i], refs[f, i], rtol=1e-4, atol=1e-4)  # batch 5 vs 1: float32 noise
            other = refs[(f + 1) % K, i]
            assert not np.allclose(X[i], other, rtol=1e-3, atol=1e-4)  # another fold's model gives other features
            n_train += 1
        else:
            np.testing.assert_allclose(X[i], refs[K, i], rtol=1e-4, atol=1e-4)  # one model, not a shrunken mean
            assert not np.allclose(X[i], refs[:K, i].mean(0), rtol=1e-3, atol=1e-4)
    assert n_train == len(folds) == meta["n_train"] and (df["set"] == "test").sum() == meta["n_test"] == 8
    np.testing.assert_array_equal(df["y"].to_numpy(), data.labels)
    assert meta["extractor"] == "features"  # every model's own features(): the vector that feeds its head


def test_cli_writes_parquet_with_columns_and_metadata(run, capsys):
    out = run / "elsewhere" / "stk.parquet"
    with pytest.raises(SystemExit) as e:
        main(["features", "--model", str(run / "models" / "stk"), "--out", str(out), "--device", "cpu"])
    assert e.value.code == 0
    assert "wrote" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.column_names == ["case_id", "set", "y", "group"] + [f"f{j:04d}" for j in range(512)]
    assert str(table.schema.field("group").type) in ("string", "large_string")
    assert str(table.schema.field("y").type) == "int64" and str(table.schema.field("f0000").type) == "float"
    meta = json.loads(table.schema.metadata[b"ceusfusion"])
    assert {k: meta[k] for k in ("name", "arch", "modality", "input_mode", "layer", "feature_dim", "folds")} == {
        "name": "stk", "arch": "resnet18", "modality": "video", "input_mode": "stack", "layer": "features",
        "feature_dim": 512, "folds": K}
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left no temporary file
    # the fusion stage reads it as is
    from ceusfusion.fusion.features import read_features as fusion_read

    df, fmeta = fusion_read(out)
    assert fmeta["name"] == "stk" and len(df) == 38


def test_features_and_scores_carry_the_prepared_group(run):
    """The patient group travels with the features (issue 15): from RUN/prepared/index.csv, never a feature."""
    index = read_index(run).set_index("case_id")["group"]
    df, meta = extract_features(run, "img", device="cpu")
    assert list(df.columns[:4]) == ["case_id", "set", "y", "group"] and meta["groups"] == "prepared index"
    assert df["group"].tolist() == index.loc[df["case_id"]].tolist()
    assert df.loc[df["set"] == "train"].groupby("group").size().eq(2).all()  # the fake run: 2 cases a patient
    path = score_features(run, "img")
    scores, smeta = read_features(path)
    assert smeta["has_group"] and feature_names(scores) == ["f0000"]
    assert scores["group"].tolist() == index.loc[scores["case_id"]].tolist()


def test_default_output_path_and_determinism(run):
    with pytest.raises(SystemExit) as e:
        main(["features", "--model", str(run / "models" / "img"), "--device", "cpu", "--batch-size", "7"])
    assert e.value.code == 0
    path = run / "features" / "img.parquet"
    a, meta = read_features(path)
    assert meta["modality"] == "image" and meta["input_mode"] == "single"
    b, _ = extract_features(run, "img", batch_size=7, device="cpu")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_layer_option(run):
    df, meta = extract_features(run, "stk", layer="encoder.layer3", device="cpu")
    assert meta["layer"] == "encoder.layer3" and meta["feature_dim"] == 256 and df.shape[1] == 4 + 256
    model, _ = load_fold_model(run, "stk", 0)
    with pytest.raises(CeusError, match="not a node of this model.*encoder.layer3"):
        make_extractor(model, "encoder.layer33")
    with pytest.raises(CeusError, match="temporal models cannot be traced"):
        extract_features(run, "tmp", layer="encoder.layer3", device="cpu")


@pytest.mark.parametrize("bad", ["missing", "no_config", "not_in_models"])
def test_bad_model_path_is_one_line(run, tmp_path, capsys, bad):
    path = tmp_path / "nope"
    if bad != "missing":
        path.mkdir()
    if bad == "not_in_models":
        (path / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        main(["features", "--model", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--model" in err and len(err.splitlines()) == 1


def test_training_case_without_fold_is_refused(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run / "prepared", copy / "prepared")
    shutil.copytree(run / "models" / "img", copy / "models" / "img")
    folds = pd.read_csv(copy / "models" / "img" / "folds.csv", dtype={"case_id": str})
    folds.iloc[1:].to_csv(copy / "models" / "img" / "folds.csv", index=False)
    with pytest.raises(CaseError, match=f"case {folds['case_id'].iloc[0]} .*training case has no fold"):
        extract_features(copy, "img", device="cpu")


def test_default_features_are_the_head_input_for_traceable_and_untraceable_backbones():
    """The default extractor is the model's own ``features()``: for a traceable torchvision model it equals
    the traced node feeding the head (what it was before); timm's TF-padded Lite cannot be traced at all."""
    import torch

    from ceusfusion.fusion.extract import default_layer, make_extractor
    from ceusfusion.models.backbones import build_model

    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    model, _ = build_model("resnet18", "stack", 3, 1, weights="none")
    traced = make_extractor(model, default_layer(model))
    assert traced.method == "create_feature_extractor"
    torch.testing.assert_close(make_extractor(model)(x), traced(x))
    lite, _ = build_model("tf_efficientnet_lite0", "stack", 3, 1, weights="none")
    assert make_extractor(lite)(x).shape == (2, lite.feature_dim)
