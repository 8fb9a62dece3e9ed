"""Issue 27, done when: ``predict`` and ``serve`` score a new patient with the radiomics models (Rad, DLR,
DLR + clinical) of a study with a ``radiomics`` section. The bundle carries the radiomics settings and the
fitted pipelines as skops (no pickle), verified like every other file; a patient's radiomics are computed by
the stage's own code, so a case of the run gets the run's features and probabilities; a missing covariate,
mask or a hostile ROI is one line and the other models (and cases) go on."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
import uuid

import numpy as np
import pandas as pd
import pytest
from cli_run import exit_code
from PIL import Image
from rich.console import Console
from skops import io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from ceusfusion.config import parse_config
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file
from ceusfusion.demo import demo_config
from ceusfusion.deploy.batch import predict_cohort
from ceusfusion.deploy.export import MANIFEST, SIDECAR, export, load_bundle, load_card
from ceusfusion.deploy.fused import patient_extras
from ceusfusion.deploy.predict import LoadedBundle, predict, prepare_patient
from ceusfusion.fusion.features import read_features
from ceusfusion.serve import create_app, running_server
from ceusfusion.study import run_study
from ceusfusion.synthetic.synth import SynthConfig, generate

pytestmark = pytest.mark.slow
RADIOMICS = {"families": ["morphology", "intensity", "glcm"], "keyframes": False, "icc_cases": 3, "perturb_px": [1]}
COMPARED = ("Rad", "DLR", "DLR+clinical")
FUSED = (*COMPARED, "DL_image+clinical")


@pytest.fixture(scope="module")
def made(module_tmp_factory):
    """(run, bundle, the cohort with absolute paths): a tiny image-only study with a radiomics section (Rad, DLR,
    DLR + clinical on age; DL_image+clinical the fused model), exported once (about a minute)."""
    root = module_tmp_factory.mktemp("radbundle")
    generate(root / "data", SynthConfig(n=48, seed=0, size=48, fps=2.0, duration=6.0), workers=1)
    cfg = demo_config(root / "run", root / "data" / "cohort.csv", quick=True)
    cfg["train"]["modalities"] = ["image"]
    cfg["fusion"].update(clinical=["age"], classifiers=["lr"])
    cfg["explain"] = {"enabled": False}
    run_study(parse_config({**cfg, "radiomics": RADIOMICS}), console=Console(record=True), progress=False)
    bundle = export(root / "run", root / "bundle")
    co = pd.read_csv(root / "data" / "cohort.csv", dtype=str)
    for c in ("image", "image_mask", "video", "video_mask"):
        co[c] = [str(root / "data" / v) for v in co[c]]
    return root / "run", bundle, co.set_index("case_id")


def _case(made, split: str, k: int = 0):
    co = made[2]
    return co[co["split"] == split].iloc[k]


def _run_prob(run, name: str, case_id: str) -> float:
    df = pd.read_csv(run / "predictions" / f"{name}.csv", dtype={"case_id": str})
    return float(df.set_index("case_id").loc[case_id, "prob"])


def test_the_bundle_carries_the_settings_and_the_models_as_skops(made):
    run, bundle, _ = made
    meta = load_bundle(bundle)
    block = meta["radiomics"]
    assert [m["name"] for m in block["models"]] == list(COMPARED)
    assert {m["name"]: m["clinical"] for m in block["models"]}["DLR+clinical"] == ["age"]
    listed = [block["settings"], *(m["model"] for m in block["models"])]
    assert all(meta["files"][rel] == sha256_file(bundle / rel) for rel in listed)
    assert not [p for p in bundle.rglob("*") if p.suffix in (".joblib", ".pkl", ".pickle")]
    settings = json.loads((bundle / block["settings"]).read_text())
    df, fmeta = read_features(run / "features" / "radiomics.parquet")
    assert settings["settings"] == fmeta["radiomics"]["settings"] and settings["settings"]["bins"] == 32
    assert settings["features"] == [c for c in df.columns if c not in ("case_id", "set", "y", "group")]
    card = load_card(bundle, meta)
    assert card["radiomics"]["settings"]["families"] == RADIOMICS["families"]
    assert set(COMPARED) <= set(card["models"]) and card["models"]["Rad"]["test"]["auc"] is not None


def test_a_test_case_gets_the_runs_probabilities(made):
    run, bundle, _ = made
    case = _case(made, "test")
    res = predict(bundle, case["image"], case["image_mask"], cams=False, clinical={"age": case["age"]})
    for name in FUSED:
        m = res["models"][name]
        assert m["available"], (name, m)
        assert abs(m["prob"] - _run_prob(run, name, case.name)) <= 1e-5, name  # float32 deep features
        assert m["class"] == int(m["prob"] >= m["threshold"]) and m["class_label"]
    assert res["models"]["Rad"]["prob"] == pytest.approx(_run_prob(run, "Rad", case.name), abs=1e-12)  # no deep input


def test_a_training_case_gets_the_stages_features(made):
    run, bundle, _ = made
    case = _case(made, "train", 3)
    lb = LoadedBundle(bundle).load_all()
    entries: dict = {}
    prepare_patient(lb.meta, case["image"], case["image_mask"], entries=entries)
    got = patient_extras(lb.radiomics, dict(case), entries).radiomics
    df, _ = read_features(run / "features" / "radiomics.parquet")
    want = df.set_index("case_id").loc[case.name, list(lb.radiomics.features)].to_numpy(float)
    have = np.array([got[f"radiomics__{f}"] for f in lb.radiomics.features])
    np.testing.assert_allclose(have, want, rtol=1e-9, atol=1e-12)
    # and the bundle's Rad scores that row as the run's refitted model does (training rows are out-of-fold in the run)
    pipe = lb.pipeline(next(f for f in lb.fused if f.name == "Rad"))
    X = pd.DataFrame([want], columns=[f"radiomics__{f}" for f in lb.radiomics.features])
    res = predict(bundle, case["image"], case["image_mask"], cams=False)
    assert res["models"]["Rad"]["prob"] == pytest.approx(float(pipe.predict_proba(X)[0, 1]), abs=1e-12)


def test_a_missing_covariate_or_mask_is_one_line_and_the_others_are_scored(made, capsys):
    _, bundle, _ = made
    case = _case(made, "test")
    res = predict(bundle, case["image"], case["image_mask"], cams=False)
    for name in ("DLR+clinical", "DL_image+clinical"):
        assert not res["models"][name]["available"] and "clinical covariate(s) age" in res["models"][name]["reason"]
    assert res["models"]["Rad"]["available"] and res["models"]["DLR"]["available"]
    no_mask = predict(bundle, case["image"], cams=False, clinical={"age": case["age"]})["models"]
    assert no_mask["DL_image_resnet18"]["available"] and no_mask["DL_image+clinical"]["available"]
    for name in COMPARED:  # the study's features include 2-D shape, which a whole frame has not
        assert not no_mask[name]["available"] and "shape features" in no_mask[name]["reason"], no_mask[name]
    bad = predict(bundle, case["image"], case["image_mask"], cams=False, clinical={"age": "old"})["models"]
    assert bad["DLR+clinical"]["reason"] == "clinical covariate age: 'old' is not a number"
    code = exit_code(["predict", "--bundle", str(bundle), "--image", case["image"], "--image-mask", case["image_mask"],
                      "--clinical", f"age={case['age']}", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and all(out["models"][n]["available"] for n in FUSED)
    assert exit_code(["predict", "--bundle", str(bundle), "--image", case["image"], "--clinical", "age"]) != 0
    assert "give NAME=VALUE" in capsys.readouterr().err


def _reseal(bundle, rel: str) -> None:
    """Update the manifest's hash of ``rel`` and the sidecar, as someone rewriting the bundle would."""
    meta = json.loads((bundle / MANIFEST).read_text())
    meta["files"][rel] = sha256_file(bundle / rel)
    (bundle / MANIFEST).write_text(json.dumps(meta))
    (bundle / SIDECAR).write_text(f"{sha256_file(bundle / MANIFEST)}  {MANIFEST}\n")


def test_a_changed_settings_file_or_a_hostile_model_is_refused(made, tmp_path):
    _, bundle, _ = made
    copy = shutil.copytree(bundle, tmp_path / "b")
    path = copy / "radiomics" / "settings.json"
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "settings": {**rec["settings"], "bins": 16}}))
    with pytest.raises(CeusError, match=r"settings\.json: missing or changed since export") as e:
        load_bundle(copy)
    assert "\n" not in str(e.value)
    copy = shutil.copytree(bundle, tmp_path / "c")
    marker = tmp_path / "ran"
    (copy / "radiomics" / "models" / "Rad.skops").write_bytes(
        sio.dumps(Pipeline([("x", FunctionTransformer(func=os.system, kw_args={"command": f"touch {marker}"}))])))
    _reseal(copy, "radiomics/models/Rad.skops")
    with pytest.raises(CeusError, match=r"Rad\.skops: untrusted type") as e:
        LoadedBundle(copy).load_all()
    assert "\n" not in str(e.value) and not marker.exists()


def _post(url: str, fields: dict) -> dict:
    """A multipart POST as the page sends it: files (paths) and text fields."""
    b = uuid.uuid4().hex
    parts = [(f'name="{k}"; filename="{os.path.basename(v)}"', open(v, "rb").read()) if k not in ("clinical", "box")
             else (f'name="{k}"', v.encode()) for k, v in fields.items()]
    raw = b"".join(f"--{b}\r\nContent-Disposition: form-data; {h}\r\n\r\n".encode() + d + b"\r\n" for h, d in parts)
    req = urllib.request.Request(url, data=raw + f"--{b}--\r\n".encode(),
                                 headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_serve_answers_with_the_radiomics_models(made):
    _, bundle, _ = made
    case = _case(made, "test", 1)
    want = predict(bundle, case["image"], case["image_mask"], cams=False, clinical={"age": case["age"]})["models"]
    with running_server(create_app(bundle)) as url:
        card = json.loads(urllib.request.urlopen(url + "/api/model", timeout=60).read())
        res = _post(url + "/api/predict", {"image": case["image"], "image_mask": case["image_mask"],
                                           "clinical": json.dumps({"age": case["age"]})})
        boxed = _post(url + "/api/predict", {"image": case["image"], "box": json.dumps({"image": [4, 4, 30, 30]})})
    assert card["covariates"] == ["age"] and card["radiomics"]["n_features"] > 0
    assert {m["name"] for m in card["models"] if m["modality"] == "radiomics"} == set(COMPARED)
    for name in FUSED:
        assert res["models"][name]["prob"] == pytest.approx(want[name]["prob"], abs=1e-9), name
    # a box drawn on the page is a box, not an outline: no shape features, so the models reading them say so
    assert boxed["models"]["DL_image_resnet18"]["available"] and "covariate(s) age" in boxed["models"]["DL_image+clinical"]["reason"]
    for name in COMPARED:
        assert boxed["models"][name]["reason"].startswith("needs shape features of the still, which need a drawn nodule mask")


def test_cohort_goes_on_past_a_hostile_roi(made, tmp_path):
    run, bundle, co = made
    test = co[co["split"] == "test"].iloc[:3].reset_index()
    shape = np.asarray(Image.open(test.loc[0, "image"])).shape[:2]
    one = np.zeros(shape, np.uint8)
    one[20, 20] = 255  # one pixel: a box for the network, too few pixels for any texture
    Image.fromarray(one).save(tmp_path / "one.png")
    Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / "empty.png")
    test.loc[0, "image_mask"], test.loc[1, "image_mask"] = str(tmp_path / "one.png"), str(tmp_path / "empty.png")
    test.drop(columns=["split"]).to_csv(tmp_path / "cohort.csv", index=False)
    lines: list[tuple] = []
    res = predict_cohort(bundle, tmp_path / "cohort.csv", tmp_path / "out", on_failure=lambda *a: lines.append(a))
    ids = list(test["case_id"])
    assert [c for c, _, _ in lines] == ids[:2] and all("\n" not in p for _, _, p in lines)
    assert (res.summary["n_scored"], res.summary["n_failed"], res.summary["n_problems"]) == (2, 1, 2)
    assert "Rad, DLR, DLR+clinical not scored: radiomics: the ROI holds 1 pixel(s)" in lines[0][2]
    for name in COMPARED:
        df = pd.read_csv(tmp_path / "out" / "predictions" / f"{name}.csv", dtype={"case_id": str})
        ext = df[df["set"] == "external"].set_index("case_id")
        assert list(ext.index) == [ids[2]]
        assert abs(ext.loc[ids[2], "prob"] - _run_prob(run, name, ids[2])) <= 1e-5
    dl = pd.read_csv(tmp_path / "out" / "predictions" / "DL_image_resnet18.csv", dtype={"case_id": str})
    assert list(dl.loc[dl["set"] == "external", "case_id"]) == [ids[0], ids[2]]  # the one-pixel mask still crops
