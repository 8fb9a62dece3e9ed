"""Cohort manifest validation and splits: every bad input is caught with the right message."""

from __future__ import annotations

import json

import av
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from PIL import Image

from ceusfusion.cli import main
from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.cohort import load_cohort, make_split, validate


def _png(path, arr):
    Image.fromarray(arr).save(path)


def _nii(path, mask2d):
    sitk.WriteImage(sitk.GetImageFromArray(mask2d[None].astype(np.uint8)), str(path))


def _avi(path, n=4, h=24, w=32):
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=4)
        s.width, s.height, s.pix_fmt = w, h, "yuvj420p"
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 40 * k, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture
def cohort_dir(tmp_path):
    """A valid 6-case cohort with stills, masks and videos."""
    rows = []
    for i in range(6):
        img = np.full((24, 32), 100, np.uint8)
        mask = np.zeros((24, 32), np.uint8)
        mask[5:15, 8:20] = 1
        _png(tmp_path / f"c{i}.png", img)
        _nii(tmp_path / f"c{i}_mask.nii.gz", mask)
        _avi(tmp_path / f"c{i}.avi")
        _nii(tmp_path / f"c{i}_vmask.nii.gz", mask)
        rows.append(dict(case_id=f"c{i}", label=i % 2, split="train" if i < 4 else "test", group=f"p{i}", center="A",
                         image=f"c{i}.png", image_mask=f"c{i}_mask.nii.gz", video=f"c{i}.avi", video_mask=f"c{i}_vmask.nii.gz", age=50 + i))
    pd.DataFrame(rows).to_csv(tmp_path / "cohort.csv", index=False)
    return tmp_path


def _edit(cohort_dir, fn):
    df = pd.read_csv(cohort_dir / "cohort.csv", dtype=str)
    fn(df)
    df.to_csv(cohort_dir / "cohort.csv", index=False)
    return cohort_dir / "cohort.csv"


def _lines(path):
    _, problems = validate(path)
    return [p.line() for p in problems]


def test_valid_cohort_has_no_problems(cohort_dir):
    assert _lines(cohort_dir / "cohort.csv") == []
    df = load_cohort(cohort_dir / "cohort.csv")
    assert df["label"].dtype.kind == "i" and list(df["group"]) == [f"p{i}" for i in range(6)]


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d.__setitem__("label", ["0", "2", "0", "1", "0", "1"]), "row 2, case c1, column label: label must be 0 or 1, got '2'"),
        (lambda d: d.loc.__setitem__((3, "case_id"), "c0"), "row 4, case c0, column case_id: duplicate case_id"),
        (lambda d: d.loc.__setitem__((4, "group"), "p0"), "group 'p0' is in both train and test"),
        (lambda d: d.__setitem__("label", ["1", "1", "1", "1", "0", "0"]), "the training split holds only one class"),
        (lambda d: d.loc.__setitem__((2, "label"), np.nan), "row 3, case c2, column label: missing value"),
        (lambda d: d.loc.__setitem__((1, "image"), "nope.png"), "row 2, case c1, column image: nope.png: file not found"),
        (lambda d: d.loc.__setitem__((1, "video"), "c1.txt"), "column video: c1.txt: unknown video type"),
        (lambda d: d.loc.__setitem__((0, "split"), "validation"), "split must be 'train' or 'test'"),
        (lambda d: d.loc.__setitem__((0, "case_id"), "a/b"), "not filesystem-safe"),
    ],
)
def test_each_bad_input_is_reported(cohort_dir, edit, expected):
    (cohort_dir / "c1.txt").write_text("not a video")
    lines = _lines(_edit(cohort_dir, edit))
    assert any(expected in line for line in lines), lines


def test_file_problems(cohort_dir):
    (cohort_dir / "c0.png").write_bytes(b"")  # zero bytes
    (cohort_dir / "c1.avi").write_bytes(b"RIFF garbage that is not a video")  # corrupt
    _nii(cohort_dir / "c2_mask.nii.gz", np.zeros((24, 32), np.uint8))  # empty mask
    _nii(cohort_dir / "c3_mask.nii.gz", np.ones((20, 32), np.uint8))  # wrong size
    lines = _lines(cohort_dir / "cohort.csv")
    assert any("case c0, column image: c0.png: empty file" in line for line in lines), lines
    assert any("case c1, column video: c1.avi: cannot open video" in line for line in lines), lines
    assert any("case c2, column image_mask: c2_mask.nii.gz: mask is empty" in line for line in lines), lines
    assert any("case c3, column image_mask: c3_mask.nii.gz: mask is 32x20 px but the image is 32x24 px" in line for line in lines), lines
    assert len(lines) == 4  # every problem at once, nothing spurious


def test_missing_required_column_and_unreadable_manifest(tmp_path):
    (tmp_path / "m.csv").write_text("case_id,image\na,x.png\n")
    assert any("column label: required column is missing" in line for line in _lines(tmp_path / "m.csv"))
    assert "cohort manifest not found" in _lines(tmp_path / "absent.csv")[0]


def test_validate_cli_table_json_and_exit_codes(cohort_dir, capsys):
    with pytest.raises(SystemExit) as e:
        main(["validate", str(cohort_dir / "cohort.csv")])
    assert e.value.code == 0
    path = _edit(cohort_dir, lambda d: d.__setitem__("label", ["0", "5", "0", "1", "0", "1"]))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["validate", str(path), "--json"])
    assert e.value.code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["problems"] == [{"row": 2, "case_id": "c1", "column": "label", "problem": "label must be 0 or 1, got '5'"}]


def test_load_cohort_raises_one_line(cohort_dir):
    path = _edit(cohort_dir, lambda d: d.__setitem__("label", ["0", "x", "0", "1", "0", "1"]))
    with pytest.raises(CeusError, match="1 problem"):
        load_cohort(path)


def _cohort(n=200, seed=1):
    rng = np.random.default_rng(seed)
    groups = [f"g{i // 2}" for i in range(n)]  # two cases per patient
    label = [int(rng.random() < 0.25) for _ in range(n // 2) for _ in range(2)]
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "label": [str(v) for v in label], "group": groups,
                         "center": ["A" if i < 150 else "B" for i in range(n)]})


def test_split_is_stratified_grouped_and_deterministic():
    df = _cohort()
    a = make_split(df, test_fraction=0.3, seed=7)
    b = make_split(df, test_fraction=0.3, seed=7)
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != make_split(df, test_fraction=0.3, seed=8)["split"].tolist()
    assert a.groupby("group")["split"].nunique().max() == 1  # no patient on both sides
    test = a["split"] == "test"
    assert abs(test.mean() - 0.3) < 0.03
    lab = a["label"].astype(int)
    assert abs(lab[test].mean() - lab[~test].mean()) < 0.05  # stratified


def test_split_by_center_and_cli(tmp_path):
    df = _cohort()
    out = make_split(df, by_center="B")
    assert set(out.loc[out["center"] == "B", "split"]) == {"test"} and set(out.loc[out["center"] == "A", "split"]) == {"train"}
    with pytest.raises(CeusError, match="centre 'C' not in the manifest"):
        make_split(df, by_center="C")
    df.to_csv(tmp_path / "c.csv", index=False)
    main_args = ["split", str(tmp_path / "c.csv"), "--test-fraction", "0.3", "--seed", "3"]
    with pytest.raises(SystemExit) as e:
        main(main_args)
    assert e.value.code == 0
    written = pd.read_csv(tmp_path / "c.split.csv")
    assert set(written["split"]) == {"train", "test"}
    with pytest.raises(SystemExit) as e:  # a rerun over its own output goes through (core.fsutil.claim)
        main(main_args)
    assert e.value.code == 0
    (tmp_path / "mine.csv").write_text("the user's\n")
    with pytest.raises(SystemExit) as e:  # never over a file it did not write, without --force
        main(main_args + ["--out", str(tmp_path / "mine.csv")])
    assert e.value.code == 2 and (tmp_path / "mine.csv").read_text() == "the user's\n"


def test_random_split_is_stratified_by_label_and_grouped_by_patient_for_any_seed():
    """Unequal patient groups (1-4 cases) and rare positives: for every seed no patient is on both
    sides and each label class (a group is positive if any case is) puts its share of cases in test
    to within half of the largest group."""
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 5, size=120)
    positive = rng.random(120) < 0.15
    rows = [{"case_id": f"g{g}_{k}", "group": f"g{g}", "label": str(int(positive[g] and k == 0))}
            for g in range(120) for k in range(sizes[g])]
    df = pd.DataFrame(rows)
    g_pos = df.groupby("group")["label"].transform(lambda v: (v == "1").any())
    for seed in range(20):
        out = make_split(df, test_fraction=0.25, seed=seed)
        assert out.groupby("group")["split"].nunique().max() == 1
        test = out["split"] == "test"
        for cls in (True, False):
            n_cls = int((g_pos == cls).sum())
            assert abs(int((test & (g_pos == cls)).sum()) - 0.25 * n_cls) <= sizes.max() / 2, (seed, cls)


def _no_centre_cohort():
    df = _cohort(n=20)
    df["center"] = ["A"] * 8 + ["B"] * 8 + [np.nan, np.nan, "", " "]  # "" and " " are no centre either
    return df


def test_split_by_center_refuses_cases_without_a_centre_unless_told_where_they_go(tmp_path):
    df = _no_centre_cohort()
    with pytest.raises(CeusError, match=r"4 case\(s\) have no 'center' value \(c16, c17, c18, c19\).*--no-center train\|test"):
        make_split(df, by_center="B")
    for where in ("train", "test"):
        out = make_split(df, by_center="B", no_center=where)
        assert out["split"].tolist() == ["train"] * 8 + ["test"] * 8 + [where] * 4
    with pytest.raises(CeusError, match="--no-center must be 'train' or 'test'"):
        make_split(df, by_center="B", no_center="drop")
    with pytest.raises(CeusError, match="--no-center applies only with --by-center"):
        make_split(df, no_center="train")
    df.loc[16, "group"] = df.loc[8, "group"] = "same-patient"  # a patient seen at B and without a centre
    with pytest.raises(CeusError, match="same-patient span centre 'B'"):
        make_split(df, by_center="B", no_center="train")
    _no_centre_cohort().to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(SystemExit) as e:
        main(["split", str(tmp_path / "c.csv"), "--by-center", "B"])
    assert e.value.code == 2 and not (tmp_path / "c.split.csv").exists()
    with pytest.raises(SystemExit) as e:
        main(["split", str(tmp_path / "c.csv"), "--by-center", "B", "--no-center", "test"])
    assert e.value.code == 0
    written = pd.read_csv(tmp_path / "c.split.csv", dtype=str, keep_default_na=False)
    assert written["split"].tolist()[-4:] == ["test"] * 4


def test_cli_usage_error_is_one_message_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as e:
        main(["validate", "--bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "No such option: --bogus" in err and "Traceback" not in err


def test_split_by_center_with_one_centre_is_an_error_not_an_empty_training_set(tmp_path, capsys):
    """Issue 23 item 8: one centre used to give '0 train / 120 test' and exit 0."""
    df = _cohort(n=120).assign(center="A")
    with pytest.raises(CeusError, match=r"column 'center' holds one centre \(A\); a centre split needs at least two "
                                        r"centres: one for test \(--by-center\), the other\(s\) for training"):
        make_split(df, by_center="A")
    df.loc[:9, "center"] = np.nan  # cases without a centre sent to training are not a second centre
    with pytest.raises(CeusError, match="holds one centre"):
        make_split(df, by_center="A", no_center="train")
    df.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(SystemExit) as e:
        main(["split", str(tmp_path / "c.csv"), "--by-center", "A", "--no-center", "train"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and not (tmp_path / "c.split.csv").exists()
    assert "holds one centre" in err and len(err.splitlines()) == 1


def test_random_split_never_leaves_a_side_empty():
    df = _cohort(n=10)
    with pytest.raises(CeusError, match=r"--test-fraction 0.01 leaves the test set empty \(10 case\(s\) in 5 patient group"):
        make_split(df, test_fraction=0.01)
    assert set(make_split(df, test_fraction=0.3)["split"]) == {"train", "test"}
