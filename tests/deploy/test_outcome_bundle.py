"""Issue 24: a bundle speaks of its own study's outcome. A bundle from a study that named none (DDTI-like) makes
``predict`` print, and prediction.json and the serve card hold, neutral words and never "OLNM"; a bundle whose
model card records the OLNM outcome prints those words."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pandas as pd
import pytest
from cli_run import exit_code
from rich.console import Console

from ceusfusion.config import parse_config
from ceusfusion.demo import OLNM, demo_config
from ceusfusion.deploy.export import CARD, MANIFEST, SIDECAR, export, load_bundle
from ceusfusion.serve.card import card_html, model_card
from ceusfusion.study import run_study
from ceusfusion.synthetic.synth import SynthConfig, generate

pytestmark = pytest.mark.slow
STUDY_WORDS = re.compile(r"OLNM|metasta|dissection|neck", re.I)


@pytest.fixture(scope="module")
def made(module_tmp_factory):
    """(run, bundle, a test patient's files) of a tiny study whose config names no outcome (as a DDTI study's)."""
    root = module_tmp_factory.mktemp("outcome")
    data = root / "data"
    generate(data, SynthConfig(n=48, seed=0, size=48, fps=2.0, duration=12.0), workers=2)
    cfg = {k: v for k, v in demo_config(root / "run", data / "cohort.csv", quick=True).items() if k != "outcome"}
    run_study(parse_config(cfg), console=Console(record=True, width=160), progress=False)
    bundle = export(root / "run", root / "bundle")
    row = pd.read_csv(data / "cohort.csv").query("split == 'test'").iloc[0]
    patient = {k: data / row[k] for k in ("image", "image_mask", "video", "video_mask")}
    return root / "run", bundle, patient


def _argv(bundle, patient, *extra) -> list[str]:
    return ["predict", "--bundle", str(bundle), *extra,
            *[a for k, v in patient.items() for a in (f"--{k.replace('_', '-')}", str(v))]]


def _with_card_outcome(bundle, outcome: dict) -> None:
    """What export writes for a study that names its outcome: card.json's outcome, rehashed and resealed."""
    card = json.loads((bundle / CARD).read_text())
    card["outcome"] = {**outcome, "given": True}
    (bundle / CARD).write_text(json.dumps(card))
    meta = json.loads((bundle / MANIFEST).read_text())
    meta["files"][CARD] = hashlib.sha256((bundle / CARD).read_bytes()).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(meta, indent=2))
    (bundle / SIDECAR).write_text(f"{hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()}  {MANIFEST}\n")


def test_a_bundle_of_a_study_without_outcome_prints_neutral_words(made, tmp_path, capsys):
    run, bundle, patient = made
    assert json.loads((run / "evaluation" / "metrics.json").read_text())["outcome"]["given"] is False
    capsys.readouterr()
    assert exit_code(_argv(bundle, patient, "--out", str(tmp_path / "p"))) == 0
    out = capsys.readouterr().out
    assert not STUDY_WORDS.search(out), out
    assert re.search(r"\b(positive|negative)\b", out) and "prediction of the outcome" in out
    res = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert res["outcome"]["given"] is False and res["outcome"]["positive"] == "positive"
    for m in res["models"].values():
        if m.get("available"):
            assert m["class_label"] == ("positive" if m["class"] else "negative")
    meta = load_bundle(bundle)
    card = model_card(bundle, meta)
    assert card["outcome"]["given"] is False
    html = card_html(card)
    assert not STUDY_WORDS.search(html) and "Outcome: not named" in html


def test_a_bundle_whose_card_records_olnm_prints_olnm(made, tmp_path, capsys):
    _, bundle, patient = made
    bundle = shutil.copytree(bundle, tmp_path / "olnm")
    _with_card_outcome(bundle, OLNM)
    capsys.readouterr()
    assert exit_code(_argv(bundle, patient)) == 0
    out = capsys.readouterr().out
    assert "prediction of occult lymph node metastasis" in out and re.search(r"\bOLNM\b", out)
    assert exit_code(_argv(bundle, patient, "--json")) == 0
    res = json.loads(capsys.readouterr().out)
    labels = {m["class_label"] for m in res["models"].values() if m.get("available")}
    assert labels and labels <= {"OLNM", "no OLNM"}
    card = model_card(bundle, load_bundle(bundle))
    assert card["outcome"]["short"] == "OLNM"
    assert "Predicts <b>occult lymph node metastasis</b>" in card_html(card) and "<th>OLNM</th>" in card_html(card)


def test_export_carries_the_runs_outcome_into_the_card(made, tmp_path):
    run, _, _ = made
    metrics = run / "evaluation" / "metrics.json"
    m = json.loads(metrics.read_text())
    m["outcome"] = {**OLNM, "given": True}
    copy = shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("data"))
    (copy / "evaluation" / "metrics.json").write_text(json.dumps(m))
    bundle = export(copy, tmp_path / "bundle")
    assert model_card(bundle, load_bundle(bundle))["outcome"]["positive"] == "OLNM"
