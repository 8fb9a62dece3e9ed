"""``predict --cohort`` (issue 24, external validation): a manifest scored in one process gives what one-patient
``predict`` gives, case by case; a case with a missing file fails alone, in one line; ``evaluate`` reads the
files and carries the bundle's locked thresholds to the external cases."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cli_run import exit_code
from rich.console import Console

from ceusfusion.core.errors import CeusError
from ceusfusion.demo import run_demo
from ceusfusion.deploy.batch import PREDICTIONS, predict_cohort
from ceusfusion.deploy.export import bundle_id, export
from ceusfusion.deploy.predict import predict
from ceusfusion.evaluate.evaluate import evaluate

pytestmark = pytest.mark.slow
FILES = ("image", "image_mask", "video", "video_mask")


@pytest.fixture(scope="module")
def made(module_tmp_factory):
    """(bundle, external manifest): one tiny study exported once; the manifest holds five of its test cases
    under paths relative to another folder, one with a missing video, one without masks, and no split."""
    root = module_tmp_factory.mktemp("cohort")
    run_demo(root / "run", Console(record=True, width=160), n=48, quick=True, progress=False)
    bundle = export(root / "run", root / "bundle")
    src = pd.read_csv(root / "run" / "data" / "cohort.csv", dtype=str)
    ext = src[src["split"] == "test"].iloc[:5].drop(columns=["split"]).reset_index(drop=True)
    for c in FILES:
        ext[c] = "../run/data/" + ext[c]
    ext.loc[1, "video"] = "../run/data/videos/missing.avi"
    ext.loc[2, ["image_mask", "video_mask"]] = ""
    (root / "site").mkdir()
    ext.to_csv(root / "site" / "cohort.csv", index=False)
    return bundle, root / "site" / "cohort.csv"


@pytest.fixture(scope="module")
def scored(made, module_tmp_factory):
    """The cohort scored once (with the failures reported as they happen)."""
    bundle, manifest = made
    out = module_tmp_factory.mktemp("out") / "ext"
    lines = []
    res = predict_cohort(bundle, manifest, out, on_failure=lambda *a: lines.append(a))
    return res, lines


def _one_by_one(bundle, manifest, case_id) -> dict:
    row = pd.read_csv(manifest, dtype=str, keep_default_na=False).set_index("case_id").loc[case_id]
    files = [manifest.parent / row[c] if row[c] else None for c in FILES]
    return predict(bundle, *files, cams=False)["models"]


def test_cohort_equals_one_by_one_predict(made, scored):
    bundle, manifest = made
    res, _ = scored
    ids = pd.read_csv(manifest, dtype=str)["case_id"].tolist()
    assert res.n_cases == 5 and res.n_scored == 4
    for f in res.files:
        df = pd.read_csv(f, dtype={"case_id": str})
        ext = df[df["set"] == "external"].set_index("case_id")
        assert list(ext.index) == [ids[0], ids[2], ids[3], ids[4]]  # manifest order, the failed case left out
        assert ext["fold"].eq(-1).all() and ext["y"].notna().all()
    for cid in (ids[0], ids[2], ids[4]):
        one = _one_by_one(bundle, manifest, cid)
        for f in res.files:
            row = pd.read_csv(f, dtype={"case_id": str}).set_index("case_id").loc[cid]
            assert abs(row["prob"] - one[f.stem]["prob"]) <= 1e-6, (f.stem, cid)
            assert row["class"] == one[f.stem]["class"] and row["threshold"] == pytest.approx(one[f.stem]["threshold"])


def test_missing_file_fails_alone_in_one_line(made, scored):
    _, manifest = made
    res, lines = scored
    bad = pd.read_csv(manifest, dtype=str)["case_id"][1]
    assert lines == [(bad, "../run/data/videos/missing.avi", "file not found")]
    fail = pd.read_csv(res.out / "failures.csv", dtype=str)
    assert fail.to_dict(orient="records") == [{"case_id": bad, "file": "../run/data/videos/missing.avi", "problem": "file not found"}]
    summary = json.loads((res.out / "summary.json").read_text())
    assert summary["n_scored"] == 4 and summary["n_failed"] == 1 and summary["labelled"]


def test_roi_column_says_whole_frame(made, scored):
    _, manifest = made
    res, _ = scored
    no_mask = pd.read_csv(manifest, dtype=str)["case_id"][2]
    for f in res.files:
        ext = pd.read_csv(f, dtype={"case_id": str}).query("set == 'external'").set_index("case_id")
        assert ext.loc[no_mask, "roi"] == "whole frame"
        assert (ext.drop(index=no_mask)["roi"] == "mask").all()
    assert res.summary["models"][res.files[0].stem]["roi"] == {"mask": 3, "whole frame": 1}


def test_evaluate_reads_it_at_the_locked_thresholds(made, scored, tmp_path):
    bundle, _ = made
    res, _ = scored
    m = evaluate(res.files, tmp_path / "ev", figures=False)
    meta = json.loads((bundle / "bundle.json").read_text())
    locked = {x["name"]: x["threshold"] for x in meta["models"].values()}
    locked[meta["combined"]["name"]] = meta["combined"]["threshold"]
    assert set(m["sets"]) == {"train", "external"}
    assert m["sets"]["external"]["n"] == 4
    for name, r in m["sets"]["external"]["models"].items():
        assert r["threshold_source"] == "train"
        assert r["threshold"] == pytest.approx(locked[name], abs=1e-6)  # the card's probabilities are rounded to 1e-6


def test_cli_exit_codes_and_output_safety(made, tmp_path, capsys):
    bundle, manifest = made
    out = tmp_path / "o"
    assert exit_code(["predict", "--bundle", str(bundle), "--cohort", str(manifest), "--out", str(out),
                      "--expect-sha256", bundle_id(bundle)]) == 0
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("case ")] == [
        f"case {pd.read_csv(manifest, dtype=str)['case_id'][1]}: ../run/data/videos/missing.avi: file not found"]
    assert sorted(p.name for p in (out / PREDICTIONS).iterdir()) == sorted(f"{n}.csv" for n in _names(bundle))
    # a rerun replaces its own files; a file ceusfusion did not write is refused
    assert exit_code(["predict", "--bundle", str(bundle), "--cohort", str(manifest), "--out", str(out)]) == 0
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "failures.csv").write_text("mine\n")
    assert exit_code(["predict", "--bundle", str(bundle), "--cohort", str(manifest), "--out", str(foreign)]) == 2
    assert (foreign / "failures.csv").read_text() == "mine\n"
    assert exit_code(["predict", "--bundle", str(bundle), "--cohort", str(manifest), "--out", str(out),
                      "--expect-sha256", "0" * 64]) == 2


def _names(bundle) -> list[str]:
    meta = json.loads((bundle / "bundle.json").read_text())
    return [m["name"] for m in meta["models"].values()] + [meta["combined"]["name"]]


def test_no_case_scored_is_an_error(made, tmp_path):
    bundle, manifest = made
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df["video"] = "missing.avi"
    df["image"] = "missing.png"
    df.to_csv(manifest.parent / "none.csv", index=False)
    with pytest.raises(CeusError, match="none of the 5 case"):
        predict_cohort(bundle, manifest.parent / "none.csv", tmp_path / "o")
    assert len(pd.read_csv(tmp_path / "o" / "failures.csv")) == 5


def test_without_labels_and_development_rows(made, tmp_path):
    bundle, manifest = made
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False).drop(columns=["label"])
    df.to_csv(manifest.parent / "unlabelled.csv", index=False)
    res = predict_cohort(bundle, manifest.parent / "unlabelled.csv", tmp_path / "o", development_rows=False)
    assert not res.labelled and "evaluate needs" in res.summary["note"]
    frame = pd.read_csv(res.files[0])
    assert set(frame["set"]) == {"external"} and frame["y"].isna().all()
    with pytest.raises(CeusError, match="'y'"):
        evaluate(res.files, tmp_path / "ev", figures=False)


def test_manifest_label_must_be_binary(made, tmp_path):
    bundle, manifest = made
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df.loc[0, "label"] = "yes"
    df.to_csv(manifest.parent / "badlabel.csv", index=False)
    with pytest.raises(CeusError, match="label must be 0 or 1"):
        predict_cohort(bundle, manifest.parent / "badlabel.csv", tmp_path / "o")
    assert not (tmp_path / "o").exists()  # refused before anything is written
