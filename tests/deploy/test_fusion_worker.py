"""Issue 24: the command line's one patient loads the fused model in a second process (deploy.fusion_worker) while
it imports torch. The worker's answer must be the in-process one exactly, and it must keep every promise the
in-process reader keeps: only the listed bytes, audited, never unpickled, one line when it refuses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from ceusfusion.core.errors import CeusError
from ceusfusion.deploy.export import FUSION_MODEL, load_fusion_model, write_fusion_model
from ceusfusion.deploy.fusion_worker import FusionWorker
from paths import ROOT

COLUMNS = [f"m__f{i:04d}" for i in range(5)]


def _bundle(tmp_path, clf) -> tuple:
    """A folder with bundle.json and a fitted fusion pipeline on float columns; (folder, meta, X rows)."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, len(COLUMNS))), columns=COLUMNS)
    y = (X.iloc[:, 0] - X.iloc[:, 1] + rng.normal(scale=0.5, size=60) > 0).astype(int)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", clf)]).fit(X, y)
    (tmp_path / "fusion").mkdir()
    write_fusion_model(pipe, tmp_path / FUSION_MODEL)
    meta = {"combined": {"model": FUSION_MODEL},
            "files": {FUSION_MODEL: hashlib.sha256((tmp_path / FUSION_MODEL).read_bytes()).hexdigest()}}
    (tmp_path / "bundle.json").write_text(json.dumps(meta))
    return tmp_path, meta, pd.DataFrame(rng.normal(size=(3, len(COLUMNS))), columns=COLUMNS)


@pytest.mark.parametrize("clf", [LogisticRegression(), KNeighborsClassifier(n_neighbors=7)], ids=["lr", "knn"])
def test_the_worker_answers_exactly_what_the_in_process_model_gives(tmp_path, clf):
    bundle, meta, rows = _bundle(tmp_path, clf)
    pipe = load_fusion_model(bundle, meta)
    worker = FusionWorker.start(bundle)
    try:
        worker.ready(meta["files"][FUSION_MODEL])
        for i in range(len(rows)):
            row = rows.iloc[[i]]
            shuffled = row[list(reversed(COLUMNS))]  # the worker puts the columns in the fitted order
            assert np.array_equal(worker.predict_proba(shuffled), pipe.predict_proba(row))
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_the_worker_refuses_bytes_the_verified_manifest_does_not_list(tmp_path):
    bundle, meta, _ = _bundle(tmp_path, LogisticRegression())
    worker = FusionWorker.start(bundle)
    try:
        with pytest.raises(CeusError, match="changed while predict verified"):
            worker.ready("0" * 64)
    finally:
        worker.close()


def test_the_worker_refuses_a_changed_model_file_in_one_line(tmp_path):
    bundle, meta, _ = _bundle(tmp_path, LogisticRegression())
    (bundle / FUSION_MODEL).write_bytes((bundle / FUSION_MODEL).read_bytes() + b"x")
    worker = FusionWorker.start(bundle)
    try:
        with pytest.raises(CeusError, match="sha256 mismatch") as err:
            worker.ready(meta["files"][FUSION_MODEL])
        assert "\n" not in str(err.value)
    finally:
        worker.close()


def test_the_worker_builds_no_untrusted_type(tmp_path):
    """A fusion model naming os.system (hash and manifest consistent) is refused by the audit: nothing runs."""
    import skops.io as sio

    marker = tmp_path / "ran"
    pipe = Pipeline([("f", FunctionTransformer(os.system, kw_args={"command": f"touch {marker}"}))])
    (tmp_path / "fusion").mkdir()
    data = sio.dumps(pipe)
    (tmp_path / FUSION_MODEL).write_bytes(data)
    (tmp_path / "bundle.json").write_text(json.dumps({"combined": {"model": FUSION_MODEL},
                                                      "files": {FUSION_MODEL: hashlib.sha256(data).hexdigest()}}))
    worker = FusionWorker.start(tmp_path)
    try:
        with pytest.raises(CeusError, match="untrusted type"):
            worker.ready(hashlib.sha256(data).hexdigest())
    finally:
        worker.close()
    assert not marker.exists()


def test_the_worker_reads_no_symlinked_model(tmp_path):
    (tmp_path / "b").mkdir()
    bundle, meta, _ = _bundle(tmp_path / "b", LogisticRegression())
    outside = tmp_path / "outside.skops"
    (bundle / FUSION_MODEL).rename(outside)
    (bundle / FUSION_MODEL).symlink_to(outside)
    worker = FusionWorker.start(bundle)
    try:
        with pytest.raises(CeusError, match="symlink"):
            worker.ready(meta["files"][FUSION_MODEL])
    finally:
        worker.close()


def test_no_worker_for_a_bundle_without_a_fusion_model(tmp_path):
    (tmp_path / "bundle.json").write_text(json.dumps({"combined": None, "files": {}}))
    assert FusionWorker.start(tmp_path) is None
    assert FusionWorker.start(tmp_path / "missing") is None


def test_skops_is_imported_without_the_estimator_walk_and_sklearn_is_left_as_it_was():
    """The walk only fills skops' default trusted list, which a bundle never uses; afterwards scikit-learn's own
    all_estimators is back, and skops still round-trips a pipeline."""
    probe = """
import json, sys
import sklearn.utils
real = sklearn.utils.all_estimators
from ceusfusion.deploy.fusion_model import skops_io
sio = skops_io()
walked = [m for m in sys.modules if m.startswith("sklearn.") and m.endswith(".tests")]
print(json.dumps({"restored": sklearn.utils.all_estimators is real, "walked": walked, "torch": "torch" in sys.modules}))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"restored": True, "walked": [], "torch": False}
