"""``ceusfusion radiomics``: RUN/cohort.csv + RUN/prepared/ -> RUN/features/radiomics.parquet and RUN/radiomics/.

The features file follows the deep features' contract (``fusion.features``: case_id, set, y, group,
then the features), so ``fuse`` takes it with any mix of deep, clinical and perfusion inputs. It holds
the features that every case has (a column missing for some cases, e.g. shape when some ROIs are
boxes, stays in values.csv only) and that pass the robustness filter (``radiomics.robust``), computed
on training cases only. A bad case is one line in failures.csv naming the case, the file and the
problem; the others go through.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import claim, write_csv, write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.fusion.features import GROUP_COLUMN, write_features
from ceusfusion.ingest.cache import case_record, read_index
from ceusfusion.ingest.cohort import groups_of, read_manifest
from ceusfusion.ingest.prepare import ROI_COLUMNS
from ceusfusion.radiomics.extract import case_features
from ceusfusion.radiomics.ibsi import MISSING, NOT_IBSI, family_of
from ceusfusion.radiomics.robust import perturbations, perturbed
from ceusfusion.radiomics.roi import case_rois
from ceusfusion.radiomics.settings import NAME, RadiomicsConfig
from ceusfusion.stats.icc import icc1

FILES = ("values.csv", "cases.csv", "icc.csv", "failures.csv", "radiomics.json")


def column_family(col: str) -> str:
    """The IBSI family of a features-file column (``kf_mean_cm_contrast_d1_2d_avg`` -> glcm)."""
    tag = col.split("__")[-1]
    for prefix in ("img_", "kf_mean_", "kf_sd_", "kf_peak_"):
        if tag.startswith(prefix):
            return family_of(tag[len(prefix):])
    return family_of(tag)


def one_case(task: tuple) -> tuple[str, dict | None, dict | None, str | None]:
    """(case_id, row, record, problem) of one case; never raises for bad input (a worker's task)."""
    case_id, row, record, cfg, pert = task
    try:
        rois = case_rois(row, record, cfg.keyframes, cfg.spacing_mm)
        values, info = case_features(rois if pert is None else perturbed(rois, pert), cfg)
        return case_id, values, info, None
    except CeusError as exc:
        return case_id, None, None, str(CaseError(case_id, _files(row), str(exc)))
    except Exception as exc:  # a hostile ROI the library chokes on stays with its case
        first = (str(exc).splitlines() or [""])[0][:200]
        return case_id, None, None, str(CaseError(case_id, _files(row), f"unexpected {type(exc).__name__}: {first}"))


def _files(row: dict) -> str:
    return ";".join(str(row[c]) for c in ("image", "image_mask", "video", "video_mask") if row.get(c))


def run_tasks(tasks: list[tuple], workers: int) -> list[tuple]:
    """Every task, in order; several worker processes when asked (each ROI is independent)."""
    if workers <= 1 or len(tasks) < 2:
        return [one_case(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one_case, tasks, chunksize=max(1, len(tasks) // (4 * workers))))


def case_tasks(run: Path, cfg: RadiomicsConfig) -> tuple[pd.DataFrame, list[tuple]]:
    """The prepared cases (index) and one task per case from RUN/cohort.csv (absolute paths)."""
    layout = RunLayout(run)
    idx = read_index(run)
    idx[GROUP_COLUMN] = groups_of(idx)
    co = read_manifest(layout.cohort).set_index("case_id")
    tasks = []
    for cid in idx["case_id"].astype(str):
        if cid not in co.index:
            raise CeusError(f"{layout.cohort}: case {cid} of the prepared index is missing; run `ceusfusion prepare` again")
        row = {k: (None if pd.isna(v) else v) for k, v in co.loc[cid].items()}
        sources = idx.loc[idx["case_id"].astype(str) == cid, [c for c in ROI_COLUMNS if c in idx.columns]]
        row.update({c: str(v) for c, v in sources.iloc[0].items() if pd.notna(v) and str(v)})  # prepare's ROI source
        tasks.append((cid, row, case_record(run, cid), cfg, None))
    return idx, tasks


def robustness(values: pd.DataFrame, tasks: dict[str, tuple], train: list[str], cfg: RadiomicsConfig,
               workers: int) -> pd.DataFrame:
    """ICC(1,1) of each column over perturbations of up to ``icc_cases`` training cases (seeded draw):
    a table feature, family, icc, kept. No filter (every column kept, icc NaN) when it cannot run."""
    cols = list(values.columns)
    rng = np.random.default_rng(cfg.seed)
    picked = sorted(rng.choice(sorted(train), size=min(cfg.icc_cases, len(train)), replace=False)) if train else []
    if cfg.icc_cases == 0 or len(picked) < 3:
        return pd.DataFrame({"feature": cols, "family": [column_family(c) for c in cols], "icc": np.nan, "kept": True})
    perts = [perturbations(cfg, rng) for _ in picked]
    jobs = [(*tasks[cid][:4], p) for cid, ps in zip(picked, perts) for p in ps]
    done = {(j[0], str(j[4])): r for j, r in zip(jobs, run_tasks(jobs, workers))}
    cube = np.full((len(picked), 1 + len(perts[0]), len(cols)), np.nan)
    for i, cid in enumerate(picked):
        cube[i, 0] = values.loc[cid, cols].to_numpy(float)
        for k, p in enumerate(perts[i]):
            got = done[(cid, str(p))][1]
            if got is not None:
                cube[i, 1 + k] = [got.get(c, np.nan) for c in cols]
    icc = icc1(cube)
    return pd.DataFrame({"feature": cols, "family": [column_family(c) for c in cols], "icc": icc,
                         "kept": np.nan_to_num(icc, nan=-1.0) >= cfg.icc_threshold})


def model_columns(values: pd.DataFrame, icc: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(columns for the features file, columns left out because some case lacks them)."""
    complete = [c for c in values.columns if np.isfinite(values[c].to_numpy(float)).all()]
    kept = set(icc.loc[icc["kept"], "feature"])
    return [c for c in complete if c in kept], [c for c in values.columns if c not in complete]


def radiomics(run: str | Path, cfg: RadiomicsConfig = RadiomicsConfig(), workers: int = 1, force: bool = False,
              on_failure=None) -> dict:
    """Extract, filter and write; returns the record also written to RUN/radiomics/radiomics.json."""
    run, t0 = Path(run), time.perf_counter()
    layout = RunLayout(run)
    out_dir, parquet = layout.radiomics, layout.features(NAME)
    claim(run, files=[parquet], folders=[out_dir], force=force)
    idx, tasks = case_tasks(run, cfg)
    results = run_tasks(tasks, workers)
    failures = [(cid, problem) for cid, _, _, problem in results if problem]
    for _, problem in failures:
        if on_failure is not None:
            on_failure(problem)
    ok = [(cid, vals, info) for cid, vals, info, problem in results if not problem]
    if not ok:
        raise CeusError(f"radiomics: no case could be computed ({failures[0][1] if failures else 'no case'})")
    values = pd.DataFrame([v for _, v, _ in ok], index=[c for c, _, _ in ok]).astype(float)
    meta = idx.set_index(idx["case_id"].astype(str)).loc[values.index]
    train = [c for c in values.index if meta.loc[c, "split"] == "train"]
    icc = robustness(values, {t[0]: t for t in tasks}, train, cfg, workers)
    cols, incomplete = model_columns(values, icc)
    record = _record(cfg, values, icc, cols, incomplete, ok, failures, time.perf_counter() - t0)
    _write(layout, values, meta, icc, cols, ok, failures, record)
    return record


def _record(cfg, values, icc, cols, incomplete, ok, failures, seconds) -> dict:
    rois = sum(info["n_rois"] for _, _, info in ok)
    tested = icc["icc"].notna() | ~icc["kept"]
    return {
        "settings": cfg.model_dump(mode="json"), "discretisation": cfg.label(), "library": {"mirp": version("mirp")},
        "aggregation": "2-D: GLCM/GLRLM '2D averaged' (d1_2d_avg) and '2D slice-merged' (d1_2d_s_mrg); other texture '2d'",
        "not_ibsi": list(NOT_IBSI), "missing_families": MISSING,
        "n_cases": len(ok), "n_failed": len(failures), "n_features_extracted": int(values.shape[1]),
        "n_incomplete": len(incomplete), "icc_threshold": cfg.icc_threshold,
        "icc_cases": int(min(cfg.icc_cases, len(values))) if bool(tested.any()) else 0,
        "n_dropped_icc": int((~icc["kept"]).sum()), "n_features_kept": len(cols),
        "families_kept": sorted({column_family(c) for c in cols}),
        "seconds": round(seconds, 2), "seconds_per_roi": round(sum(i["seconds"] for _, _, i in ok) / max(rois, 1), 4),
    }


def _write(layout: RunLayout, values, meta, icc, cols, ok, failures, record) -> None:
    """values.csv, cases.csv, icc.csv, failures.csv, radiomics.json and the features parquet."""
    d = layout.radiomics
    ids = pd.DataFrame({"case_id": values.index, "set": meta["split"].to_numpy(),
                        "y": meta["label"].astype(int).to_numpy(), GROUP_COLUMN: meta[GROUP_COLUMN].astype(str).to_numpy()})
    write_csv(d / "values.csv", pd.concat([ids, values.reset_index(drop=True)], axis=1))
    write_csv(d / "cases.csv", pd.DataFrame([{"case_id": c, **info} for c, _, info in ok]))
    write_csv(d / "icc.csv", icc)
    write_csv(d / "failures.csv", pd.DataFrame(failures, columns=["case_id", "problem"]))
    write_json(d / "radiomics.json", record)
    if not cols:
        raise CeusError(f"radiomics: no feature is complete and robust (ICC >= {record['icc_threshold']}); "
                        f"see {d / 'icc.csv'}")
    df = pd.concat([ids, values[cols].reset_index(drop=True)], axis=1)
    write_features(layout.features(NAME), df, {"name": NAME, "source": "radiomics (IBSI, MIRP)",
                                               "feature_dim": len(cols), "groups": "prepared index",
                                               "families": {c: column_family(c) for c in cols},
                                               "radiomics": {k: record[k] for k in ("settings", "discretisation", "library")}})
