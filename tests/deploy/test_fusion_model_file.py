"""The bundle's fusion model file (skops, never a pickle): every family round-trips to the same probabilities,
and a file naming a type outside the allowlist, a pickle, or a crafted tree/SVM is refused in one line."""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from ceusfusion.core.errors import CeusError
from ceusfusion.deploy.export import FUSION_MODEL, load_fusion_model, write_fusion_model
from ceusfusion.fusion.families import FAMILIES
from ceusfusion.fusion.inputs import FusionData
from ceusfusion.fusion.pipeline import FusionConfig, refit


def _data(n: int = 80, seed: int = 0) -> FusionData:
    """Deep, numeric (with a gap) and categorical columns, so every front step is in the model."""
    rng = np.random.default_rng(seed)
    deep = rng.normal(size=(n, 6))
    y = (deep[:, 0] - deep[:, 1] + rng.normal(scale=0.7, size=n) > 0).astype(int)
    frame = pd.DataFrame(deep, columns=[f"m__f{i:04d}" for i in range(6)])
    frame["age"] = rng.normal(55, 10, n)
    frame.loc[3, "age"] = np.nan
    frame["sex"] = rng.choice(["F", "M"], n)
    frame.insert(0, "y", y)
    frame.insert(0, "set", "train")
    frame.insert(0, "case_id", [f"c{i:03d}" for i in range(n)])
    return FusionData(frame=frame, deep=[f"m__f{i:04d}" for i in range(6)], numeric=["age"], categorical=["sex"])


def _as_bundle(tmp_path, data: bytes):
    """A folder and the manifest part load_fusion_model reads, for one fusion model file."""
    (tmp_path / "fusion").mkdir(exist_ok=True)
    (tmp_path / FUSION_MODEL).write_bytes(data)
    meta = {"combined": {"model": FUSION_MODEL}, "files": {FUSION_MODEL: hashlib.sha256(data).hexdigest()}}
    return tmp_path, meta


def _written(tmp_path, pipe):
    write_fusion_model(pipe, tmp_path / FUSION_MODEL)
    return _as_bundle(tmp_path, (tmp_path / FUSION_MODEL).read_bytes())


@functools.cache
def _fitted(family: str) -> Pipeline:
    """The family's final model exactly as `fuse` refits it (front, LASSO path, grid search); copy before changing."""
    data = _data()
    cfg = FusionConfig(classifiers=(family,), folds=2, inner_folds=3, n_cs=5, fast=True)
    return refit(data, cfg, family, data.frame.index.to_numpy())[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_round_trips_to_the_same_probabilities(tmp_path, family):
    data, pipe = _data(), _fitted(family)
    back = load_fusion_model(*_written(tmp_path, pipe))
    for X in (data.frame[data.columns], _data(n=40, seed=1).frame[data.columns]):
        assert np.abs(back.predict_proba(X) - pipe.predict_proba(X)).max() <= 1e-9, family


def test_knn_neighbour_tree_is_rebuilt_from_its_data(tmp_path):
    """A KD tree read from the file is not used: native code would index its arrays unchecked."""
    data, pipe = _data(), _fitted("knn")
    knn = pipe.named_steps["clf"]
    assert knn._fit_method in ("kd_tree", "ball_tree")
    bundle, meta = _written(tmp_path, pipe)
    back = load_fusion_model(bundle, meta)
    assert back.named_steps["clf"]._tree is not knn._tree
    X = data.frame[data.columns]
    assert np.array_equal(back.predict_proba(X), pipe.predict_proba(X))


class Stranger(FunctionTransformer):
    """A type no bundle has: loading it would import and run this test module's code."""


@pytest.mark.parametrize("step", [FunctionTransformer(func=os.system), Stranger()], ids=["function", "class"])
def test_a_type_outside_the_allowlist_is_refused(tmp_path, step):
    pipe = Pipeline([("x", step)])
    bundle, meta = _as_bundle(tmp_path, sio.dumps(pipe))
    with pytest.raises(CeusError, match=r"model\.skops: untrusted type") as e:
        load_fusion_model(bundle, meta)
    assert "\n" not in str(e.value)
    with pytest.raises(CeusError, match="untrusted type"):  # export refuses to write one as well
        write_fusion_model(pipe, tmp_path / "other.skops")


class Payload:
    """A pickle whose loading writes a marker file (benign stand-in for a hostile model)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_is_never_loaded(tmp_path):
    marker = tmp_path / "ran"
    bundle, meta = _as_bundle(tmp_path, pickle.dumps(Payload(marker)))
    with pytest.raises(CeusError, match=r"model\.skops: not a skops file.*never unpickled"):
        load_fusion_model(bundle, meta)
    assert not marker.exists()


def test_changed_bytes_are_refused_before_loading(tmp_path):
    bundle, meta = _written(tmp_path, _fitted("lr"))
    (bundle / FUSION_MODEL).write_bytes((bundle / FUSION_MODEL).read_bytes() + b"x")
    with pytest.raises(CeusError, match=r"model\.skops: changed since export"):
        load_fusion_model(bundle, meta)


def test_a_crafted_tree_is_refused(tmp_path):
    """sklearn walks a tree's child indices unchecked: an out-of-range child would read outside the array."""
    pipe = copy.deepcopy(_fitted("rf"))
    tree = pipe.named_steps["clf"].estimators_[0].tree_
    left = tree.children_left  # a view on the tree's own nodes
    left[0] = tree.node_count + 1000
    assert tree.children_left[0] == tree.node_count + 1000
    bundle, meta = _as_bundle(tmp_path, sio.dumps(pipe))
    with pytest.raises(CeusError, match=r"model\.skops: the DecisionTreeClassifier inside is inconsistent"):
        load_fusion_model(bundle, meta)


def test_a_crafted_svm_is_refused(tmp_path):
    """libsvm trusts the support-vector counts: more than the stored vectors would read past them."""
    pipe = copy.deepcopy(_fitted("svm"))
    svc = next(v for v in vars(pipe.named_steps["clf"]).values() if type(v).__name__ == "SVC")
    svc._n_support = svc._n_support + 50
    bundle, meta = _as_bundle(tmp_path, sio.dumps(pipe))
    with pytest.raises(CeusError, match=r"model\.skops: the SVC inside is inconsistent"):
        load_fusion_model(bundle, meta)
