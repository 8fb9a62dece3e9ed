"""The study command end to end on a tiny synthetic cohort: stages, resume, config errors, report."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from paths import ROOT
from rich.console import Console

from ceusfusion.config import load_config, parse_config
from ceusfusion.core.errors import CeusError
from ceusfusion.demo import run_demo
from ceusfusion.study import STAGES, run_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(module_tmp_factory):
    out = module_tmp_factory.mktemp("study") / "run"
    console = Console(record=True, width=160)
    report = run_demo(out, console, n=48, quick=True, progress=False)
    return out, report, console.export_text()


def test_tiny_study_writes_the_run_directory(tiny_run):
    out, report, text = tiny_run
    assert report == out / "report.html" and report.stat().st_size > 10_000
    for rel in ("cohort.csv", "prepared/index.csv", "selection.json", "predictions/DL_image_resnet18.csv",
                "predictions/DL_video_resnet18.csv", "predictions/DL_combined.csv", "features", "evaluation/metrics.json",
                "evaluation/table2.csv", "evaluation/table1.csv", "manifest.json"):
        assert (out / rel).exists(), rel
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert set(metrics["sets"]["test"]["models"]) == {"DL_image_resnet18", "DL_video_resnet18", "DL_combined"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(manifest["stages"][s]["status"] == "done" for s in STAGES)
    assert manifest["inputs"]["cohort"]["sha256"] and manifest["environment"]["torch"]
    checks = manifest["safeguards"]
    measured = "test set scored on the out-of-fold scale (measured)"  # one epoch of a tiny model: either verdict
    assert all(c["ok"] in (True, None) and c["reason"] for k, c in checks.items() if k != measured), checks
    for held in ("out-of-fold scores not chosen on the cases they score", "every fusion CV grouped by patient (outer and inner)",
                 "training folds grouped by patient"):
        assert checks[held]["ok"] is True, (held, checks[held])
    assert "test/out-of-fold logit SD" in checks["test set scored on the out-of-fold scale (measured)"]["reason"]
    html = report.read_text()
    assert "Table 2" in html and "data:image/png;base64," in html and "DL_combined" in html
    assert "Table 2 (synthetic cohort)" in text
    # the clinical statistics: in metrics.json and in the report, with the TRIPOD+AI checklist last
    test = metrics["sets"]["test"]
    assert test["reclassification"] and test["interventions"]["models"]["DL_combined"] and "center" in test["subgroups"]
    assert metrics["sample_size"]["parameters"] == json.loads((out / "fusion" / "fusion.json").read_text())["lasso"]["n_features_in"]
    iv = metrics["internal_validation"]  # 48 patients: too few for the refits to keep the inner folds, so skipped with why
    assert iv.get("indexes") or "inner folds" in iv["skipped"]
    for section in ("Internal validation of DL_combined", "Reclassification (NRI, IDI)", "dissections avoided per 100",
                    "Performance by centre and subgroup", "Nomogram", "Sample size (Riley et al.)", "TRIPOD+AI checklist",
                    "the authors must supply this"):
        assert section in html, section
    assert html.index("TRIPOD+AI checklist") > html.index("Safeguards")
    # issue 24: the demo's config names the OLNM outcome and keeps the reference study's thresholds
    assert metrics["outcome"]["short"] == "OLNM" and metrics["outcome"]["given"] is True
    assert metrics["clinical_thresholds"]["thresholds"] == [0.1, 0.15, 0.2, 0.25, 0.3]
    assert metrics["clinical_thresholds"]["thresholds_source"] == metrics["clinical_thresholds"]["nri_cuts_source"] == "given"
    for words in ("Clinical utility: dissections avoided and metastases missed", "metastases missed per 100",
                  "Outcome: occult lymph node metastasis", "OLNM (label 1)"):
        assert words in html, words
    header = (out / "evaluation" / "table1.csv").read_text().splitlines()[0]
    assert "Training set no OLNM (n=" in header and "Training set OLNM (n=" in header


def test_rerun_skips_unchanged_stages_and_force_redoes(tiny_run):
    out, _, _ = tiny_run
    cfg = json.loads((out / "manifest.json").read_text())["config"]
    before = (out / "evaluation" / "metrics.json").stat().st_mtime_ns
    console = Console(record=True, width=160)
    run_study(parse_config(cfg), console=console, progress=False)
    text = console.export_text()
    assert all(f"{s}: unchanged, skipped" in text for s in STAGES)
    assert (out / "evaluation" / "metrics.json").stat().st_mtime_ns == before
    console = Console(record=True, width=160)
    run_study(parse_config(cfg), force=["evaluate"], console=console, progress=False)
    text = console.export_text()
    assert "train: unchanged, skipped" in text and "evaluate: unchanged" not in text and "report: unchanged" not in text
    assert (out / "evaluation" / "metrics.json").stat().st_mtime_ns != before


def test_bad_config_names_the_key(tmp_path):
    (tmp_path / "s.yaml").write_text("cohort: c.csv\nout: run\ntrain:\n  archs: [resnet18, vgg99]\n  epoch: 3\n")
    with pytest.raises(CeusError) as e:
        load_config(tmp_path / "s.yaml")
    msg = str(e.value)
    assert "train.archs" in msg and "vgg99" in msg and "train.epoch: unknown key" in msg
    with pytest.raises(CeusError, match="unknown stage 'fit'"):
        run_study(parse_config({"cohort": str(tmp_path / "s.yaml"), "out": str(tmp_path / "r")}), force=["fit"])


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    _, report, _ = tiny_run
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000", f"--screenshot={shot}", report.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    dom = subprocess.run(cmd[:-2] + ["--dump-dom", report.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert "Table 2" in dom.stdout and "Safeguards" in dom.stdout
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.std() > 5  # not a blank page


def test_export_and_predict_new_patient(tiny_run, tmp_path):
    import pandas as pd

    from ceusfusion.cli import main
    from ceusfusion.deploy.export import export
    from ceusfusion.deploy.predict import predict

    out, _, _ = tiny_run
    bundle = export(out, tmp_path / "bundle")
    meta = json.loads((bundle / "bundle.json").read_text())
    assert set(meta["models"]) == {"image", "video"} and meta["combined"]["name"] == "DL_combined"
    row = pd.read_csv(out / "data" / "cohort.csv").query("split == 'test'").iloc[0]
    d = out / "data"
    res = predict(bundle, d / row["image"], d / row["image_mask"], d / row["video"], d / row["video_mask"], out=tmp_path / "pred")
    # the bundle reproduces the run's own test probability for this patient
    for name in ("DL_image_resnet18", "DL_video_resnet18", "DL_combined"):
        m = res["models"][name]
        run_prob = pd.read_csv(out / "predictions" / f"{name}.csv", dtype={"case_id": str}).set_index("case_id").loc[str(row["case_id"]), "prob"]
        assert abs(m["prob"] - run_prob) < 1e-5, name
        assert m["class"] == int(m["prob"] >= m["threshold"])
    assert (tmp_path / "pred" / "gradcam_DL_video_resnet18.png").is_file()
    assert res["seconds"] > 0  # recorded (its speed is bench/predict_latency.py's, never a timed test)
    assert not (bundle / "models" / "DL_image_resnet18" / "fold0").exists()  # new patients: the refitted model
    (bundle / "models" / "DL_image_resnet18" / "full" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(SystemExit) as e:
        main(["predict", "--bundle", str(bundle), "--image", str(d / row["image"])])
    assert e.value.code == 2


def test_example_config_is_valid():

    cfg = load_config(ROOT / "examples" / "study.yaml")
    assert cfg.train.folds == 5 and len(cfg.train.archs) == 5


def test_score_level_fusion_and_bundle(tiny_run, tmp_path):
    """fusion.inputs = scores: each model's out-of-fold logit is fused; the bundle reproduces it."""
    import pandas as pd

    from ceusfusion.deploy.export import export
    from ceusfusion.deploy.predict import predict

    out, _, _ = tiny_run
    cfg = json.loads((out / "manifest.json").read_text())["config"]
    cfg["fusion"]["inputs"] = "scores"
    cfg["explain"]["enabled"] = False
    run_study(parse_config(cfg), console=Console(record=True), progress=False)
    fusion = json.loads((out / "fusion" / "fusion.json").read_text())
    assert fusion["columns"]["deep"] == 2
    bundle = export(out, tmp_path / "b")
    row = pd.read_csv(out / "data" / "cohort.csv").query("split == 'test'").iloc[1]
    d = out / "data"
    res = predict(bundle, d / row["image"], d / row["image_mask"], d / row["video"], d / row["video_mask"], cams=False)
    run_prob = pd.read_csv(out / "predictions" / "DL_combined.csv", dtype={"case_id": str}).set_index("case_id").loc[str(row["case_id"]), "prob"]
    assert abs(res["models"]["DL_combined"]["prob"] - run_prob) < 1e-4
