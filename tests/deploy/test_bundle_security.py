"""A real bundle (tiny synthetic study) against the attacks of issue 16: each is refused by predict in one
line naming the file, no hostile pickle runs, and the safe-format bundle predicts what the run's in-memory
pipeline does."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil

import joblib
import numpy as np
import pandas as pd
import pytest
from cli_run import exit_code
from rich.console import Console

from ceusfusion.core.errors import CeusError
from ceusfusion.demo import run_demo
from ceusfusion.deploy import predict as predict_module
from ceusfusion.deploy.export import MANIFEST, SIDECAR, bundle_id, export, load_bundle, load_fusion_model
from ceusfusion.deploy.predict import predict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def made(module_tmp_factory):
    """(run, bundle, a test patient's files): one tiny study, exported once; tests tamper with copies."""
    root = module_tmp_factory.mktemp("bundle")
    run_demo(root / "run", Console(record=True, width=160), n=48, quick=True, progress=False)
    bundle = export(root / "run", root / "bundle")
    row = pd.read_csv(root / "run" / "data" / "cohort.csv").query("split == 'test'").iloc[0]
    d = root / "run" / "data"
    patient = {"image": d / row["image"], "image_mask": d / row["image_mask"], "video": d / row["video"],
               "video_mask": d / row["video_mask"], "case_id": str(row["case_id"])}
    return root / "run", bundle, patient


@pytest.fixture
def bundle(made, tmp_path):
    """A fresh copy of the bundle to tamper with."""
    return shutil.copytree(made[1], tmp_path / "b")


def _predict(made, bundle, **kw):
    p = made[2]
    return predict(bundle, p["image"], p["image_mask"], p["video"], p["video_mask"], cams=False, **kw)


def _edit(bundle, change, sidecar: bool = True) -> None:
    """Rewrite bundle.json through ``change(meta)``; ``sidecar``: keep it self-consistent, as an attacker would."""
    meta = json.loads((bundle / MANIFEST).read_text())
    change(meta)
    (bundle / MANIFEST).write_text(json.dumps(meta, indent=2))
    if sidecar:
        _reseal(bundle)


def _reseal(bundle) -> None:
    (bundle / SIDECAR).write_text(f"{hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()}  {MANIFEST}\n")


def _refused(made, bundle, match: str, **kw) -> str:
    with pytest.raises(CeusError, match=match) as e:
        _predict(made, bundle, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


class Payload:
    """A pickle whose loading writes a marker file (benign stand-in for a hostile model)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _plant_pickle(bundle, rel: str, marker) -> str:
    data = pickle.dumps(Payload(marker))
    (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
    (bundle / rel).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the positive case


def _fused_row(made, bundle, monkeypatch) -> tuple[dict, pd.DataFrame]:
    """predict's result and the exact feature row it gave the fusion model."""
    seen = {}

    def spy(b, meta):
        pipe = load_fusion_model(b, meta)
        real = pipe.predict_proba

        def proba(X):
            seen["X"] = X.copy()
            return real(X)

        pipe.predict_proba = proba
        return pipe

    monkeypatch.setattr(predict_module, "load_fusion_model", spy)
    return _predict(made, bundle), seen["X"]


def test_safe_bundle_predicts_what_the_run_pipeline_does(made, bundle, monkeypatch):
    run, _, patient = made
    assert not [p for p in bundle.rglob("*") if p.suffix in (".joblib", ".pkl", ".pickle")]
    res, X = _fused_row(made, bundle, monkeypatch)
    in_memory = joblib.load(run / "fusion" / "model.joblib")  # the run's own pipeline, as `fuse` fitted it
    assert abs(res["models"]["DL_combined"]["prob"] - in_memory.predict_proba(X)[0, 1]) <= 1e-9
    safe = load_fusion_model(bundle, load_bundle(bundle))
    feats = {}
    for name in res["models"]:
        f = run / "features" / f"{name}.parquet"
        if f.is_file():
            feats[name] = pd.read_parquet(f).set_index("case_id").filter(like="f0").add_prefix(f"{name}__")
    table = pd.concat(feats.values(), axis=1, join="inner").reindex(columns=list(in_memory.feature_names_in_))
    assert np.abs(safe.predict_proba(table) - in_memory.predict_proba(table)).max() <= 1e-9
    run_prob = pd.read_csv(run / "fusion" / "predictions" / "DL_combined.csv", dtype={"case_id": str})
    assert abs(res["models"]["DL_combined"]["prob"] - run_prob.set_index("case_id").loc[patient["case_id"], "prob"]) < 1e-5


def test_pinned_id_is_what_export_prints_and_predict_checks(made, bundle, capsys, tmp_path):
    run, _, p = made
    assert exit_code(["export", str(run), "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    digest = bundle_id(tmp_path / "again")
    assert digest == hashlib.sha256((tmp_path / "again" / MANIFEST).read_bytes()).hexdigest() and digest in out
    assert (tmp_path / "again" / SIDECAR).read_text().split() == [digest, MANIFEST]
    args = ["predict", "--bundle", str(bundle), "--image", str(p["image"]), "--image-mask", str(p["image_mask"]), "--json"]
    pinned = bundle_id(bundle)
    assert exit_code(args + ["--expect-sha256", pinned.upper()]) == 0
    assert json.loads(capsys.readouterr().out)["bundle_sha256"] == pinned
    assert exit_code(args + ["--expect-sha256", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert "bundle.json" in err and "pinned" in err and "Traceback" not in err


# --------------------------------------------------------------------------- code execution


def test_replaced_fusion_model_with_updated_entry_runs_no_code(made, bundle, tmp_path):
    marker = tmp_path / "ran"
    rel = json.loads((bundle / MANIFEST).read_text())["combined"]["model"]
    digest = _plant_pickle(bundle, rel, marker)
    _edit(bundle, lambda m: m["files"].update({rel: digest}))
    _refused(made, bundle, r"model\.skops: not a skops file")
    assert not marker.exists()


def test_fusion_model_pointed_at_a_pickle_runs_no_code(made, bundle, tmp_path):
    marker = tmp_path / "ran"
    digest = _plant_pickle(bundle, "fusion/model.joblib", marker)

    def to_pickle(m, fmt):
        m["files"]["fusion/model.joblib"] = digest
        m["combined"].update(model="fusion/model.joblib", format=fmt)

    _edit(bundle, lambda m: to_pickle(m, "joblib"))
    _refused(made, bundle, r"bundle\.json: combined\.format 'joblib': only skops")
    _edit(bundle, lambda m: to_pickle(m, "skops"))
    _refused(made, bundle, r"model\.joblib: not a skops file")
    assert not marker.exists()


def test_deleted_entry_is_refused_and_runs_no_code(made, bundle, tmp_path):
    marker = tmp_path / "ran"
    rel = json.loads((bundle / MANIFEST).read_text())["combined"]["model"]
    _plant_pickle(bundle, rel, marker)
    _edit(bundle, lambda m: m["files"].pop(rel))
    _refused(made, bundle, r"model\.skops: not listed in bundle\.json")
    assert not marker.exists()


# --------------------------------------------------------------------------- silent tampering


def _set_threshold(m):
    m["models"]["image"]["threshold"] = 1.0 - m["models"]["image"]["threshold"]


def _set_margin(m):
    m["prepare"]["margin"] = m["prepare"]["margin"] + 0.4


@pytest.mark.parametrize("change", [_set_threshold, _set_margin], ids=["threshold", "prepare-margin"])
def test_edited_manifest_is_refused(made, bundle, change):
    pinned = bundle_id(bundle)
    _edit(bundle, change, sidecar=False)  # a careless edit: the sidecar catches it
    _refused(made, bundle, r"bundle\.json: changed since export")
    _reseal(bundle)  # a deliberate one: only the pinned id catches it
    load_bundle(bundle)
    _refused(made, bundle, rf"bundle\.json: sha256 [0-9a-f]{{64}} is not the pinned {pinned}", expect_sha256=pinned)


def test_deleted_sidecar_is_refused(made, bundle):
    (bundle / SIDECAR).unlink()
    _refused(made, bundle, r"bundle\.json\.sha256: missing")


# --------------------------------------------------------------------------- paths that leave the bundle


def test_model_name_leaving_the_bundle_is_refused(made, bundle, tmp_path):
    meta = json.loads((bundle / MANIFEST).read_text())
    name = meta["models"]["image"]["name"]
    outside = tmp_path / "outside" / "m"
    shutil.copytree(bundle / "models" / name, outside)  # weights an attacker placed beside the bundle

    def escape(m):
        m["models"]["image"]["name"] = "../../outside/m"
        for rel in list(m["files"]):
            if rel.startswith(f"models/{name}/"):
                m["files"][rel.replace(f"models/{name}/", "models/../../outside/m/")] = m["files"].pop(rel)

    _edit(bundle, escape)
    _refused(made, bundle, r"bundle\.json: path 'models/\.\./\.\./outside/m/.*' is not a plain path")
    _edit(bundle, lambda m: m.update(files=dict(meta["files"])))  # the name alone
    _refused(made, bundle, r"bundle\.json: models\.image\.name '\.\./\.\./outside/m' is not a plain model name")


@pytest.mark.parametrize("rel", ["../../../../etc/hostname", "/etc/hostname", "../outside.txt", "models/../../outside.txt"])
def test_files_entry_outside_the_bundle_is_refused(made, bundle, tmp_path, rel):
    (tmp_path / "outside.txt").write_text("not the bundle's")
    digest = hashlib.sha256(b"not the bundle's").hexdigest()
    _edit(bundle, lambda m: m["files"].update({rel: digest}))
    _refused(made, bundle, r"bundle\.json: path .* is not a plain path inside the bundle")


def test_symlink_in_the_bundle_is_refused(made, bundle, tmp_path):
    (tmp_path / "outside.txt").write_text("x")
    (bundle / "models" / "link.txt").symlink_to(tmp_path / "outside.txt")
    _refused(made, bundle, r"link\.txt: a symlink in the bundle")


def test_extra_unlisted_file_is_refused(made, bundle):
    (bundle / "models" / "extra.bin").write_bytes(b"\0")
    _refused(made, bundle, r"models/extra\.bin: not listed in bundle\.json")


# --------------------------------------------------------------------------- malformed manifests


def test_truncated_manifest_is_one_line(made, bundle, capsys):
    raw = (bundle / MANIFEST).read_bytes()
    (bundle / MANIFEST).write_bytes(raw[: len(raw) // 2])
    _refused(made, bundle, r"bundle\.json: changed since export")
    _reseal(bundle)
    _refused(made, bundle, r"bundle\.json: not valid JSON")
    p = made[2]
    assert exit_code(["predict", "--bundle", str(bundle), "--image", str(p["image"])]) == 2
    err = capsys.readouterr().err
    assert "bundle.json: not valid JSON" in err and "Traceback" not in err


@pytest.mark.parametrize("change, match", [
    (lambda m: m.pop("files"), r"files is missing"),
    (lambda m: m.update(files=["fusion/model.skops"]), r"files has the wrong type"),
    (lambda m: m["models"]["image"].update(threshold="0.5"), r"models\.image\.threshold has the wrong type"),
    (lambda m: m["models"]["image"].update(threshold=True), r"models\.image\.threshold has the wrong type"),
    (lambda m: m["combined"]["feature_layers"].update(x={"layer": 3, "penultimate": True}),
     r"combined\.feature_layers\.x\.layer has the wrong type"),
    (lambda m: m["models"]["image"].pop("config"), r"models\.image\.config is missing"),
    (lambda m: m["combined"].pop("model"), r"combined\.model is missing"),
    (lambda m: m["prepare"].update(margin="wide"), r"malformed bundle\.json: prepare"),
    (lambda m: m.update(bundle_version=1), r"bundle_version 1 is not 2 \(a pickled fusion model"),
], ids=["no-files", "files-list", "threshold-str", "threshold-bool", "layer-int", "no-config", "no-fusion-model", "margin-str", "version-1"])
def test_malformed_manifest_is_one_line(made, bundle, change, match):
    _edit(bundle, change)
    _refused(made, bundle, r"bundle\.json: .*" + match)


def test_not_an_object_is_one_line(made, bundle):
    (bundle / MANIFEST).write_text("[1, 2]")
    _reseal(bundle)
    _refused(made, bundle, r"bundle\.json: malformed bundle\.json: the top level is not an object")


# --------------------------------------------------------------------------- export's own folders


def test_export_never_writes_through_a_planted_symlink(made, tmp_path):
    run = made[0]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    out = tmp_path / "bundle"
    (tmp_path / ".bundle.tmp").symlink_to(victim, target_is_directory=True)  # the old fixed temp name
    export(run, out)
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"] and (victim / "keep.txt").read_text() == "mine"
    load_bundle(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.") and p.name != ".bundle.tmp"]
    link = tmp_path / "link"
    link.symlink_to(out, target_is_directory=True)
    with pytest.raises(CeusError, match=r"link is a symlink; refusing"):
        export(run, link, overwrite=True)
    export(run, out, overwrite=True)  # a real bundle is replaced
    load_bundle(out)
    with pytest.raises(CeusError, match="victim exists and is not a bundle"):  # --overwrite replaces only a bundle
        export(run, victim, overwrite=True)
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]


def test_overwrite_keeps_a_folder_that_holds_more_than_a_bundle(made, tmp_path):
    """Issue 25: any folder with a bundle.json counted as a bundle, and `export --overwrite` deleted the user's
    notes.txt beside it; now only a folder of the bundle's own listed files is replaced."""
    run = made[0]
    exp = tmp_path / "exp"
    export(run, exp)
    (exp / "notes.txt").write_text("my notes")
    with pytest.raises(CeusError, match="refusing to replace .*notes.txt: not listed"):
        export(run, exp, overwrite=True)
    assert (exp / "notes.txt").read_text() == "my notes"
    (exp / "notes.txt").unlink()
    export(run, exp, overwrite=True)  # the bundle alone is replaced
    load_bundle(exp)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "bundle.json").write_text("[]")
    (fake / "data.csv").write_text("a,b")
    with pytest.raises(CeusError, match="not a ceusfusion bundle manifest"):
        export(run, fake, overwrite=True)
    assert (fake / "data.csv").read_text() == "a,b"


def test_predict_out_never_writes_over_a_users_files(made, tmp_path):
    """Issue 25: `predict --out` replaced a user's prediction.json without a word; it now claims its files."""
    _, bundle, p = made
    out = tmp_path / "mine"
    out.mkdir()
    (out / "prediction.json").write_text("my own notes")
    args = ["predict", "--bundle", str(bundle), "--image", str(p["image"]), "--image-mask", str(p["image_mask"]),
            "--out", str(out)]
    assert exit_code(args) == 2
    assert (out / "prediction.json").read_text() == "my own notes"
    assert exit_code(args + ["--force"]) == 0  # the user asked for it
    assert json.loads((out / "prediction.json").read_text())["models"]
    assert exit_code(args) == 0  # its own files now: a rerun goes through
