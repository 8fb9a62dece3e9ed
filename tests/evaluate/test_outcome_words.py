"""Issue 24: the study it was built from is no longer hard-coded.

- The outcome is study configuration (``core.outcome.Outcome``): a cohort that names none (DDTI-like) gets
  neutral words in metrics.json, the report (every heading and sentence, the cohort counts, Table 1, the
  TRIPOD+AI wording), the nomogram's title and Figure 5, and never "OLNM", "metastasis" or "neck dissection";
  the demo's config names OLNM and gets those words.
- The clinical thresholds (interventions avoided, the categorical NRI's cut points) come from the training
  prevalence unless given, recorded with their source; a statistic that cannot say anything at them says so
  (metrics.json and the report).
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from cli_run import exit_code

from ceusfusion.config import parse_config
from ceusfusion.core.errors import CeusError
from ceusfusion.core.outcome import Outcome, read_outcome
from ceusfusion.demo import OLNM, REFERENCE_EVALUATE, demo_config
from ceusfusion.evaluate import evaluate as evaluate_module
from ceusfusion.evaluate.clinical import ClinicalOptions
from ceusfusion.evaluate.evaluate import evaluate
from ceusfusion.figures import explain as explain_figures
from ceusfusion.report.html import build_report
from ceusfusion.report.tripod import checklist
from ceusfusion.stats import thresholds_around
from ceusfusion.study import Study

STUDY_WORDS = re.compile(r"OLNM|metasta|dissection|neck|lymph", re.I)


def _predictions(tmp_path, prevalence=0.3, n=160, seed=0, shift=-1.0):
    """Three models' predictions files (train and test rows) and a cohort manifest with a centre and covariates."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    sets = np.where(np.arange(n) < 110, "train", "test")
    latent = rng.normal(y, 1.0)
    ids = [f"p{i:03d}" for i in range(n)]
    paths = []
    for k, name in enumerate(("DL_image_resnet18", "DL_video_resnet18", "DL_combined")):
        prob = 1 / (1 + np.exp(-(latent * (0.6 + 0.3 * k) + rng.normal(0, 1.0, n) + shift)))
        path = tmp_path / "predictions" / f"{name}.csv"
        path.parent.mkdir(exist_ok=True)
        pd.DataFrame({"case_id": ids, "set": sets, "fold": -1, "y": y, "prob": prob}).to_csv(path, index=False)
        paths.append(path)
    cohort = tmp_path / "cohort.csv"
    pd.DataFrame({"case_id": ids, "label": y, "split": sets, "center": np.where(rng.random(n) < 0.6, "c1", "c2"),
                  "sex": rng.choice(["F", "M"], n), "age": rng.integers(20, 80, n)}).to_csv(cohort, index=False)
    return paths, cohort


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"data:image/[^\"]+", "", html)))


@pytest.fixture
def titles(monkeypatch):
    """The titles the nomogram figure was drawn with."""
    seen = []
    real = evaluate_module.nomogram_figure
    monkeypatch.setattr(evaluate_module, "nomogram_figure", lambda nm, title: seen.append(title) or real(nm, title))
    return seen


# --------------------------------------------------------------------------- the outcome's words


def test_a_study_that_names_no_outcome_reads_in_neutral_words(tmp_path, titles):
    paths, cohort = _predictions(tmp_path)
    m = evaluate(paths, tmp_path / "evaluation", cohort=cohort, clinical=ClinicalOptions(candidate_predictors=3))
    assert m["outcome"] == {**Outcome().model_dump(), "given": False}
    inter = m["sets"]["test"]["interventions"]
    assert (inter["intervention"], inter["avoided"], inter["missed"]) == ("treatment", "treatments avoided", "positives missed")
    assert titles == ["Nomogram (risk of outcome)"]
    html = build_report(tmp_path).read_text()
    assert not STUDY_WORDS.search(_text(html)), STUDY_WORDS.findall(_text(html))
    text = _text(html)
    for words in ("Clinical utility: treatments avoided and positives missed", "treatments per 100",
                  "net treatments avoided per 100", "Compared with treatment for every patient", "n positive",
                  "positive (label 1)", "negative (label 0)", "Outcome: not named in the study config",
                  "the clinical context (the outcome, the intervention a positive prediction leads to)",
                  "the definition of the outcome (the reference standard"):
        assert words in text, words
    assert "Nomogram" in text


def test_the_demo_outcome_reads_as_the_olnm_study(tmp_path, titles):
    paths, cohort = _predictions(tmp_path)
    opts = ClinicalOptions(candidate_predictors=3, outcome=Outcome(**OLNM))
    m = evaluate(paths, tmp_path / "evaluation", cohort=cohort, clinical=opts)
    assert m["outcome"]["short"] == "OLNM" and m["outcome"]["given"] is True
    assert titles == ["Nomogram (risk of OLNM)"]
    text = _text(build_report(tmp_path).read_text())
    for words in ("Clinical utility: dissections avoided and metastases missed", "dissections per 100",
                  "dissections avoided per 100", "metastases missed per 100", "net dissections avoided per 100",
                  "Compared with prophylactic central neck dissection for every patient", "n OLNM", "OLNM (label 1)",
                  "no OLNM (label 0)", "Outcome: occult lymph node metastasis (label 1: OLNM; label 0: no OLNM)",
                  "the clinical context (occult lymph node metastasis, prophylactic central neck dissection)"):
        assert words in text, words
    items = {r["item"]: r for r in checklist(tmp_path)}
    assert "occult lymph node metastasis" in items["8a"]["authors"]


def test_the_outcome_is_study_configuration(tmp_path):
    base = {"cohort": str(tmp_path / "c.csv"), "out": str(tmp_path / "run")}
    assert parse_config(base).outcome == Outcome() and not parse_config(base).outcome.given
    cfg = parse_config({**base, "outcome": {"name": "malignancy", "positive": "malignant", "negative": "benign"}})
    assert (cfg.outcome.short, cfg.outcome.label(1), cfg.outcome.class_names) == ("malignancy", "malignant", ("benign", "malignant"))
    with pytest.raises(CeusError, match="outcome.colour: unknown key"):
        parse_config({**base, "outcome": {"colour": "red"}})
    with pytest.raises(CeusError, match="evaluate.thresholds"):
        parse_config({**base, "evaluate": {"thresholds": [0.3, 0.2]}})
    demo = parse_config(demo_config(tmp_path / "run", tmp_path / "c.csv", quick=True))
    assert demo.outcome == Outcome(**OLNM) and demo.evaluate.thresholds == REFERENCE_EVALUATE["thresholds"]
    assert demo.evaluate.nri_cuts == [0.1, 0.2, 0.3]  # the demo's numbers stay the reference study's
    (tmp_path / "study.yaml").write_text("cohort: c.csv\nout: run\noutcome: {short: PE, positive: embolism}\n")
    assert read_outcome(tmp_path / "study.yaml").positive == "embolism"
    with pytest.raises(CeusError, match="positive"):
        (tmp_path / "bad.yaml").write_text("positive: ''\n")
        read_outcome(tmp_path / "bad.yaml")


def test_table1_names_the_classes_in_the_studys_words(tmp_path):
    _, cohort = _predictions(tmp_path)
    run = tmp_path / "run"
    (run / "prepared").mkdir(parents=True)
    df = pd.read_csv(cohort, dtype={"case_id": str})
    df.to_csv(run / "cohort.csv", index=False)
    df[["case_id"]].to_csv(run / "prepared" / "index.csv", index=False)
    for outcome, want, never in (({}, ("negative", "positive"), "OLNM"), ({"outcome": OLNM}, ("no OLNM", "OLNM"), "positive")):
        Study(parse_config({"cohort": str(cohort), "out": str(run), **outcome}))._table1()
        header = (run / "evaluation" / "table1.csv").read_text().splitlines()[0]
        assert f"Training set {want[0]} (n=" in header and f"Test set {want[1]} (n=" in header, header
        assert never not in header


def test_figure5_rows_name_the_classes_in_the_outcomes_words(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(explain_figures, "savefig", lambda fig, path, **kw: drawn.append(fig))

    def case(label, prob, frames):
        img = np.zeros((frames, 8, 8, 3), np.float32)
        return SimpleNamespace(case_id=f"c{label}{frames}", label=label, prob=prob, image=img, attention=None, share=None,
                               region=None, extra={"cam_class": 1}, maps_per_frame=lambda: np.ones((frames, 8, 8)))

    ires, vres = [case(0, 0.2, 1), case(1, 0.8, 1)], [case(0, 0.3, 5), case(1, 0.7, 5)]
    for outcome, want in ((None, ("negative, five-frame CEUS", "evidence for positive")),
                          (Outcome(**OLNM), ("no OLNM, five-frame CEUS", "evidence for OLNM"))):
        drawn.clear()
        explain_figures.figure5(ires, vres, tmp_path / "f5", "img", "vid", outcome=outcome)
        texts = " | ".join(t.get_text() for t in drawn[0].findobj(lambda a: hasattr(a, "get_text")))
        assert all(w in texts for w in want), texts
        if outcome is None:
            assert "OLNM" not in texts


# --------------------------------------------------------------------------- thresholds from the prevalence


def test_thresholds_default_to_a_range_around_the_training_prevalence(tmp_path):
    paths, cohort = _predictions(tmp_path, prevalence=0.83, shift=1.5)
    m = evaluate(paths, tmp_path / "ev", cohort=cohort, figures=False)
    th = m["clinical_thresholds"]
    prev = pd.read_csv(paths[0]).query("set == 'train'")["y"].mean()
    assert th["prevalence"] == pytest.approx(prev) and th["thresholds_source"] == f"from training prevalence {prev:.3f}"
    assert th["thresholds"] == list(thresholds_around(prev)) and min(th["thresholds"]) > 0.6
    assert th["nri_cuts"] == list(thresholds_around(prev, (0.5, 1.0, 2.0)))
    rows = m["sets"]["test"]["interventions"]["models"]["DL_combined"]
    assert [r["threshold"] for r in rows] == th["thresholds"]
    assert any(abs(r["net_intervention_avoided"]) > 0.5 for r in rows)  # at 0.1-0.3: zero at every threshold
    assert not m["sets"]["test"]["interventions"]["notes"]
    # at a prevalence of about 0.2 the range is the reference study's 0.1-0.3
    assert thresholds_around(55 / 280) == (0.11, 0.15, 0.2, 0.26, 0.33)


def test_the_net_interventions_figure_shows_the_thresholds_in_the_outcomes_words(tmp_path, monkeypatch):
    drawn = []
    real = evaluate_module.nia_figure
    monkeypatch.setattr(evaluate_module, "nia_figure", lambda *a: drawn.append(a[1:]) or real(*a))
    paths, cohort = _predictions(tmp_path, prevalence=0.83, shift=1.5)
    evaluate(paths, tmp_path / "ev", cohort=cohort, clinical=ClinicalOptions(outcome=Outcome(**OLNM)))
    title, ylabel, window = drawn[-1]
    assert (title, ylabel) == ("Net dissections avoided, test set", "Net dissections avoided per 100 patients")
    assert window[0] < 0.71 and window[1] > 0.9  # not 0-0.6, which left the 0.71-0.91 curve out of the figure
    assert evaluate_module.nia_window([0.1, 0.15, 0.2, 0.25, 0.3]) == (0.0, 0.6)  # the demo's figure as it was


def test_fixed_thresholds_at_a_high_prevalence_say_why_their_numbers_are_empty(tmp_path):
    paths, cohort = _predictions(tmp_path, prevalence=0.83, shift=7.0)  # every risk above 0.3
    opts = ClinicalOptions(thresholds=(0.1, 0.15, 0.2, 0.25, 0.3), cuts=(0.1, 0.2, 0.3))
    m = evaluate(paths, tmp_path / "evaluation", cohort=cohort, clinical=opts, figures=False)
    th = m["clinical_thresholds"]
    assert th["thresholds_source"] == "given" and th["nri_cuts_source"] == "given"
    test = m["sets"]["test"]
    rows = test["interventions"]["models"]["DL_combined"]
    assert all(abs(r["net_intervention_avoided"]) < 1e-9 and r["interventions_avoided"] == 0 for r in rows)
    assert "the model recommends treatment for every case" in test["interventions"]["notes"]["DL_combined"]
    cat = test["reclassification"][-1]["categorical_nri"]
    assert cat["p"] is None  # "0.000, p NA" before, without a word
    assert cat["undefined"].startswith("categorical NRI undefined: every case in one risk category at these cut points")
    text = _text(build_report(tmp_path).read_text())
    assert "categorical NRI undefined: every case in one risk category" in text
    assert "the same as treating all" in text
    assert "Threshold probabilities 0.1, 0.15, 0.2, 0.25, 0.3: given" in text


def test_cli_evaluate_reads_outcome_and_derives_thresholds(tmp_path, capsys):
    paths, cohort = _predictions(tmp_path, prevalence=0.5, seed=2)
    words = tmp_path / "outcome.yaml"
    words.write_text(json.dumps(OLNM))
    out = tmp_path / "ev"
    assert exit_code(["evaluate", *map(str, paths), "--out", str(out), "--no-figures", "--outcome", str(words)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["outcome"]["positive"] == "OLNM" and m["clinical_thresholds"]["thresholds_source"].startswith("from training")
    assert "clinical thresholds" in capsys.readouterr().out
    assert exit_code(["evaluate", *map(str, paths), "--out", str(out), "--no-figures", "--thresholds", "0.2,0.4"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["clinical_thresholds"]["thresholds"] == [0.2, 0.4] and m["clinical_thresholds"]["thresholds_source"] == "given"
    assert m["outcome"]["given"] is False
