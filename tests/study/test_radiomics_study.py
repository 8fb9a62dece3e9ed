"""Issue 27: a study with a `radiomics` section computes the IBSI features after prepare, fits Rad, DLR and
DLR + clinical by the fusion procedure, evaluates them beside the deep model (paired DeLong, NRI/IDI, decision
curves) and reports the comparison with the families LASSO kept; without the section nothing changes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from rich.console import Console

from ceusfusion.config import parse_config
from ceusfusion.core.errors import CeusError
from ceusfusion.demo import demo_config
from ceusfusion.study import STAGES, Study, run_study
from ceusfusion.synthetic.synth import SynthConfig, generate

pytestmark = pytest.mark.slow
RADIOMICS = {"families": ["morphology", "intensity", "glcm"], "keyframes": False, "icc_cases": 3, "perturb_px": [1]}


def config(cohort, out, radiomics=None) -> dict:
    cfg = demo_config(out, cohort, quick=True)
    cfg["train"]["modalities"] = ["image"]
    cfg["fusion"].update(clinical=["age"], classifiers=["lr"])
    cfg["explain"] = {"enabled": False}
    return {**cfg, **({"radiomics": radiomics} if radiomics is not None else {})}


@pytest.fixture(scope="module")
def study(module_tmp_factory):
    root = module_tmp_factory.mktemp("radstudy")
    generate(root / "data", SynthConfig(n=48, seed=0, size=48, fps=2.0, duration=6.0), workers=1)
    out = root / "run"
    console = Console(record=True, width=200)
    run_study(parse_config(config(root / "data" / "cohort.csv", out, RADIOMICS)), console=console, progress=False)
    return out, console.export_text()


def test_study_fits_and_evaluates_the_comparison(study):
    out, text = study
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["radiomics"]["status"] == "done" and manifest["stages"]["compare"]["status"] == "done"
    assert "[3/11] radiomics" in text and "[8/11] compare" in text
    comp = json.loads((out / "radiomics" / "comparison.json").read_text())
    assert list(comp["models"]) == ["Rad", "DLR", "DLR+clinical"] and comp["dl"] == "DL_image+clinical"
    assert comp["models"]["DLR+clinical"]["clinical"] == ["age"]
    kept = comp["models"]["Rad"]["families_kept"]
    assert set(kept) <= {"morphology", "intensity", "glcm"} and sum(kept.values()) == comp["models"]["Rad"]["n_selected"]
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    for s in ("train", "test"):
        assert {"Rad", "DLR", "DLR+clinical", "DL_image+clinical"} <= set(metrics["sets"][s]["models"])
        pairs = {(c["a"], c["b"]) for c in metrics["sets"][s]["comparisons"]}
        assert ("DL_image+clinical", "DLR") in pairs or ("DLR", "DL_image+clinical") in pairs
    reclass = pd.read_csv(out / "evaluation" / "reclassification.csv")
    assert any("DLR" in str(v) for v in reclass.to_numpy().ravel()), reclass.head().to_string()
    page = (out / "report.html").read_text()
    assert 'id="radiomics"' in page and "LASSO kept" in page and "Not IBSI-defined" in page


def test_without_a_radiomics_section_the_stages_are_the_usual_ones(tmp_path):
    cfg = parse_config(config(tmp_path / "c.csv", tmp_path / "run"))
    assert cfg.radiomics is None and Study(cfg, console=Console(), progress=False).stages() == STAGES


def test_a_bad_radiomics_setting_is_one_line(tmp_path):
    with pytest.raises(CeusError, match="--bins must be at least 2") as e:
        parse_config(config(tmp_path / "c.csv", tmp_path / "run", {"bins": 1}))
    assert "\n" not in str(e.value)
