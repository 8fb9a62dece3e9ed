"""`ceusfusion fuse` end to end on parquet files written here; joining, clinical, perfusion, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_run import exit_code as main

from ceusfusion.core.errors import CeusError
from ceusfusion.fusion.inputs import join_features, load_inputs


def write_features(path, df: pd.DataFrame, meta: dict | None) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"ceusfusion": json.dumps(meta).encode()})
    pq.write_table(table, path)


def cohort_and_features(tmp_path, n: int = 120, n_test: int = 30, seed: int = 0, with_group: bool = False):
    """Two feature files (image 8, video 6 columns), a cohort with age/margin/group, a perfusion CSV.

    ``with_group``: the feature files carry the cohort's group column (as ``features`` writes them);
    else they are old files without it."""
    rng = np.random.default_rng(seed)
    groups = [f"G{i // 2:03d}" if i < 20 else "" for i in range(n)]  # 10 patients with 2 nodules
    age = rng.normal(50, 10, size=n)
    y = ((age - 50) / 10 + rng.normal(scale=0.7, size=n) > 0).astype(int)
    ids = [f"P{i:03d}" for i in range(n)]
    sets = np.where(np.arange(n) < n - n_test, "train", "test")
    files = []
    for name, p, sig in (("DL_image_resnet18", 8, 0.8), ("DL_video_densenet121", 6, 0.5)):
        X = rng.normal(size=(n, p))
        X[:, 0] += sig * (2 * y - 1)
        df = pd.DataFrame(X, columns=[f"f{i:04d}" for i in range(p)])
        df.insert(0, "y", y)
        df.insert(0, "set", sets)
        df.insert(0, "case_id", ids)
        if with_group:
            df.insert(3, "group", [g or c for g, c in zip(groups, ids)])
        path = tmp_path / f"{name}.parquet"
        # the video file lists its cases in another order: the join must not care
        write_features(path, df if name.startswith("DL_image") else df.iloc[::-1], {"name": name, "arch": "x"})
        files.append(path)
    margin = rng.choice(["smooth", "irregular", "ill-defined"], size=n).astype(object)
    margin[3] = None  # a missing category becomes its own level
    cohort = pd.DataFrame({"case_id": ids, "label": y, "split": sets, "image": [f"img/{c}.png" for c in ids],
                           "group": groups,
                           "age": np.round(age, 1), "margin": margin})
    cohort_path = tmp_path / "cohort.csv"
    cohort.to_csv(cohort_path, index=False)
    perf = pd.DataFrame({"case_id": ids, "peak_intensity": rng.normal(size=n), "ttp_s": rng.normal(20, 3, size=n)})
    perf.loc[5, "ttp_s"] = np.nan
    perf_path = tmp_path / "perfusion.csv"
    perf.to_csv(perf_path, index=False)
    return files, cohort_path, perf_path


def test_cli_end_to_end_two_files_clinical_perfusion(tmp_path):
    files, cohort, perf = cohort_and_features(tmp_path)
    out = tmp_path / "fusion"
    assert 0 == main(["fuse", "--features", str(files[0]), str(files[1]), "--cohort", str(cohort), "--clinical", "age,margin",
          "--perfusion", str(perf), "--out", str(out), "--classifiers", "lr,rf", "--folds", "3", "--inner-folds", "3",
          "--n-cs", "8", "--fast", "--seed", "3", "--name", "DL_clinical"])
    preds = pd.read_csv(out / "predictions" / "DL_clinical.csv")
    assert list(preds.columns) == ["case_id", "set", "fold", "y", "prob", "scoring"]
    assert set(preds.loc[preds.set == "test", "scoring"]) == {"refit on all training cases"}
    assert all("optimistic" in x for x in preds.loc[preds.set == "train", "scoring"])  # the family was chosen on them
    assert len(preds) == 120 and preds["case_id"].is_unique and preds["prob"].between(0, 1).all()
    tr, te = preds[preds["set"] == "train"], preds[preds["set"] == "test"]
    assert len(te) == 30 and (te["fold"] == -1).all() and set(tr["fold"]) == {0, 1, 2}
    # patients with two nodules (shared group) never straddle two folds
    cohort_df = pd.read_csv(cohort, keep_default_na=False)
    g = tr.merge(cohort_df[["case_id", "group"]], on="case_id")
    g = g[g["group"] != ""]
    assert (g.groupby("group")["fold"].nunique() == 1).all()

    summary = json.loads((out / "fusion.json").read_text())
    assert summary["name"] == "DL_clinical" and summary["seed"] == 3
    # old feature files without a group column: the cohort's groups are used, and every CV is grouped by them
    assert summary["cv"]["group_source"] == "cohort" and summary["cv"]["n_groups_with_several_train_rows"] == 10
    assert summary["cv"]["grouped"] == {"outer": True, "lasso": True, "grid_search": True}  # no SVM family here
    assert summary["chosen_family"] in ("lr", "rf")
    assert summary["columns"]["categorical"] == ["clin__margin"]
    assert set(summary["columns"]["numeric"]) == {"clin__age", "perf__peak_intensity", "perf__ttp_s"}
    assert summary["lasso"]["n_features_in"] == 8 + 6 + 1 + 2 + 4  # margin: 3 levels + "missing"
    assert [i["meta"]["name"] for i in summary["inputs"] if i["kind"] == "features"] == [
        "DL_image_resnet18", "DL_video_densenet121"]

    sel = pd.read_csv(out / "selected_features.csv")
    assert "clin__age" in set(sel.loc[sel["selected"], "feature"])  # the strongest signal is kept
    assert set(sel["source"]) <= {"DL_image_resnet18", "DL_video_densenet121", "clin", "perf"}
    cv = pd.read_csv(out / "cv_results.csv")
    assert list(cv["family"]) == ["lr", "rf"] and cv["chosen"].sum() == 1
    for stem in ("lasso_path", "lasso_cv", "feature_weights", "cv_auc"):
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{stem}.{ext}").stat().st_size > 1000
    assert (out / "model.joblib").is_file()
    assert not list(out.rglob("*.tmp*"))


def test_features_groups_are_checked_against_the_cohort(tmp_path):
    files, cohort, _ = cohort_and_features(tmp_path, with_group=True)
    data = load_inputs(files, cohort=cohort)
    assert data.group_source == "features" and data.inputs[-1]["groups"].startswith("checked")
    assert data.groups.tolist() == data.frame["group"].tolist() and data.groups.iloc[0] == "G000"
    assert "group" not in data.columns
    co = pd.read_csv(cohort, keep_default_na=False)
    co.loc[co["case_id"] == "P004", "group"] = "G999"
    co.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(CeusError, match="patient group disagrees with the features files for 1 case\\(s\\): P004"):
        load_inputs(files, cohort=tmp_path / "other.csv")
    assert load_inputs(files).group_source == "features"  # no cohort: the files' own groups


def test_join_prefixes_and_aligns_cases(tmp_path):
    files, _, _ = cohort_and_features(tmp_path)
    frame, cols, inputs = join_features(files)
    assert len(frame) == 120 and len(cols) == 14
    assert cols[0] == "DL_image_resnet18__f0000" and cols[-1] == "DL_video_densenet121__f0005"
    video = pq.read_table(files[1]).to_pandas().set_index("case_id")
    np.testing.assert_array_equal(frame.set_index("case_id").loc[video.index, "DL_video_densenet121__f0000"],
                                  video["f0000"])


def test_join_errors_name_the_cases(tmp_path):
    files, _, _ = cohort_and_features(tmp_path)
    df = pq.read_table(files[1]).to_pandas()
    flipped = df.copy()
    flipped.loc[flipped["case_id"] == "P007", "y"] = 1 - flipped.loc[flipped["case_id"] == "P007", "y"]
    bad = tmp_path / "flipped.parquet"
    write_features(bad, flipped, {"name": "other"})
    with pytest.raises(CeusError, match="disagrees .* 1 case\\(s\\): P007"):
        join_features([files[0], bad])
    short = tmp_path / "short.parquet"
    write_features(short, df[~df["case_id"].isin(["P010", "P011"])], None)  # no metadata: named after the file
    with pytest.raises(CeusError, match="2 missing from .*short.parquet: P010, P011"):
        join_features([files[0], short])
    frame, cols, _ = join_features([files[0], short], drop_missing=True)
    assert len(frame) == 118 and cols[-1].startswith("short__")
    with pytest.raises(CeusError, match="used by another features file"):
        join_features([files[0], files[0]])


def test_input_problems_are_one_clear_line(tmp_path, capsys):
    files, cohort, perf = cohort_and_features(tmp_path)
    with pytest.raises(CeusError, match="clinical column 'bmi' not found"):
        load_inputs(files, cohort=cohort, clinical=["bmi"])
    with pytest.raises(CeusError, match="needs --cohort"):
        load_inputs(files, clinical=["age"])
    nan = pq.read_table(files[0]).to_pandas()
    nan.loc[4, "f0002"] = np.nan
    write_features(tmp_path / "nan.parquet", nan, {"name": "nan"})
    with pytest.raises(CeusError, match="case P004 .*non-finite value in feature column 'f0002'"):
        load_inputs([tmp_path / "nan.parquet"])
    pd.read_csv(perf).iloc[1:].to_csv(tmp_path / "perf_short.csv", index=False)
    data = load_inputs(files, perfusion=tmp_path / "perf_short.csv")  # a case without a row is imputed later
    assert data.frame.loc[data.frame["case_id"] == "P000", "perf__ttp_s"].isna().all()
    assert data.inputs[-1]["cases_without_row"] == ["P000"]
    pd.read_csv(perf).assign(ttp_s="fast").to_csv(tmp_path / "perf_text.csv", index=False)
    with pytest.raises(CeusError, match="perfusion column 'ttp_s' is not numeric"):
        load_inputs(files, perfusion=tmp_path / "perf_text.csv")
    assert 2 == main(["fuse", str(files[0]), "--out", str(tmp_path / "o"), "--classifiers", "lr,nope"])
    err = capsys.readouterr().err
    assert "unknown classifier family nope" in err and "Traceback" not in err
