"""``segment predict``: masks for the cases without a manual one, and a manifest that points at them.

Writes into ``DIR`` (claimed first: never over a file ceusfusion did not write, never over an input):

- ``masks/<case>_<image|video>.nii.gz``: one-slice uint8 NIfTI in the source's pixel grid and, where
  ITK reads the source (PNG, DICOM, ...), its spacing, origin and direction, so ITK-SNAP opens it
  over the source; a video's mask is the one of its box frame (or keyframe centre), for every frame;
- ``cohort.csv``: the manifest, file paths re-based on ``DIR``, the mask columns filled where they
  were empty, ``image_roi_source`` / ``video_roi_source`` = manual | predicted_box | predicted_auto;
- ``summary.json``: the model folder and its segmenter.json's sha256 (the run's link to the segmenter,
  ``segment.link``), the ROI-source counts, the segmenter's cross-validated metrics;
- ``segments.csv`` (per picture: mode, frame, area, the folds' agreement, review flag),
  ``failures.csv``, ``sheets/contours_NNN.png`` (contours over the pictures).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import atomic_path, claim, sha256_file, write_csv, write_json
from ceusfusion.core.runtime import resolve_device
from ceusfusion.figures.segment import Tile, contour_sheet
from ceusfusion.ingest.cohort import FILE_COLUMNS, absolute, load_cohort, merge_boxes, read_manifest
from ceusfusion.segment.data import MODALITIES, Sample, has, load_picture
from ceusfusion.segment.infer import PRECISIONS, Result, Segmenter, segment
from ceusfusion.segment.link import PREDICT_KIND
from ceusfusion.segment.net import load_net
from ceusfusion.segment.record import RECORD_NAME, SegmenterRecord, read_record

ROI_SOURCE = {"image": "image_roi_source", "video": "video_roi_source"}
SOURCES = ("manual", "predicted_box", "predicted_auto")
SHEET_TILES = 48


def load_segmenter(folder: Path, rec: SegmenterRecord, device: str = "auto", precision: str = "float32") -> Segmenter:
    dev = resolve_device(device)
    nets = [load_net(Path(folder) / f, rec.encoder, tuple(rec.decoder)).to(dev) for f in rec.fold_files]
    return Segmenter(nets, rec.size, rec.context, rec.mean, rec.std, dev, precision=precision)


def source_geometry(path: Path) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) of a 3-D one-slice image over ``path``'s pixels: the source's own when ITK
    reads its header (PNG, JPG, BMP, TIFF, DICOM), ITK-SNAP's defaults for a 2-D picture otherwise (a video)."""
    try:
        r = sitk.ImageFileReader()
        r.SetFileName(str(path))
        r.ReadImageInformation()
        sp, org, d = r.GetSpacing(), r.GetOrigin(), r.GetDirection()
    except RuntimeError:
        return (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    if len(sp) == 2:
        return (*sp, 1.0), (*org, 0.0), (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    return tuple(sp[:3]), tuple(org[:3]), tuple(d[:9])


def write_nifti(path: Path, mask: np.ndarray, source: Path) -> None:
    """A 2-D mask as ITK-SNAP saves the segmentation of a 2-D picture: one uint8 slice, the source's geometry."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8)[None]))
    spacing, origin, direction = source_geometry(source)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), True)


@dataclass
class Outcome:
    """What predict did for the cohort: a row per picture, the failures, the tiles of the contact sheet."""

    segments: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    tiles: list[Tile] = field(default_factory=list)
    sources: dict[tuple[str, str], str] = field(default_factory=dict)  # (case, modality) -> roi source
    masks: dict[tuple[str, str], str] = field(default_factory=dict)  # (case, modality) -> masks/<file>


def predict_picture(seg: Segmenter, s: Sample, out: Path, review_below: float, done: Outcome) -> None:
    """Segment one picture and write its mask; an empty result is a failure naming the case."""
    res, mode = segment(seg, s.frame, s.box)
    if not res.mask.any():
        raise CaseError(s.case_id, str(s.source.name), f"no nodule found ({mode} mode); draw a box "
                        f"({'image_box' if s.modality == 'image' else 'video_box'}) or a mask")
    name = f"masks/{s.case_id}_{s.modality}.nii.gz"
    write_nifti(out / name, res.mask, s.source)
    review = res.agreement < review_below
    key = (s.case_id, s.modality)
    done.sources[key], done.masks[key] = f"predicted_{mode}", name
    done.segments.append(segment_row(s, res, mode, name, review))
    done.tiles.append(Tile(s.frame, res.mask, f"{s.case_id} {s.modality} {res.agreement:.2f}", review))


def segment_row(s: Sample, res: Result, mode: str, name: str, review: bool) -> dict:
    return {"case_id": s.case_id, "modality": s.modality, "roi_source": f"predicted_{mode}", "mask": name,
            "frame_index": s.frame_index, "time_s": s.time, "area_px": int(res.mask.sum()),
            "agreement": round(res.agreement, 4), "review": bool(review)}


def predict_cases(seg: Segmenter, df: pd.DataFrame, cohort: Path, out: Path, review_below: float,
                  on_failure=None) -> Outcome:
    """Every picture of the manifest: a manual mask is kept; the others are segmented; a bad file is one line."""
    done = Outcome()
    for row in df.to_dict(orient="records"):
        for m in MODALITIES:
            if not has(row, m):
                continue
            if has(row, f"{m}_mask"):
                done.sources[(str(row["case_id"]), m)] = "manual"
                continue
            try:
                predict_picture(seg, load_picture(row, m, cohort, with_mask=False), out, review_below, done)
            except CaseError as exc:
                done.failures.append({"case_id": exc.case_id, "modality": m, "file": exc.file or "",
                                      "problem": exc.problem})
                if on_failure:
                    on_failure(exc.case_id, exc.file, exc.problem)
    return done


def rebased(df: pd.DataFrame, cohort: Path, out: Path) -> pd.DataFrame:
    """The manifest's file columns as paths relative to ``out`` (absolute where no relative path exists)."""
    df = df.copy()
    for col in FILE_COLUMNS:
        if col in df.columns:
            df[col] = [_rel(absolute(cohort, v), out) if isinstance(v, str) and v.strip() else v for v in df[col]]
    return df


def _rel(path: Path, out: Path) -> str:
    try:
        return Path(os.path.relpath(path, out.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path)


def output_manifest(df: pd.DataFrame, cohort: Path, out: Path, done: Outcome) -> pd.DataFrame:
    """The manifest with the predicted masks filled in and the ROI source of every picture."""
    res = rebased(df, cohort, out)
    ids = res["case_id"].astype(str)
    for m in MODALITIES:
        if m not in res.columns:
            continue
        col = f"{m}_mask"
        if col not in res.columns:
            res[col] = pd.Series([np.nan] * len(res), dtype=object)
        res[col] = [done.masks.get((c, m), v) for c, v in zip(ids, res[col])]
        res[ROI_SOURCE[m]] = [done.sources.get((c, m), "") for c in ids]
    return res


@dataclass
class PredictSummary:
    out: Path
    counts: dict
    n_review: int
    failures: pd.DataFrame


def segment_predict(cohort: str | Path, model: str | Path, out: str | Path, device: str = "auto",
                    review_below: float = 0.9, force: bool = False, on_failure=None,
                    boxes: str | Path | None = None, precision: str = "float32") -> PredictSummary:
    """Masks for every picture without a manual one; see the module docstring. ``boxes``: a boxes file
    (``ceusfusion annotate``'s BOXES.csv) merged into the manifest first, as ``prepare --boxes`` does.
    ``precision`` "bfloat16" is the opt-in faster path on CPUs with bfloat16 units (slightly different masks;
    BENCHMARKS.md)."""
    cohort, model, out = Path(cohort), Path(model), Path(out)
    if precision not in PRECISIONS:  # before anything is claimed or read
        raise CeusError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    rec = read_record(model)
    df = load_cohort(cohort, boxes)
    names = ("cohort.csv", "segments.csv", "failures.csv", "summary.json")
    claim(out, files=[out / n for n in names], folders=[out / "masks", out / "sheets"], force=force,
          inputs=[cohort, model / RECORD_NAME, *(model / f for f in rec.fold_files), *([Path(boxes)] if boxes else [])])
    seg = load_segmenter(model, rec, device, precision)
    with torch.inference_mode():
        done = predict_cases(seg, df, cohort, out, review_below, on_failure)
    given = merge_boxes(read_manifest(cohort), boxes)[0] if boxes else read_manifest(cohort)
    write_csv(out / "cohort.csv", output_manifest(given, cohort, out, done))
    seg_df = pd.DataFrame(done.segments, columns=["case_id", "modality", "roi_source", "mask", "frame_index",
                                                  "time_s", "area_px", "agreement", "review"])
    write_csv(out / "segments.csv", seg_df)
    fail_df = pd.DataFrame(done.failures, columns=["case_id", "modality", "file", "problem"])
    write_csv(out / "failures.csv", fail_df)
    for i in range(0, len(done.tiles), SHEET_TILES):
        with atomic_path(out / "sheets" / f"contours_{i // SHEET_TILES + 1:03d}.png") as tmp:
            contour_sheet(done.tiles[i:i + SHEET_TILES]).save(tmp, format="PNG")
    counts = {s: sum(v == s for v in done.sources.values()) for s in SOURCES}
    n_review = int(seg_df["review"].sum()) if len(seg_df) else 0
    write_json(out / "summary.json", {"version": 1, "kind": PREDICT_KIND, "model": str(model.resolve()),
                                      "model_sha256": sha256_file(model / RECORD_NAME), "cohort": str(cohort.resolve()),
                                      "roi_sources": counts, "review": n_review, "review_below": review_below,
                                      "precision": precision,
                                      "failed": len(fail_df), "segmenter_cv": rec.cv})
    return PredictSummary(out, counts, n_review, fail_df)
