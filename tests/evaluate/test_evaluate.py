"""`ceusfusion evaluate`: predictions CSVs / wide CSV -> metrics.json (DESIGN schema), tables, figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ceusfusion.cli import main
from ceusfusion.core.errors import CeusError
from ceusfusion.evaluate.evaluate import evaluate
from ceusfusion.stats import auc_ci, confusion, delong_test, youden

MODEL_KEYS = {"auc", "auc_ci", "threshold", "threshold_source", "sensitivity", "specificity", "ppv", "npv", "accuracy",
              "brier", "calibration_intercept", "calibration_slope", "hosmer_lemeshow"}


def _preds(tmp_path, names=("DL_image_resnet18", "DL_video_resnet18"), seed=0):
    rng = np.random.default_rng(seed)
    n = 120
    y = (rng.random(n) < 0.3).astype(int)
    sets = np.where(np.arange(n) < 80, "train", "test")
    latent = rng.normal(y, 1.0)
    paths = []
    for k, name in enumerate(names):
        prob = 1 / (1 + np.exp(-(latent + rng.normal(0, 0.5 + k, n) - 1)))
        df = pd.DataFrame({"case_id": [f"p{i:03d}" for i in range(n)], "set": sets,
                           "fold": np.where(sets == "train", np.arange(n) % 5, -1), "y": y, "prob": prob})
        path = tmp_path / "predictions" / f"{name}.csv"
        path.parent.mkdir(exist_ok=True)
        df.sample(frac=1, random_state=k).to_csv(path, index=False)  # row order must not matter
        paths.append(path)
    return paths


def test_evaluate_predictions_files(tmp_path):
    paths = _preds(tmp_path)
    out = tmp_path / "evaluation"
    evaluate(paths, out, figures=True)
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["sets"]) == ["train", "test"]
    a, b = (pd.read_csv(p).sort_values("case_id") for p in paths)
    for s in ("train", "test"):
        blk = m["sets"][s]
        da, db = a[a.set == s], b[b.set == s]
        assert blk["n"] == len(da) and blk["n_pos"] == int(da.y.sum())
        r = blk["models"]["DL_image_resnet18"]
        assert MODEL_KEYS <= set(r) and {"chi2", "df", "p"} <= set(r["hosmer_lemeshow"])
        ref = auc_ci(da.y, da.prob)
        assert r["auc"] == ref.auc and r["auc_ci"] == list(ref.ci)
        # threshold chosen on train, carried unchanged to test
        thr = youden(a[a.set == "train"].y, a[a.set == "train"].prob).threshold
        assert r["threshold"] == thr and r["threshold_source"] == "train"
        c = confusion(da.y, da.prob, thr)
        assert r["sensitivity"] == c["sensitivity"] and r["npv"] == c["npv"]
        assert r["sensitivity_ci"][0] <= r["sensitivity"] <= r["sensitivity_ci"][1]
        (cmp,) = blk["comparisons"]
        t = delong_test(da.y, da.prob, db.prob)
        assert (cmp["a"], cmp["b"], cmp["method"]) == ("DL_image_resnet18", "DL_video_resnet18", "delong")
        assert cmp["z"] == pytest.approx(t.z, rel=1e-12) and cmp["p"] == pytest.approx(t.p, rel=1e-12) and cmp["paired"]
    t2 = pd.read_csv(out / "table2.csv")
    assert list(t2.columns) == ["model", "AUC (95% CI)", "AUC (selection-corrected)", "threshold", "sensitivity (95% CI)",
                                "specificity (95% CI)", "PPV (95% CI)", "NPV (95% CI)", "accuracy (95% CI)", "cohort", "rows"]
    assert set(t2["rows"]) == {"not recorded"}  # these files carry no scoring column
    assert t2.cohort.tolist() == ["Train", "Train", "Test", "Test"]
    r = m["sets"]["test"]["models"]["DL_image_resnet18"]
    assert t2["AUC (95% CI)"][2] == f"{r['auc']:.3f} ({r['auc_ci'][0]:.3f} - {r['auc_ci'][1]:.3f})"
    lo, hi = r["sensitivity_ci"]
    assert t2["sensitivity (95% CI)"][2] == f"{r['sensitivity']:.3f} ({lo:.3f} - {hi:.3f})"
    lo, hi = r["npv_ci"]
    assert t2["NPV (95% CI)"][2] == f"{r['npv']:.3f} ({lo:.3f} - {hi:.3f})"
    assert t2["threshold"][2] == pytest.approx(float(f"{r['threshold']:.4g}")) and t2["AUC (selection-corrected)"].isna().all()
    assert r["ci_method_auc"] == "delong" and r["ci_method_proportions"] == "wilson"  # one row per patient: unchanged
    assert len(pd.read_csv(out / "comparisons.csv")) == 2
    dca = pd.read_csv(out / "dca.csv")
    assert set(dca.model) == {"DL_image_resnet18", "DL_video_resnet18", "treat all", "treat none"}
    for kind in ("roc", "calibration", "dca"):
        for s in ("train", "test"):
            for ext in ("png", "svg"):
                f = out / "figures" / f"{kind}_{s}.{ext}"
                assert f.is_file() and f.stat().st_size > 1000


def test_wide_csv_without_set_uses_self_threshold(tmp_path):
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(30), np.ones(20)].astype(int)
    df = pd.DataFrame({"y": y, "m1": np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0.01, 0.99), "score": rng.normal(y, 1)})
    path = tmp_path / "wide.csv"
    df.to_csv(path, index=False)
    m = evaluate([path], tmp_path / "ev", figures=False)
    blk = m["sets"]["all"]
    assert blk["models"]["m1"]["threshold_source"] == "self"
    assert blk["models"]["m1"]["threshold"] == youden(y, df.m1).threshold
    assert blk["models"]["score"]["brier"] is None  # not probabilities: no calibration, said so
    assert blk["comparisons"][0]["paired"]


def test_errors_name_file_and_lines(tmp_path):
    paths = _preds(tmp_path, names=("A",))
    df = pd.read_csv(paths[0])
    df.loc[[3, 7], "prob"] = np.nan
    df.to_csv(paths[0], index=False)
    with pytest.raises(CeusError, match=r"A\.csv: missing .* 'prob' at lines 5, 9"):
        evaluate(paths, tmp_path / "ev")
    two = pd.DataFrame({"case_id": ["a", "b", "c"], "set": "test", "fold": -1, "y": [0, 1, 1], "prob": [.1, .2, .3]})
    two.to_csv(tmp_path / "B.csv", index=False)
    with pytest.raises(CeusError, match=r"models B and C disagree on y"):
        two.assign(y=[1, 1, 0]).to_csv(tmp_path / "C.csv", index=False)
        evaluate([tmp_path / "B.csv", tmp_path / "C.csv"], tmp_path / "ev")


def test_cli_evaluate_and_table1(tmp_path, capsys):
    paths = _preds(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["evaluate", *map(str, paths), "--out", str(tmp_path / "ev"), "--no-figures", "--bootstrap", "200", "--seed", "1"])
    assert e.value.code in (0, None)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["ci_method"] == "bootstrap"
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "ev2")])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err
    cohort = pd.DataFrame({"case_id": [f"c{i}" for i in range(40)], "label": [0, 1] * 20, "split": ["train"] * 30 + ["test"] * 10,
                           "age": np.arange(40) % 17 + 30, "sex": ["M", "F", "F", "M"] * 10})
    cohort.to_csv(tmp_path / "cohort.csv", index=False)
    with pytest.raises(SystemExit) as e:
        main(["table1", str(tmp_path / "cohort.csv"), "--out", str(tmp_path / "t1.csv")])
    assert e.value.code in (0, None)
    t1 = pd.read_csv(tmp_path / "t1.csv")
    assert t1.Characteristic.tolist()[:2] == ["age", "sex"]


def test_models_scored_on_different_cases_are_compared_paired_on_the_shared_ones(tmp_path):
    """Issue 15 item 4: the same patients are not independent samples. When one model lacks a few
    cases (say, no usable video), DeLong is paired on the intersection, with n and the left-out cases
    recorded; only models without a shared patient get the unpaired test."""
    paths = _preds(tmp_path)
    b = pd.read_csv(paths[1])
    drop = sorted(b.loc[b.set == "test", "case_id"])[:3]
    b[~b.case_id.isin(drop)].to_csv(paths[1], index=False)
    evaluate(paths, tmp_path / "ev", figures=False)
    (cmp,) = json.loads((tmp_path / "ev" / "metrics.json").read_text())["sets"]["test"]["comparisons"]
    a = pd.read_csv(paths[0]).query("set == 'test' and case_id not in @drop").sort_values("case_id")
    bb = pd.read_csv(paths[1]).query("set == 'test'").sort_values("case_id")
    t = delong_test(a.y, a.prob, bb.prob)
    assert cmp["paired"] and cmp["n"] == len(a) == 37
    assert cmp["p"] == pytest.approx(t.p, rel=1e-12)
    assert cmp["dropped"]["only_a"] == drop and cmp["dropped"]["only_b"] == []
    assert "paired on the 37 cases" in cmp["note"]
    # disjoint patients: independent samples, the unpaired test
    b2 = pd.read_csv(paths[1])
    b2["case_id"] = "other_" + b2["case_id"]
    b2.to_csv(paths[1], index=False)
    evaluate(paths, tmp_path / "ev2", figures=False)
    (cmp2,) = json.loads((tmp_path / "ev2" / "metrics.json").read_text())["sets"]["test"]["comparisons"]
    assert not cmp2["paired"] and "unpaired" in cmp2["note"]


def test_table2_says_how_each_set_was_scored(tmp_path):
    """The predictions file's ``scoring`` label reaches metrics.json and Table 2, per model and set."""
    paths = _preds(tmp_path, names=("DL_image_resnet18",))
    df = pd.read_csv(paths[0])
    df["scoring"] = np.where(df["set"] == "train", "out-of-fold", "refit on all training cases")
    df.to_csv(paths[0], index=False)
    m = evaluate(paths, tmp_path / "ev", figures=False)
    assert m["sets"]["train"]["models"]["DL_image_resnet18"]["scoring"] == "out-of-fold"
    t2 = pd.read_csv(tmp_path / "ev" / "table2.csv")
    assert t2.set_index("cohort").loc["Test", "rows"] == "refit on all training cases"
