"""Issue 24: a study of one modality has nothing to fuse its model with. No "DL_combined" that refits the image
model's own output (presented as a fusion: DeLong difference 0.000, p 1.000); the stages say why they were
skipped, in the manifest and on the console. With clinical covariates the fused model is named for what it is."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from ceusfusion.config import parse_config
from ceusfusion.demo import demo_config
from ceusfusion.study import run_study
from ceusfusion.synthetic.synth import SynthConfig, generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort(module_tmp_factory):
    data = module_tmp_factory.mktemp("one") / "data"
    generate(data, SynthConfig(n=48, seed=0, size=48, fps=2.0, duration=12.0), workers=2)
    return data / "cohort.csv"


def image_only(cohort, out, **fusion) -> dict:
    cfg = demo_config(out, cohort, quick=True)
    cfg["train"]["modalities"] = ["image"]
    cfg["fusion"].update(fusion)
    cfg["explain"] = {"enabled": False}
    return cfg


def test_one_modality_skips_fusion_and_says_why(cohort, tmp_path):
    out = tmp_path / "run"
    console = Console(record=True, width=200)
    run_study(parse_config(image_only(cohort, out)), console=console, progress=False)
    text = console.export_text()
    manifest = json.loads((out / "manifest.json").read_text())
    for stage in ("features", "fuse"):
        rec = manifest["stages"][stage]
        assert rec["status"] == "skipped" and "one modality (image)" in rec["reason"], rec
        assert f"{stage}: skipped (one modality (image)" in text
    assert not (out / "predictions" / "DL_combined.csv").exists() and not (out / "fusion").exists()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert set(metrics["sets"]["test"]["models"]) == {"DL_image_resnet18"}
    assert (out / "report.html").is_file()
    # rerun: unchanged stages stay skipped with their reason, nothing redone
    console = Console(record=True, width=200)
    run_study(parse_config(image_only(cohort, out)), console=console, progress=False)
    again = console.export_text()
    assert "fuse: skipped (one modality" in again and "evaluate: unchanged, skipped" in again


def test_one_modality_with_clinical_inputs_is_named_for_what_it_is(cohort, tmp_path):
    out = tmp_path / "run"
    cfg = image_only(cohort, out, clinical=["age"])
    run_study(parse_config(cfg), console=Console(record=True, width=200), progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["fuse"]["model"] == "DL_image+clinical"
    assert "fused with the clinical inputs only" in manifest["stages"]["fuse"]["why"]
    assert (out / "predictions" / "DL_image+clinical.csv").is_file() and not (out / "predictions" / "DL_combined.csv").exists()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert set(metrics["sets"]["test"]["models"]) == {"DL_image_resnet18", "DL_image+clinical"}
    assert json.loads((out / "fusion" / "fusion.json").read_text())["name"] == "DL_image+clinical"
