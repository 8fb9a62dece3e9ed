"""Issue 25 item 2: no stage trusts a half-redone prepare. ``prepare --margin 0.5``, then ``--margin 0.1``
killed half-way, then train: the redone cases' records disagree with the run's, and train, features and
explain refuse, naming the case and the parameter; prepare itself redoes the stale cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_run import exit_code
from ingest_fixtures import interrupted_prepare, write_png

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.ingest import cache
from ceusfusion.ingest.prepare import PrepareParams, prepare
from ceusfusion.models.data import load_cached

N = 8
SIZE = 16


def _cohort(d):
    """Stills with a mask each, so that the margin changes the arrays."""
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(N):
        img = (np.arange(40 * 48).reshape(40, 48) * (3 + i) % 200).astype(np.uint8)
        mask = np.zeros((40, 48), np.uint8)
        mask[12:24, 14:26 + i] = 1
        write_png(d / f"img{i}.png", img)
        write_png(d / f"m{i}.png", mask)
        rows.append({"case_id": f"c{i}", "label": i % 2, "split": "test" if i >= 6 else "train",
                     "image": f"img{i}.png", "image_mask": f"m{i}.png"})
    pd.DataFrame(rows).to_csv(d / "cohort.csv", index=False)
    return d / "cohort.csv"


def _one_line(capsys, *needles) -> str:
    err = capsys.readouterr().err
    flat = " ".join(err.split())
    assert "error:" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    for n in needles:
        assert n in flat, (n, err)
    return flat


def test_train_features_and_explain_refuse_a_half_redone_prepare(tmp_path, monkeypatch, capsys):
    manifest, run = _cohort(tmp_path / "c"), tmp_path / "run"
    assert prepare(manifest, run, PrepareParams(size=SIZE, margin=0.5), progress=False).n_ok == N
    train = ["train", "--run", str(run), "--modality", "image", "--weights", "none", "--epochs", "1", "--folds", "2",
             "--crop", str(SIZE), "--batch-size", "4", "--device", "cpu", "--no-progress", "--name", "m"]
    assert exit_code(train) == 0
    capsys.readouterr()
    interrupted_prepare(monkeypatch, manifest, run, PrepareParams(size=SIZE, margin=0.1), after=2)
    records = [cache.case_record(run, f"c{i}") for i in range(N)]
    assert [r["params"]["margin"] for r in records] == [0.1] * 3 + [0.5] * (N - 3)  # the kill mixed both runs
    assert json.loads(RunLayout(run).keyframes.read_text())["params"]["margin"] == 0.5
    with pytest.raises(CaseError, match=r"case c0 .*margin=0\.1 \(run: 0\.5\)"):
        load_cached(run, "image")
    model = str(RunLayout(run).model("m"))
    for argv in (train + ["--overwrite"], ["features", "--model", model, "--device", "cpu"],
                 ["explain", "--model", model, "--device", "cpu", "--cases", "c1"]):
        assert exit_code(argv) == 2, argv[0]
        _one_line(capsys, "case c0", "c0.npz", "margin=0.1 (run: 0.5)", "prepare")
    assert not RunLayout(run).features("m").exists() and not RunLayout(run).explain("m").exists()
    again = prepare(manifest, run, PrepareParams(size=SIZE, margin=0.5), progress=False)
    assert again.n_skipped == N - 3  # prepare redoes exactly the stale cases
    clean = tmp_path / "clean"
    prepare(manifest, clean, PrepareParams(size=SIZE, margin=0.5), progress=False)
    a, b = load_cached(run, "image"), load_cached(clean, "image")
    assert a.case_ids == b.case_ids and bool((a.x == b.x).all()) and a.prepare_fingerprint == b.prepare_fingerprint


def test_a_model_is_not_used_on_arrays_prepared_again_with_other_parameters(tmp_path, capsys):
    """A complete prepare with another margin after training: every case agrees with the run, but not with the
    model, whose config.json records the fingerprint it was trained on (issue 25: the model against the cache)."""
    manifest, run = _cohort(tmp_path / "c"), tmp_path / "run"
    prepare(manifest, run, PrepareParams(size=SIZE, margin=0.5), progress=False)
    train = ["train", "--run", str(run), "--modality", "image", "--weights", "none", "--epochs", "1", "--folds", "2",
             "--crop", str(SIZE), "--batch-size", "4", "--device", "cpu", "--no-progress", "--name", "m"]
    assert exit_code(train) == 0
    trained_on = json.loads((RunLayout(run).model("m") / "config.json").read_text())["prepare_fingerprint"]
    assert trained_on == load_cached(run, "image").prepare_fingerprint
    model = str(RunLayout(run).model("m"))
    assert exit_code(["features", "--model", model, "--device", "cpu"]) == 0  # the arrays it was trained on
    capsys.readouterr()
    prepare(manifest, run, PrepareParams(size=SIZE, margin=0.1), progress=False, force=True)
    for argv in (["features", "--model", model, "--device", "cpu", "--force"],
                 ["explain", "--model", model, "--device", "cpu", "--cases", "c1"], train + ["--resume"]):
        assert exit_code(argv) == 2, argv[0]
        flat = " ".join(capsys.readouterr().err.split())
        assert "prepare" in flat and "Traceback" not in flat and ("trained" in flat or "prepare_fingerprint" in flat), flat


def _fake(tmp_path):
    from fake_run import make_fake_run

    return make_fake_run(tmp_path / "run", n_train=6, n_test=2, size=8, frames=2, with_video=False)


def test_a_case_whose_arrays_index_csv_does_not_list_is_refused(tmp_path):
    """A record of the old format (no parameters) is still checked: its hash against index.csv's."""
    run = _fake(tmp_path)
    arrays, _ = cache.read_case_file(run, "case002")
    cache.save_case(run, "case002", record={"hash": "another-run"}, **arrays)
    with pytest.raises(CaseError, match="case002 .*not the ones index.csv lists"):
        load_cached(run, "image")
    cache.save_case(run, "case002", record={"hash": "fake2"}, **arrays)  # an old record that agrees loads
    assert len(load_cached(run, "image")) == 8


def test_a_case_without_a_record_or_a_run_without_its_record_is_refused(tmp_path):
    run = _fake(tmp_path)
    arrays, _ = cache.read_case_file(run, "case004")
    cache.save_case(run, "case004", **arrays)
    with pytest.raises(CaseError, match="case004 .*no record of how it was prepared"):
        load_cached(run, "image")
    RunLayout(run).keyframes.unlink()
    with pytest.raises(CeusError, match="keyframes.json not found: the prepare did not finish"):
        load_cached(run, "image")
    RunLayout(run).keyframes.write_text('["not", "a", "record"]')
    with pytest.raises(CeusError, match="keyframes.json: not a prepare record"):
        load_cached(run, "image")
