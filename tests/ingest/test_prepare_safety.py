"""Issue 16 for ``prepare``: a rerun never trusts arrays of an interrupted run, a kill's temporary files
go, and the run directory is written only where ceusfusion wrote before (never over the input)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cli_run import exit_code
from ingest_fixtures import interrupted_prepare, write_png

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import RECORD
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.ingest import cache
from ceusfusion.ingest.prepare import PrepareParams, prepare

N = 6


def _cohort(d):
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(N):
        img = np.full((30 + i, 36), 40, np.uint8)
        img[8:20, 10:24 + i] = 200
        write_png(d / f"img{i}.png", img)
        rows.append({"case_id": f"c{i}", "label": i % 2, "split": "train", "image": f"img{i}.png"})
    pd.DataFrame(rows).to_csv(d / "cohort.csv", index=False)
    return d / "cohort.csv"


def test_rerun_after_an_interrupted_run_with_other_parameters_never_mixes_sizes(tmp_path, monkeypatch):
    """Issue 16: prepare --size 40, then --size 96 killed after 3 cases, then --size 40 again reported every
    case unchanged while 3 arrays were 96 px."""
    manifest, run = _cohort(tmp_path / "c"), tmp_path / "run"
    assert prepare(manifest, run, PrepareParams(size=40), progress=False).n_ok == N
    interrupted_prepare(monkeypatch, manifest, run, PrepareParams(size=96), after=2)
    sizes = sorted(cache.read_case_file(run, f"c{i}")[0]["image"].shape[0] for i in range(N))
    assert sizes == [40, 40, 40, 96, 96, 96]  # the kill left arrays of both runs
    again = prepare(manifest, run, PrepareParams(size=40), progress=False)
    assert again.n_ok == N and again.n_skipped == N - 3
    for i in range(N):
        assert cache.load_case(run, f"c{i}")["image"].shape == (40, 40), i
        assert cache.case_record(run, f"c{i}")["hash"] == cache.read_index(run).set_index("case_id").loc[f"c{i}", "hash"]
    assert prepare(manifest, run, PrepareParams(size=40), progress=False).n_skipped == N


def test_a_case_without_its_own_record_or_sheet_is_prepared_again(tmp_path):
    manifest, run = _cohort(tmp_path / "c"), tmp_path / "run"
    prepare(manifest, run, PrepareParams(size=16), progress=False)
    cache.save_case(run, "c0", **cache.load_case(run, "c0"))  # arrays without a record (an earlier version)
    (RunLayout(run).sheet("c1")).unlink()
    again = prepare(manifest, run, PrepareParams(size=16), progress=False)
    assert again.n_skipped == N - 2
    assert (RunLayout(run).sheet("c1")).is_file() and cache.case_record(run, "c0") is not None


def test_temporary_files_left_by_a_kill_are_removed(tmp_path):
    manifest, run = _cohort(tmp_path / "c"), tmp_path / "run"
    prepare(manifest, run, PrepareParams(size=16), progress=False)
    pdir = RunLayout(run).prepared
    stale = [pdir / "cases" / ".c0.npz.k1l2e3d4.tmp.npz", pdir / "sheets" / ".c1.png.abcdefgh.tmp.png",
             pdir / ".index.csv.zz.tmp.csv", run / ".cohort.csv.x1y2.tmp.csv"]
    for p in stale:
        p.write_bytes(b"")
    (run / ".my-notes.tmp").write_text("not ours")
    prepare(manifest, run, PrepareParams(size=16), progress=False)
    assert not any(p.exists() for p in stale)
    assert (run / ".my-notes.tmp").read_text() == "not ours"
    assert not list(pdir.rglob(".*.tmp*"))


def test_prepare_writes_only_where_ceusfusion_wrote_before(tmp_path, capsys):
    manifest = _cohort(tmp_path / "c")
    run = tmp_path / "run"
    run.mkdir()
    (run / "cohort.csv").write_text("the user's own table\n")
    with pytest.raises(CeusError, match="cohort.csv: this file ceusfusion did not write") as e:
        prepare(manifest, run, PrepareParams(size=16), progress=False)
    assert "--force" in str(e.value) and (run / "cohort.csv").read_text() == "the user's own table\n"
    (run / "cohort.csv").unlink()
    (run / "prepared").mkdir()
    (run / "prepared" / "index.csv").write_text("someone else's\n")
    assert exit_code(["prepare", str(manifest), "--out", str(run), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert "prepared: this folder holds files that ceusfusion did not write" in " ".join(err.split())
    assert "Traceback" not in err and (run / "prepared" / "index.csv").read_text() == "someone else's\n"
    assert exit_code(["prepare", str(manifest), "--out", str(run), "--size", "16", "--force"]) == 0
    assert len(cache.read_index(run)) == N
    assert exit_code(["prepare", str(manifest), "--out", str(run), "--size", "16"]) == 0  # its own run now


def test_a_run_prepared_before_the_record_existed_is_still_its_own(tmp_path):
    manifest, run = _cohort(tmp_path / "c"), tmp_path / "run"
    prepare(manifest, run, PrepareParams(size=16), progress=False)
    (run / RECORD).unlink()
    assert prepare(manifest, run, PrepareParams(size=16), progress=False).n_skipped == N
    assert (run / RECORD).is_file()


def test_the_input_manifest_is_never_the_output(tmp_path):
    manifest = _cohort(tmp_path / "c")
    before = manifest.read_bytes()
    for force in (False, True):
        with pytest.raises(CeusError, match="is this command's input"):
            prepare(manifest, manifest.parent, PrepareParams(size=16), progress=False, force=force)
    assert manifest.read_bytes() == before
