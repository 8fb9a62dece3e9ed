"""``ceusfusion predict --cohort``: every case of a manifest through one bundle, in one process (external validation).

The bundle is verified once and each model loaded once (``deploy.predict.LoadedBundle``); each case then
goes through exactly what ``predict`` does for one patient (``prepare_patient``, then ``score_patient``), so a
case's probabilities are those of a one-patient ``predict``. Only the modalities the bundle has models for are
read (and the pictures the bundle's radiomics come from). A case whose file cannot be read fails alone: one line
(``case <id>: <file>: <problem>``) and a row of ``failures.csv``; the other cases go through. A case whose
radiomics cannot be computed (a one-pixel ROI), or that lacks a covariate a fused model reads (the manifest's
column of that name), gets one such line naming the models it kept from scoring; its other models are scored.

OUT holds, per bundled model, ``predictions/<model>.csv`` in the predictions contract that ``evaluate`` reads
(``case_id, set, fold, y, prob, scoring`` and ``threshold``, ``class``, ``roi``; ``group`` when the manifest
has one):

- ``set`` is ``external`` for every case of the manifest, whatever its ``split`` column says: none of
  them trained the bundle's models, and a manifest's ``train`` rows scored by a refitted model would
  otherwise be taken by ``evaluate`` for out-of-fold rows and fix the thresholds;
- ``set`` ``train`` rows are the bundle's own development rows: its model card's out-of-fold probabilities
  and labels (no case ids: ``train-oof:0001``...; rounded to 1e-6 in the card). With them ``evaluate``
  applies the threshold locked on the development cohort (Youden on these rows) to the external cases, as
  external validation must, and reports both cohorts side by side. Without them (``development_rows=False``,
  or a bundle without a card) ``evaluate`` would choose each threshold on the external cases themselves;
- ``y`` is the manifest's ``label``, empty where there is none: ``evaluate`` needs a label on every row;
- ``roi`` says what the model saw: ``mask`` (the case's mask, or a box drawn into one), ``whole frame``
  (no mask: the whole picture resized, far from what a mask-trained model was trained on), or
  ``fixed box X,Y,W,H`` (the bundle's prepare box, ``prepare --box``); DL_combined's names both inputs where they differ;
- ``scoring`` is how the run scored its test cases (``refit on all training cases`` or
  ``mean of the fold models``).

``summary.json`` records the bundle id (and whether it was pinned), the counts (``n_failed``: cases no model
scored; ``n_problems``: failures.csv's lines, a case's radiomics problem included) and the files written. Files
are written atomically and only where ceusfusion may write (``core.fsutil.claim``: never over a file it did
not create, never over an input).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import claim, was_created, write_csv, write_json
from ceusfusion.core.runtime import threads as torch_threads
from ceusfusion.deploy.export import MANIFEST, bundled_models, load_card
from ceusfusion.deploy.fused import patient_extras
from ceusfusion.deploy.predict import LoadedBundle, prepare_patient, roi_of, score_patient
from ceusfusion.ingest.cohort import FILE_COLUMNS, absolute, read_manifest, validate_table
from ceusfusion.models.train import SCORING_LABELS

PREDICTIONS = "predictions"  # OUT/predictions/<model>.csv: `evaluate OUT/predictions/*.csv`
EXTERNAL_SET = "external"
DEVELOPMENT_SET = "train"  # the set evaluate fixes thresholds on
PRED_COLUMNS = ("case_id", "set", "fold", "y", "prob", "scoring", "threshold", "class", "roi")
FAILURE_COLUMNS = ("case_id", "file", "problem")
LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
CHECKED_COLUMNS = {None, "case_id", "image", "video", "image/video"}  # validate_table's checks that apply here


@dataclass
class CohortPrediction:
    out: Path
    n_cases: int
    n_scored: int
    failures: pd.DataFrame
    files: list[Path]  # the predictions files, one per model
    labelled: bool  # every scored case has a label: evaluate can read the files
    summary: dict


class CaseFailed(Exception):
    """One case could not be scored: the file (as the manifest writes it) and the problem."""

    def __init__(self, file: str, problem: str):
        super().__init__(problem)
        self.file, self.problem = file, problem


def read_cohort(path: str | Path) -> pd.DataFrame:
    """The manifest, checked as ``validate`` checks it where that matters for scoring (ids, a file per case); the
    label is optional (0 or 1 where given) and ``split``/``group`` are not checked (no split is made here)."""
    df = read_manifest(path)
    problems = [p for p in validate_table(df) if p.column in CHECKED_COLUMNS]
    if "label" in df.columns:
        for i, (cid, lab) in enumerate(zip(df["case_id"], df["label"]), start=1):
            if not pd.isna(lab) and str(lab).strip() not in LABELS:
                problems.append(f"row {i}, case {cid}, column label: label must be 0 or 1 (or empty), got {lab!r}")
    if problems:
        lines = [p if isinstance(p, str) else p.line() for p in problems]
        more = f" (and {len(lines) - 5} more; run `ceusfusion validate`)" if len(lines) > 5 else ""
        raise CeusError(f"{path}: {len(lines)} problem(s): {'; '.join(lines[:5])}{more}")
    return df


def predict_cohort(bundle: str | Path, cohort: str | Path, out: str | Path, threads: int = 1,
                   expect_sha256: str | None = None, force: bool = False, development_rows: bool = True,
                   on_failure: Callable[[str, str, str], None] | None = None,
                   on_case: Callable[[int, int], None] | None = None) -> CohortPrediction:
    """Score every case of ``cohort`` with ``bundle``; write OUT/<model>.csv, failures.csv, summary.json.

    ``on_failure(case_id, file, problem)`` is called as cases fail, ``on_case(done, total)`` after each case.
    Raises CeusError (after writing) when no case could be scored."""
    t0 = time.perf_counter()
    cohort, out = Path(cohort), Path(out)
    with torch_threads(threads):
        lb = LoadedBundle(bundle, expect_sha256=expect_sha256)
        df = read_cohort(cohort)
        names = _model_names(lb)
        paths = {n: out / PREDICTIONS / f"{n}.csv" for n in names}
        stale = _other_models(out, paths.values())  # asked before the claim: only what an earlier run wrote
        claim(out, files=[out / "failures.csv", out / "summary.json"], folders=[out / PREDICTIONS], force=force,
              inputs=[cohort, lb.path / MANIFEST, *_case_inputs(df, cohort)])
        for p in stale:
            p.unlink(missing_ok=True)
        rows, failures = _score_cases(lb, df, cohort, on_failure, on_case)
    dev = _development_rows(lb, names) if development_rows else {}
    preds = _frames(rows, dev, names, "group" in df.columns)
    for n, frame in preds.items():
        write_csv(paths[n], frame)
    fail_df = pd.DataFrame(failures, columns=list(FAILURE_COLUMNS))
    write_csv(out / "failures.csv", fail_df)
    n_scored = len({r["case_id"] for r in rows})
    labelled = bool(rows) and all(r["y"] is not None for r in rows)
    summary = _summary(lb, cohort, df, preds, fail_df, n_scored, labelled, dev, time.perf_counter() - t0)
    write_json(out / "summary.json", summary)
    res = CohortPrediction(out, len(df), n_scored, fail_df, list(paths.values()), labelled, summary)
    if n_scored == 0:
        raise CeusError(f"{cohort}: none of the {len(df)} case(s) could be scored (see {out / 'failures.csv'})")
    return res


def _other_models(out: Path, keep) -> list[Path]:
    """The predictions files an earlier ``predict --cohort`` wrote in OUT/predictions for models this bundle does not
    have: ``evaluate OUT/predictions/*.csv`` would read them beside this bundle's. A file ceusfusion did not
    write is never among them, even under ``force``."""
    keep = {Path(p).name for p in keep}
    folder = out / PREDICTIONS
    return [p for p in (sorted(folder.glob("*.csv")) if folder.is_dir() else [])
            if p.name not in keep and p.is_file() and not p.is_symlink() and was_created(p, out)]


def _model_names(lb: LoadedBundle) -> list[str]:
    """Every model the bundle answers with: the DL models, then the fused ones (DL_combined, the radiomics models)."""
    return [m["name"] for m in lb.meta["models"].values()] + [fm.name for fm in lb.fused]


def _case_inputs(df: pd.DataFrame, cohort: Path) -> list[Path]:
    """Every file the manifest names: an output must never be written over one of them."""
    return [absolute(cohort, v) for col in FILE_COLUMNS if col in df.columns for v in df[col] if isinstance(v, str) and v.strip()]


def case_files(row: dict, cohort: Path, modalities) -> tuple[dict[str, Path], dict[str, str]]:
    """({column: absolute path}, {column: path as the manifest writes it}) of the modalities the bundle uses."""
    files, rel = {}, {}
    for modality in modalities:
        for col in (modality, f"{modality}_mask"):
            v = row.get(col)
            if isinstance(v, str) and v.strip():
                rel[col], files[col] = v, absolute(cohort, v)
    return files, rel


def _score_cases(lb: LoadedBundle, df: pd.DataFrame, cohort: Path, on_failure, on_case) -> tuple[list[dict], list[dict]]:
    """(prediction rows, failure rows), case after case in manifest order."""
    rows: list[dict] = []
    failures: list[dict] = []
    records = df.to_dict(orient="records")
    for k, r in enumerate(records, start=1):
        cid = str(r["case_id"])
        files, rel = case_files(r, cohort, _modalities(lb))
        try:
            got, partial = case_rows(lb, cid, files, rel, _label(r.get("label")), r.get("group"), clinical=r)
            rows += got
        except CaseFailed as exc:
            partial = [exc]
        for exc in partial:
            failures.append({"case_id": cid, "file": exc.file, "problem": exc.problem})
            if on_failure:
                on_failure(cid, exc.file, exc.problem)
        if on_case:
            on_case(k, len(records))
    return rows, failures


def _label(v) -> int | None:
    return None if v is None or pd.isna(v) else LABELS[str(v).strip()]


def _modalities(lb: LoadedBundle) -> list[str]:
    """The pictures a case's scoring reads: those of the bundled deep models, and those the radiomics come from."""
    rad = lb.radiomics.modalities if lb.radiomics is not None else []
    return list(dict.fromkeys([*lb.meta["models"], *rad]))


def case_rows(lb: LoadedBundle, cid: str, files: dict[str, Path], rel: dict[str, str], y: int | None,
              group=None, clinical: dict | None = None) -> tuple[list[dict], list[CaseFailed]]:
    """One case's prediction rows, one per model that could score it, and a CaseFailed per problem that kept a
    fused model from scoring it (its radiomics, a covariate); CaseFailed raised when no model could."""
    entries: dict = {}
    arrays = _prepare_case(lb, files, rel, entries)
    extras = patient_extras(lb.radiomics, files, entries, clinical)
    result = score_patient(lb, arrays, {}, extras=extras)
    meta = lb.meta
    rois = {mod: roi_of(meta, f"{mod}_mask" in files) for mod in arrays}
    out = []
    for modality, m in bundled_models(meta).items():
        res = result["models"][m.name]
        if res.get("available"):
            out.append(_row(cid, m.name, res, y, SCORING_LABELS[m.test_scoring], rois[modality]))
    roi = next(iter(set(rois.values()))) if len(set(rois.values())) == 1 else "; ".join(f"{k}: {v}" for k, v in rois.items())
    for fm in lb.fused:
        if result["models"][fm.name].get("available"):
            out.append(_row(cid, fm.name, result["models"][fm.name], y, SCORING_LABELS["refit"], roi))
    for row in out:
        row["group"] = None if group is None or pd.isna(group) else str(group)
    if not out:
        raise _failure(list(rel.values()), "; ".join(f"{n}: {r['reason']}" for n, r in result["models"].items()))
    return out, _fused_failures(result, rel)


def _fused_failures(result: dict, rel: dict[str, str]) -> list[CaseFailed]:
    """One CaseFailed per distinct problem of the case's inputs, naming the fused models it kept from scoring."""
    by_reason: dict[str, list[str]] = {}
    for name, res in result["models"].items():
        if res.get("failed"):
            by_reason.setdefault(res["reason"], []).append(name)
    files = ";".join(rel[c] for c in ("image_mask", "video_mask") if c in rel) or ";".join(rel.values())
    return [CaseFailed(files if reason.startswith("radiomics") or "shape" in reason else "",
                       f"{', '.join(names)} not scored: {reason}") for reason, names in by_reason.items()]


def _row(cid: str, model: str, res: dict, y, scoring: str, roi: str) -> dict:
    return {"model": model, "case_id": cid, "set": EXTERNAL_SET, "fold": -1, "y": y, "prob": res["prob"],
            "scoring": scoring, "threshold": res["threshold"], "class": res["class"], "roi": roi}


def _prepare_case(lb: LoadedBundle, files: dict[str, Path], rel: dict[str, str], entries: dict | None = None) -> dict:
    """The case's arrays for every modality the bundle uses and it has (``entries`` gets prepare's records);
    CaseFailed naming the file being read when one cannot be."""
    arrays: dict = {}
    for modality in _modalities(lb):
        if modality not in files:
            continue
        cols = [c for c in (modality, f"{modality}_mask") if c in files]
        try:  # no record: the TIC's parameters are for a reader of one prediction, and cost as much as the keyframes
            arrays.update(prepare_patient(lb.meta, **{c: files[c] for c in cols}, entries=entries))
        except CeusError as exc:
            raise _failure([rel[c] for c in cols], _relative(str(exc), files, rel)) from None
        except Exception as exc:  # a decoder's or the filesystem's unforeseen trouble stays with its case
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise _failure([rel[c] for c in cols], _relative(f"unexpected {type(exc).__name__}: {first}", files, rel)) from None
    if not arrays:
        need = " or ".join(_modalities(lb))
        raise CaseFailed("", f"no {need} for this case (the bundle's models read: {', '.join(_modalities(lb))})")
    return arrays


def _failure(candidates: list[str], msg: str) -> CaseFailed:
    """The file a message starts with (readers name their file first), else every file being read."""
    for f in candidates:
        if msg.startswith(f"{f}: "):
            return CaseFailed(f, msg[len(f) + 2:])
    return CaseFailed(";".join(candidates), msg)


def _relative(msg: str, files: dict[str, Path], rel: dict[str, str]) -> str:
    """A message names the file as the manifest writes it, not its absolute path."""
    for c, p in files.items():
        msg = msg.replace(str(p), rel[c])
    return msg


def _development_rows(lb: LoadedBundle, names: list[str]) -> dict[str, pd.DataFrame]:
    """{model: the bundle card's training out-of-fold rows as set ``train``}; empty without a card."""
    card = load_card(lb.path, lb.meta) or {}
    out = {}
    for name in names:
        oof = ((card.get("models") or {}).get(name) or {}).get("train_oof")
        if not oof or not oof.get("prob"):
            continue
        n = len(oof["prob"])
        scoring = "; ".join(oof.get("scoring") or []) or "out-of-fold"
        out[name] = pd.DataFrame({"case_id": [f"train-oof:{i:04d}" for i in range(1, n + 1)], "set": DEVELOPMENT_SET,
                                  "fold": None, "y": oof["y"], "prob": oof["prob"],
                                  "scoring": f"{scoring} (development cohort, from the bundle's model card)",
                                  "threshold": None, "class": None, "roi": None})
    return out


def _frames(rows: list[dict], dev: dict[str, pd.DataFrame], names: list[str], grouped: bool) -> dict[str, pd.DataFrame]:
    """{model: its predictions file}: the development rows (if any), then the external cases in manifest order."""
    cols = list(PRED_COLUMNS) + (["group"] if grouped else [])
    scored = pd.DataFrame(rows, columns=["model", *PRED_COLUMNS, "group"])
    out = {}
    for n in names:
        ext = scored[scored["model"] == n].reindex(columns=cols)
        parts = [p for p in (dev.get(n), ext) if p is not None and len(p)]
        out[n] = pd.concat([p.reindex(columns=cols) for p in parts], ignore_index=True) if parts else ext
        if "y" in out[n]:
            out[n]["y"] = out[n]["y"].astype("Int64")
    return out


def _summary(lb: LoadedBundle, cohort: Path, df: pd.DataFrame, preds: dict, fail_df: pd.DataFrame, n_scored: int,
             labelled: bool, dev: dict, seconds: float) -> dict:
    """summary.json: which bundle scored which cohort, how many cases each model scored, what failed."""
    per_model = {}
    for n, frame in preds.items():
        ext = frame[frame["set"] == EXTERNAL_SET]
        per_model[n] = {"n": int(len(ext)), "roi": {str(k): int(v) for k, v in ext["roi"].value_counts().items()},
                        "development_rows": int((frame["set"] == DEVELOPMENT_SET).sum())}
    note = None if labelled else "some scored cases have no label: evaluate needs y on every row (add the label column)"
    return {"bundle": str(lb.path), "bundle_sha256": lb.meta["bundle_sha256"], "bundle_pinned": lb.meta["pinned"],
            "cohort": str(cohort), "set": EXTERNAL_SET, "n_cases": int(len(df)), "n_scored": n_scored,
            "n_failed": int(len(df)) - n_scored, "n_problems": int(len(fail_df)), "labelled": labelled, "note": note, "outcome": lb.outcome.record(),
            "models": per_model,
            "thresholds": ("locked on the development cohort (its out-of-fold rows are the files' 'train' rows)"
                           if dev else "not carried: the files hold no development rows, so evaluate chooses them on the external cases"),
            "seconds": round(seconds, 3)}
