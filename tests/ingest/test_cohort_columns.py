"""Issue 24, "the manifest it accepts without a word": how validate reads each column, a patient key without a
``group`` column (split refuses it until told --group COLUMN or --no-group), file paths and identifiers that are no
covariates, and the report counting patients from groups and rows as cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ceusfusion.cli import main
from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.cohort import clinical_columns, column_roles, left_out_columns, make_split, manifest_warnings, patient_keys
from ceusfusion.report.html import cohort_section
from ceusfusion.stats.table1 import table1


def ddti_like(n_patients: int = 120, seed: int = 0) -> pd.DataFrame:
    """A manifest shaped like the DDTI one: a ``patient`` column, no ``group``, 1-3 nodules per patient, the masks in
    a column named ``mask`` (not ``image_mask``), an ``orig_id`` unique per row and a decimal covariate."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(2, n_patients + 2):
        for k in range(1, int(rng.choice([1, 1, 2, 3])) + 1):
            cid = f"{p}_{k}"
            rows.append({"case_id": cid, "patient": str(p), "image": f"images/{cid}.png", "mask": f"masks/{cid}.png",
                         "tirads": str(rng.choice(["2", "3", "4a", "4b", "5"])), "label": str(int(rng.random() < 0.7)),
                         "mask_area_frac": f"{rng.uniform(0.1, 0.6):.4f}", "orig_id": cid})
    return pd.DataFrame(rows)


def _write(tmp_path, df, name="cases.csv"):
    df.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


# ------------------------------------------------------------------------------------ validate


def test_validate_prints_how_each_column_is_read_and_warns_of_a_patient_key(tmp_path, capsys):
    path = _write(tmp_path, ddti_like())
    code, out, _ = _run(["validate", str(path), "--no-files"], capsys)
    assert code == 0  # warnings are no problems
    flat = " ".join(out.split())
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.count("│") >= 4]
    roles = {c[0]: c[1] for c in cells if c[0]}
    assert roles == {"case_id": "id", "patient": "ignored", "image": "file (image)", "mask": "ignored",
                     "tirads": "covariate", "label": "label", "mask_area_frac": "covariate", "orig_id": "ignored"}, out
    assert "warning: no 'group' column, and column 'patient' looks like a patient key" in flat
    assert "--group patient" in flat and "--no-group" in flat
    assert "column 'mask' holds file paths (e.g. 'masks/2_1.png') but is not read" in flat
    assert "rename it image_mask" in flat
    assert "each of the" in flat and "is its own patient" in flat


def test_validate_json_has_the_roles_and_the_warnings(tmp_path, capsys):
    path = _write(tmp_path, ddti_like())
    code, out, _ = _run(["validate", str(path), "--no-files", "--json"], capsys)
    rec = json.loads(out)
    roles = {r["column"]: r for r in rec["columns"]}
    assert code == 0 and rec["problems"] == []
    assert roles["patient"]["role"] == "ignored" and "patient key" in roles["patient"]["detail"]
    assert roles["mask"]["role"] == "ignored" and roles["mask"]["detail"].startswith("file paths")
    assert roles["orig_id"]["detail"].startswith("an identifier: unique per row")
    assert roles["tirads"]["role"] == roles["mask_area_frac"]["role"] == "covariate"
    assert any("'patient' looks like a patient key" in w for w in rec["warnings"])


def test_validate_counts_the_patients_of_a_manifests_own_split_on_both_sides(tmp_path):
    df = ddti_like()
    df["split"] = np.where(np.arange(len(df)) % 3 == 0, "test", "train")  # a split by row: patients cross
    crossing = set(df.loc[df["split"] == "train", "patient"]) & set(df.loc[df["split"] == "test", "patient"])
    (w,) = [w for w in manifest_warnings(df) if "patient key" in w]
    assert f"{len(crossing)} of its values are in both train and test" in w


def test_a_group_column_silences_the_warning_and_is_read_as_the_patient(tmp_path, capsys):
    df = ddti_like().assign(group=lambda d: d["patient"])
    assert patient_keys(df) == {} and not any("patient key" in w for w in manifest_warnings(df))
    roles = {r.column: r.role for r in column_roles(df)}
    assert roles["group"] == "group" and roles["patient"] == "ignored"  # still no covariate
    code, out, _ = _run(["validate", str(_write(tmp_path, df)), "--no-files"], capsys)
    assert code == 0 and f"{df['patient'].nunique()} patient group(s) for {len(df)} cases" in " ".join(out.split())


@pytest.mark.parametrize("name", ["patient", "patient_id", "Subject", "MRN", "pid", "Patient No."])
def test_a_column_named_like_a_patient_key_is_one_when_its_values_repeat(name):
    df = pd.DataFrame({"case_id": [f"c{i}" for i in range(6)], "label": ["0", "1"] * 3, "image": ["a.png"] * 6,
                       name: ["p0", "p0", "p1", "p1", "p2", "p3"]})
    assert list(patient_keys(df)) == [name]
    df[name] = [f"p{i}" for i in range(6)]  # unique per row: an identifier, not a key that groups rows
    assert patient_keys(df) == {}


def test_an_unnamed_key_is_found_from_its_values_and_a_covariate_is_not():
    df = ddti_like().rename(columns={"patient": "x"})
    assert list(patient_keys(df)) == ["x"]  # its values are part of the case ids
    df["x"] = [f"P{v}" for v in df["x"]]
    assert list(patient_keys(df)) == ["x"]  # text with many values in small groups
    rng = np.random.default_rng(3)
    df = ddti_like().drop(columns="patient").assign(
        age=rng.integers(25, 80, len(ddti_like())).astype(str),  # integers that repeat, scattered: a covariate
        sex=rng.choice(["F", "M"], len(ddti_like())),  # two levels
        size_mm=[f"{v:.1f}" for v in rng.uniform(5, 12, len(ddti_like()))])  # decimals that repeat: a measurement
    assert patient_keys(df) == {}
    assert {"age", "sex", "size_mm", "tirads", "mask_area_frac"} <= set(clinical_columns(df))


# ------------------------------------------------------------------------------------ split


def test_split_refuses_a_manifest_with_a_patient_key_and_no_group(tmp_path, capsys):
    path = _write(tmp_path, ddti_like())
    code, out, err = _run(["split", str(path)], capsys)
    assert code == 2 and not (tmp_path / "cases.split.csv").exists()
    line = err.strip()
    assert len(line.splitlines()) == 1 and "column 'patient' looks like a patient key" in line
    assert "--group patient" in line and "--no-group" in line
    with pytest.raises(CeusError, match="column 'patient' looks like a patient key"):
        make_split(ddti_like(), by_center="A")  # a centre split is grouped by patient too


@pytest.mark.parametrize("seed", range(5))
def test_split_group_column_keeps_each_patient_on_one_side_and_writes_it_as_group(tmp_path, capsys, seed):
    df = ddti_like(seed=seed)
    path = _write(tmp_path, df)
    code, out, _ = _run(["split", str(path), "--group", "patient", "--seed", str(seed)], capsys)
    assert code == 0
    written = pd.read_csv(tmp_path / "cases.split.csv", dtype=str)
    assert written["group"].tolist() == written["patient"].tolist()
    assert written.groupby("patient")["split"].nunique().max() == 1 and set(written["split"]) == {"train", "test"}
    assert f"patients from column 'patient': {df['patient'].nunique()} patients for {len(df)} cases" in out
    assert "none on both sides" in out
    code, out, _ = _run(["validate", str(tmp_path / "cases.split.csv"), "--no-files", "--json"], capsys)
    assert code == 0 and not any("patient key" in w for w in json.loads(out)["warnings"])


def test_split_no_group_makes_each_row_its_own_patient_and_says_so(tmp_path, capsys):
    df = ddti_like()
    code, out, _ = _run(["split", str(_write(tmp_path, df)), "--no-group"], capsys)
    assert code == 0 and f"--no-group: each of the {len(df)} cases is its own patient" in out
    written = pd.read_csv(tmp_path / "cases.split.csv", dtype=str)
    assert written["group"].tolist() == written["case_id"].tolist()


def test_split_grouping_options_are_checked():
    df = ddti_like()
    with pytest.raises(CeusError, match="--group and --no-group exclude each other"):
        make_split(df, group="patient", no_group=True)
    with pytest.raises(CeusError, match="--group nope: no such column"):
        make_split(df, group="nope")
    with pytest.raises(CeusError, match="--group label: 'label' is a column of the schema"):
        make_split(df, group="label")
    with pytest.raises(CeusError, match="already has a 'group' column"):
        make_split(df.assign(group=df["patient"]), group="patient")
    with pytest.raises(CeusError, match="--no-group: the manifest has a 'group' column"):
        make_split(df.assign(group=df["patient"]), no_group=True)
    plain = df.drop(columns="patient")  # nothing looks like a patient: the split goes ahead as before
    assert make_split(plain).attrs["grouping"] == f"no 'group' column: each of the {len(df)} cases is its own patient"
    assert "group" not in make_split(plain).columns


# ------------------------------------------------------------------------------------ covariates


def test_paths_ids_and_the_patient_key_are_no_covariates():
    df = ddti_like()
    assert clinical_columns(df) == ["tirads", "mask_area_frac"]
    why = left_out_columns(df)
    assert why["mask"] == "file paths (e.g. 'masks/2_1.png')"
    assert why["orig_id"] == f"an identifier: unique per row ({len(df)} distinct values)"
    assert why["patient"].startswith("looks like a patient key")
    assert left_out_columns(df.assign(scan=["D:\\scans\\a"] * len(df), clip=["x.MP4"] * len(df),
                                      visit=["2020/01/31"] * len(df))).keys() == {"mask", "orig_id", "patient", "scan", "clip"}


def test_table1_leaves_paths_ids_and_the_patient_key_out_and_says_why():
    df = ddti_like().assign(split=lambda d: np.where(d["patient"].astype(int) % 3 == 0, "test", "train"))
    t = table1(df)
    assert set(t["Characteristic"]) & {"mask", "orig_id", "patient"} == set()
    assert not t["Characteristic"].str.contains("masks/").any() and len(t) < 20
    assert set(t.attrs["left_out"]) == {"mask", "orig_id", "patient"}
    assert t.attrs["left_out"]["mask"].startswith("file paths")
    t = table1(df, columns=clinical_columns(df))  # as the study calls it: the reasons are still recorded
    assert t.attrs["left_out"]["orig_id"].startswith("an identifier")


# ------------------------------------------------------------------------------------ report


def test_report_counts_patients_from_groups_and_rows_as_cases(tmp_path):
    df = make_split(ddti_like(), group="patient")
    df.to_csv(tmp_path / "cohort.csv", index=False)
    body = cohort_section(tmp_path)
    n, p = len(df), df["patient"].nunique()
    assert f"{n} cases of {p} patients" in body and f"{n} patients" not in body
    train = df["split"] == "train"
    assert "<th>cases</th>" in body and "<th>patients</th>" in body
    assert f"<td>{int(train.sum())}</td>\n      <td>{df.loc[train, 'patient'].nunique()}</td>" in body
    df.drop(columns="group").to_csv(tmp_path / "cohort.csv", index=False)
    assert "no patient grouping was recorded" in cohort_section(tmp_path)
