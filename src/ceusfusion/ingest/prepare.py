"""ROI crop, resize and the ``prepare`` driver that fills ``RUN/prepared/`` (docs/contracts.md).

Per case: the still is cropped to its mask's bounding box plus a margin,
made square (zero padding where the square leaves the frame) and resized to
S; the video's keyframes (``keyframes.py``) get one box, the union over the
selected frames. Cases without a mask use the whole frame or a fixed crop.
A case whose input files (content hash) and parameters are unchanged since
the last run is skipped: the hash is stored inside the case's own ``.npz``
with its arrays, so a rerun never trusts arrays of an interrupted run with
other parameters. A bad case becomes one line in ``failures.csv``; the
others go through. ``prepare`` writes only where ceusfusion wrote before
(``core.fsutil.claim``), never over its input manifest.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterator, Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ceusfusion.core.config import StageConfig
from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import (
    RECORD,
    atomic_path,
    claim,
    record_created,
    remove_stale_temps,
    savefig,
    sha256_file,
    write_csv,
)
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.ingest import cache
from ceusfusion.ingest.cohort import ROI_SOURCE_COLUMNS, FILE_COLUMNS, absolute, box_time, load_cohort, read_manifest
from ceusfusion.ingest.keyframes import KeyframeParams, Selection, select_keyframes
from ceusfusion.ingest.track import Track, track_roi
from ceusfusion.ingest.perfusion import COLUMNS as PERFUSION_COLUMNS
from ceusfusion.ingest.perfusion import TIC, fitted_curve, perfusion_parameters
from ceusfusion.ingest.roi import (
    XYWH,
    Box,
    bbox,
    box_mask,
    clip_box,
    crop_resize,
    fixed_or_whole,
    mask_box,
    parse_xywh,
    roi_source,
    shift_box,
    square_box,
    union_box,
    xywh_box,
)
from ceusfusion.io.image import read_image
from ceusfusion.io.mask import read_mask
from ceusfusion.io.video import video_header

__all__ = ["CACHE_VERSION", "ROI_COLUMNS", "roi_source_counts", "PrepareParams", "prepare", "prepare_image", "prepare_video", "case_hash", "process_case",
           "write_sheet", "CaseResult", "PrepareSummary"]

CACHE_VERSION = 1
LATER_DEFAULTS = {"track": "off", "track_px": 3.0}  # PrepareParams fields added after CACHE_VERSION 1, at their default
ROI_COLUMNS = ["image_roi", "video_roi"]  # index.csv: where each case's ROI came from (roi.ROI_SOURCES)


def _switch_word(v):
    """YAML reads a bare on / off as true / false: ``track: on`` in a study config means "on"."""
    return {True: "on", False: "off"}[v] if isinstance(v, bool) else v


TrackChoice = Annotated[Literal["off", "on", "auto"], BeforeValidator(_switch_word)]  # the study section inherits it


class PrepareParams(StageConfig):
    """Everything that defines the prepared arrays (and so the cache hash); run-time options are arguments.

    Invalid values raise :class:`CeusError` at construction, one line naming the option.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)  # hashed: never changed after construction

    size: int = 256
    frames: int = 5
    period: float = 2.0
    policy: str = "study"
    margin: float = 0.1  # box grows by this share of its larger side, on each side
    # the fixed box x, y, w, h cut out of cases without a mask (`prepare --box`; the name stays `crop` in the
    # study YAML, the cache hash and bundles; `train`'s crop is another thing: the side of its random crop)
    crop: tuple[int, ...] | None = None
    color: str = "auto"
    ring: float = 0.5
    tic_plots: bool = False
    # follow the video's ROI through the clip (ingest.track): off; on; auto = only where the measured motion
    # reaches ``track_px`` pixels. Off by default: a clip without measured motion keeps its fixed box.
    track: TrackChoice = "off"
    track_px: float = Field(3.0, ge=0)

    def recorded(self) -> dict:
        """The parameters as hashed and recorded: options added later are left out at their default, so a cache
        prepared before they existed stays valid and a cohort prepared as before is recorded as before."""
        d = self.model_dump()
        for k, v in LATER_DEFAULTS.items():
            if d.get(k) == v:
                d.pop(k)
        return d

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v < 8:
            raise ValueError(f"--size must be at least 8, got {v}")
        return v

    @field_validator("margin")
    @classmethod
    def _margin(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"--margin must be >= 0, got {v}")
        return v

    @field_validator("crop")
    @classmethod
    def _crop(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (len(v) != 4 or v[2] <= 0 or v[3] <= 0):
            raise ValueError(f"the fixed box (prepare --box) must be X,Y,W,H with positive W and H, got {v}")
        return v

    @model_validator(mode="after")
    def _keyframes(self) -> "PrepareParams":
        """Policy, frames, period and colour are checked by their owner, KeyframeParams (raises CeusError)."""
        self.keyframe_params()
        return self

    def keyframe_params(self) -> KeyframeParams:
        return KeyframeParams(policy=self.policy, n=self.frames, period=self.period, color=self.color, ring=self.ring)


# --------------------------------------------------------------------------- one case


def prepare_image(path: Path, mask_path: Path | None, p: PrepareParams, box: XYWH | None = None) -> tuple[np.ndarray, dict]:
    """Still → S×S ROI array; returns (array, keyframes.json entry). ``box`` (x,y,w,h), used where there is no
    mask, is cropped exactly as a mask with that bounding box would be."""
    img = read_image(path)
    h, w = img.shape[:2]
    if mask_path is not None:
        m = read_mask(mask_path, (h, w), of="image")  # size and slices checked from its header, before decoding
        lesion = mask_box(m, f"{mask_path}: mask")
        box = square_box(lesion, p.margin, (h, w))
    elif box is not None:
        lesion = xywh_box(box, (h, w), f"{path}: image_box")
        box = square_box(lesion, p.margin, (h, w))
    else:
        lesion = fixed_or_whole((h, w), p.crop)
        box = square_box(lesion, 0.0)
    return crop_resize(img, box, p.size), {"shape": [h, w], "bbox": list(lesion), "box": list(box), "gray": img.ndim == 2}


def prepare_video(path: Path, mask_path: Path | None, p: PrepareParams, box: XYWH | None = None,
                  box_time: float | None = None) -> tuple[dict, dict, Selection]:
    """Keyframes → ROI arrays; returns (arrays, keyframes.json entry, Selection).

    ``box`` (x,y,w,h), used where there is no mask, stands for a 2-D mask filling the box: the same crop, and
    the TIC measured in the box. With ``p.track`` the ROI (mask or box, drawn on the frame at ``box_time``) is
    followed through the clip (``track.track_roi``): each keyframe is cut at its own box, the TIC in the moving ROI.
    """
    mask, kind = _video_mask(path, mask_path, box)
    per_frame = mask is not None and mask.ndim == 3
    moved = _follow(path, mask, p, box_time) if mask is not None and not per_frame and p.track != "off" else None
    shifts = moved.shifts if moved is not None and moved.used else None
    geo: dict = {}
    region = None if per_frame or shifts is not None else _known_region(mask, mask_path, p, geo)
    sel = select_keyframes(path, mask, p.keyframe_params(), region=region, tic=mask is not None, shifts=shifts)
    if per_frame:  # union over the selected frames
        lesion = union_box([bbox(mask[k]) for k in sel.frame_index])
        box = square_box(lesion, p.margin, mask.shape[1:])
    elif shifts is not None:
        lesion = mask_box(mask, f"{mask_path or path}: ROI")
        box = square_box(lesion, p.margin, mask.shape)
    else:
        lesion, box = geo["bbox"], geo["box"]
    boxes = [box] * len(sel.frames) if shifts is None else [
        square_box(shift_box(lesion, shifts[k]), p.margin, mask.shape) for k in sel.frame_index]
    offset = (sel.region[0], sel.region[1]) if sel.region is not None else (0, 0)
    video = np.stack([crop_resize(f, b, p.size, offset) for f, b in zip(sel.frames, boxes)])
    entry = {
        "times": sel.times.round(4).tolist(), "frame_index": sel.frame_index.tolist(),
        "bbox": list(lesion), "box": list(box), "frame_shape": list(sel.frame_shape),
        "policy": p.policy, "n": p.frames, "period": p.period, "step": round(sel.step, 4),
        "centre_index": sel.centre, "n_decoded": sel.n_decoded, "duration": round(sel.duration, 4),
        "gray": sel.gray, "mask": kind if kind != "box" else "none",
    }
    if sel.note:
        entry["note"] = sel.note
    entry.update(_roi_record(kind, moved, boxes))
    arrays = {"video": video, "times": sel.times.astype(np.float64), "frame_index": sel.frame_index.astype(np.int64)}
    return arrays, entry, sel


def _video_mask(path: Path, mask_path: Path | None, box: XYWH | None) -> tuple[np.ndarray | None, str]:
    """The video's ROI as a mask and its kind: the mask file ("2d" or "per-frame"), the box as a 2-D mask
    filling it ("box"), or none. The mask's header is checked against the video's before any voxel is decoded."""
    if mask_path is None and box is None:
        return None, "none"
    info = video_header(path)
    if mask_path is None:
        return box_mask(xywh_box(box, (info.height, info.width), f"{path}: video_box"), (info.height, info.width)), "box"
    mask = read_mask(mask_path, (info.height, info.width), of="video", frames=info.n_frames)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim == 3 and not mask.any():
        raise CeusError(f"{mask_path}: mask is empty in every frame")
    return mask, "per-frame" if mask.ndim == 3 else "2d"


def _roi_record(kind: str, moved: "Track | None", boxes: list[Box]) -> dict:
    """What the TIC was measured in (mask or box; fixed or followed) and, when followed, the track's record and
    each keyframe's own box."""
    if kind == "none":
        return {"tic_roi": "none"}
    out = {"tic_roi": ("box" if kind == "box" else "mask") if kind != "per-frame" else "mask per frame"}
    if moved is not None:
        out["track"] = moved.record()
        if moved.used:
            out["tic_roi"] = "tracked " + out["tic_roi"]
            out["boxes"] = [list(b) for b in boxes]
    return out


def _follow(path: Path, mask: np.ndarray, p: PrepareParams, box_time: float | None) -> "Track":
    """The ROI followed through the clip from the frame at ``box_time`` (the first when None); with
    ``track: auto`` used only where the measured motion exceeds ``track_px``."""
    moved = track_roi(path, mask_box(mask, f"{path}: ROI"), box_time)
    moved.used = p.track == "on" or moved.motion_px() >= p.track_px
    return moved


def _known_region(mask: np.ndarray | None, mask_path: Path | None, p: PrepareParams, geo: dict) -> Callable[[tuple[int, int]], Box]:
    """The box known before decoding (one 2-D mask, or none), so that frames are cut to it as they are kept.

    It needs the frame shape from the video header: returned as a callable for
    ``select_keyframes``; it stores the lesion's box and the square box in ``geo``.
    """

    def region(shape: tuple[int, int]) -> Box:
        if mask is not None:
            if mask.shape != shape:
                raise CeusError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} px but the video is {shape[1]}x{shape[0]} px")
            geo["bbox"] = mask_box(mask, f"{mask_path}: mask")
            geo["box"] = square_box(geo["bbox"], p.margin, shape)
        else:
            geo["bbox"] = fixed_or_whole(shape, p.crop)
            geo["box"] = square_box(geo["bbox"], 0.0)
        return clip_box(geo["box"], shape)

    return region


def case_hash(files: dict[str, Path], p: PrepareParams, roi: dict | None = None) -> str:
    """Hash of the input files' contents, the parameters and the case's boxes and mask origins (``roi``):
    equal hash → the cached case is valid. A case without any of those hashes as before they existed."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "params": p.recorded()}, sort_keys=True).encode())
    for col in sorted(files):
        h.update(col.encode())
        h.update(sha256_file(files[col]).encode() if files[col].is_file() else b"missing")
    given = {k: v for k, v in (roi or {}).items() if v is not None}
    if given:
        h.update(json.dumps(given, sort_keys=True).encode())
    return h.hexdigest()[:16]


@dataclass
class CaseResult:
    case_id: str
    ok: bool
    hash: str = ""
    skipped: bool = False
    has_image: bool = False
    has_video: bool = False
    keyframes: dict = field(default_factory=dict)
    perfusion: dict | None = None
    file: str | None = None
    problem: str | None = None


def process_case(run: Path, case_id: str, files: dict[str, Path], rel: dict[str, str], p: PrepareParams,
                 roi: dict | None = None) -> CaseResult:
    """Prepare one case; never raises for bad input (the failure is in the result). ``roi``: the case's boxes
    (``image_box``, ``video_box`` as x,y,w,h; ``video_box_time``) and mask origins (``image_roi_source``, ...).

    Skipped only when the record saved inside the case's own .npz has this hash: a record in another
    file could describe arrays that an interrupted run with other parameters has since replaced.
    """
    where: list[str | None] = [None]  # the column being read, for the failure's file
    try:
        roi = roi or {}
        h = case_hash(files, p, roi)
        rec = cache.case_record(run, case_id)
        if rec is not None and rec.get("hash") == h and _extras_present(run, case_id, rec, p):
            return CaseResult(case_id, True, h, skipped=True, has_image="image" in files, has_video="video" in files,
                              keyframes=rec, perfusion=rec.get("_perfusion"))
        for old in _extras(run, case_id):  # a kill below must not leave another run's sheet beside new arrays
            old.unlink(missing_ok=True)
        arrays, entry, tic = _compute(files, p, where, roi)
        perf = perfusion_parameters(tic) if tic is not None else None
        entry = cache.case_entry(h, p.recorded(), **entry, _perfusion=perf)
        cache.save_case(run, case_id, record=entry, **arrays)
        write_sheet(run, case_id, arrays, entry)
        if tic is not None and p.tic_plots:
            _tic_plot(run, case_id, tic, perf)
        return CaseResult(case_id, True, h, has_image="image" in arrays, has_video="video" in arrays, keyframes=entry, perfusion=perf)
    except CeusError as exc:
        return CaseResult(case_id, False, file=_which(where[0], rel), problem=_relative(str(exc), files, rel))
    except Exception as exc:  # decoder / filesystem trouble we did not foresee stays with its case
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return CaseResult(case_id, False, file=_which(where[0], rel), problem=_relative(f"unexpected {exc.__class__.__name__}: {first}", files, rel))


def _compute(files: dict[str, Path], p: PrepareParams, where: list, roi: dict) -> tuple[dict[str, np.ndarray], dict, TIC | None]:
    """The case's arrays, its keyframes.json entry (with where each ROI came from) and its TIC (None without a
    video mask or box); ``where[0]`` names the column being read while it is read."""
    arrays: dict[str, np.ndarray] = {}
    entry: dict = {}
    tic = None
    if "image" in files:
        where[0] = "image" if "image_mask" not in files else "image/image_mask"
        arrays["image"], entry["image"] = prepare_image(files["image"], files.get("image_mask"), p, roi.get("image_box"))
        entry["image"]["roi"] = _source(files, roi, p, "image")
    if "video" in files:
        where[0] = "video" if "video_mask" not in files else "video/video_mask"
        vid, entry["video"], sel = prepare_video(files["video"], files.get("video_mask"), p, roi.get("video_box"),
                                                 roi.get("video_box_time"))
        entry["video"]["roi"] = _source(files, roi, p, "video")
        arrays.update(vid)
        tic = sel.tic
    where[0] = None
    return arrays, entry, tic


def _source(files: dict[str, Path], roi: dict, p: PrepareParams, pic: str) -> str:
    return roi_source(f"{pic}_mask" in files, roi.get(f"{pic}_roi_source"), roi.get(f"{pic}_box") is not None, p.crop is not None)


def _extras(run: Path, case_id: str) -> list[Path]:
    """The case's files beside its arrays: the contact sheet and the TIC plot."""
    layout = RunLayout(run)
    return [layout.sheet(case_id), layout.tic_plot(case_id)]


def _extras_present(run: Path, case_id: str, rec: dict, p: PrepareParams) -> bool:
    sheet, tic = _extras(run, case_id)
    return sheet.is_file() and (not p.tic_plots or not rec.get("_perfusion") or tic.is_file())


def _which(col: str | None, rel: dict[str, str]) -> str | None:
    if col is None:
        return None
    return ";".join(rel[c] for c in col.split("/") if c in rel)


def _relative(msg: str, files: dict[str, Path], rel: dict[str, str]) -> str:
    """Messages name the manifest's relative path, not the absolute one."""
    for c, pth in files.items():
        msg = msg.replace(str(pth), rel[c])
    return msg


def _tic_plot(run: Path, case_id: str, tic: TIC, perf: dict) -> None:
    """RUN/prepared/tic/<case>.png: the TIC with its gamma-variate fit (``--tic-plots``)."""
    # matplotlib is loaded only when plots are asked for: it would slow every worker's start otherwise
    from ceusfusion.figures.perfusion import plot_tic

    fig = plot_tic(tic.times, tic.lesion, tic.ring, case_id, fit=fitted_curve(tic.times, perf), fit_r2=perf.get("gv_r2", np.nan))
    savefig(fig, RunLayout(run).tic_plot(case_id))


def write_sheet(run: Path, case_id: str, arrays: dict, entry: dict, tile: int = 160) -> Path:
    """Contact sheet: the still and the keyframes side by side with their times (quick visual QC)."""
    tiles, labels = [], []
    if "image" in arrays:
        tiles.append(arrays["image"])
        labels.append("image")
    if "video" in arrays:
        for k, (f, t) in enumerate(zip(arrays["video"], arrays["times"])):
            tiles.append(f)
            labels.append(f"#{int(arrays['frame_index'][k])} {t:.1f}s")
    sheet = Image.new("RGB", (tile * len(tiles), tile + 14), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, (a, lab) in enumerate(zip(tiles, labels)):
        im = Image.fromarray(a).convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR)
        sheet.paste(im, (i * tile, 14))
        draw.text((i * tile + 3, 1), lab, fill=(255, 255, 0))
    path = RunLayout(run).sheet(case_id)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


# --------------------------------------------------------------------------- driver


@dataclass
class PrepareSummary:
    run: Path
    n_cases: int
    n_ok: int
    n_skipped: int
    failures: pd.DataFrame


Task = tuple[str, dict, dict, dict]  # case_id, {column: absolute path}, {column: path as in the manifest}, roi (process_case)


def as_given(df: pd.DataFrame, cohort: Path) -> pd.DataFrame:
    """The validated manifest with the ``group`` column only where the user gave one: the case_id filled in for
    a missing group would read, later, as a recorded patient (the report's safeguards tell the two apart)."""
    given = read_manifest(cohort)
    if "group" in given.columns and given["group"].notna().any():
        return df
    return df.drop(columns="group")


def prepare(cohort: str | Path, run: str | Path, params: PrepareParams = PrepareParams(), workers: int = 1,
            strict: bool = False, progress: bool = True, on_failure=None, force: bool = False,
            boxes: str | Path | None = None) -> PrepareSummary:
    """Fill RUN/prepared/ for every case of the manifest; see the module docstring.

    ``boxes``: a boxes file (BOXES.csv) merged into the manifest (``cohort.merge_boxes``); RUN/cohort.csv
    holds the merged boxes, so later stages see what was prepared.
    ``on_failure(case_id, file, problem)`` is called as failures happen (the CLI prints them).
    ``strict`` stops at the first failure with a CeusError (failures.csv is still written).
    ``force``: write RUN/cohort.csv and RUN/prepared/ even where they hold files ceusfusion did not
    write (never over the input manifest).
    """
    cohort, run = Path(cohort), Path(run)
    df = load_cohort(cohort, boxes)
    _claim_run(run, cohort, force, boxes)
    write_csv(RunLayout(run).cohort, _absolute_paths(as_given(df, cohort), cohort))
    tasks = _case_files(df, cohort)
    results: dict[str, CaseResult] = {}
    failed: list[CaseResult] = []
    with _progress(progress, len(tasks)) as prog:
        for res in _run_cases(run, tasks, params, workers, stop=lambda: strict and bool(failed)):
            results[res.case_id] = res
            if not res.ok:
                failed.append(res)
                if on_failure:
                    on_failure(res.case_id, res.file, res.problem)
            prog.advance()
    fail_df = pd.DataFrame([{"case_id": r.case_id, "file": r.file or "", "problem": r.problem} for r in failed],
                           columns=["case_id", "file", "problem"])
    write_csv(RunLayout(run).prepare_failures, fail_df)
    if strict and failed:
        r = failed[0]
        raise CaseError(r.case_id, r.file, r.problem)
    _write_outputs(run, df, tasks, results, params)
    n_ok = sum(r.ok for r in results.values())
    return PrepareSummary(run, len(tasks), n_ok, sum(r.skipped for r in results.values()), fail_df)


def _run_cases(run: Path, tasks: list[Task], params: PrepareParams, workers: int,
               stop: Callable[[], bool]) -> Iterator[CaseResult]:
    """Each case's result as it is done, in this process or in ``workers`` processes (then in completion order).

    ``stop()`` is asked after each result; when true, the cases not started are cancelled.
    """
    if workers <= 1:
        for cid, files, rel, roi in tasks:
            yield process_case(run, cid, files, rel, params, roi)
            if stop():
                return
        return
    with ProcessPoolExecutor(max_workers=workers) as ex:
        futs = [ex.submit(process_case, run, cid, files, rel, params, roi) for cid, files, rel, roi in tasks]
        for fut in as_completed(futs):
            yield fut.result()
            if stop():
                for f in futs:
                    f.cancel()
                return


def _claim_run(run: Path, cohort: Path, force: bool, boxes: Path | str | None = None) -> None:
    """May this prepare write RUN/cohort.csv and RUN/prepared/? Never over the input manifest, and over
    files ceusfusion did not write only with ``force``; a kill's temporary files go."""
    layout = RunLayout(run)
    pdir = layout.prepared
    if not (run / RECORD).exists() and _is_our_cache(layout.keyframes):  # a run prepared before the record existed
        record_created(run, [layout.cohort], [pdir])
    claim(run, files=[layout.cohort], folders=[pdir], force=force, inputs=[cohort, *([Path(boxes)] if boxes else [])])
    remove_stale_temps(run, layout.cohort.name)
    for sub in (pdir, layout.prepared_cases, layout.sheets, layout.tic_plots):
        remove_stale_temps(sub)


def _is_our_cache(keyframes: Path) -> bool:
    try:
        kf = json.loads(keyframes.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(kf, dict) and {"version", "params", "cases"} <= set(kf)


def _case_files(df: pd.DataFrame, manifest: Path) -> list[Task]:
    """One task per manifest row: the case's files, resolved and as written, and its boxes and mask origins."""
    out = []
    for r in df.to_dict(orient="records"):
        files, rel = {}, {}
        for col in FILE_COLUMNS:
            v = r.get(col)
            if col in df.columns and isinstance(v, str) and v.strip():
                rel[col] = v
                files[col] = absolute(manifest, v)
        out.append((str(r["case_id"]), files, rel, _case_roi(r)))
    return out


def _case_roi(r: dict) -> dict:
    """The row's boxes (x,y,w,h), box time (s) and mask origins, parsed (load_cohort has validated them)."""
    def given(col):
        v = r.get(col)
        return v.strip() if isinstance(v, str) and v.strip() else None

    roi = {c: parse_xywh(given(c)) if given(c) else None for c in ("image_box", "video_box")}
    roi["video_box_time"] = box_time(given("video_box_time")) if given("video_box_time") else None
    roi.update({c: given(c) for c in ROI_SOURCE_COLUMNS})
    return roi


def _absolute_paths(df: pd.DataFrame, manifest: Path) -> pd.DataFrame:
    """RUN/cohort.csv: the manifest with absolute paths, so later stages need not know where it was."""
    out = df.copy()
    for col in FILE_COLUMNS:
        if col in out.columns:
            out[col] = [str(absolute(manifest, v)) if isinstance(v, str) and v.strip() else v for v in out[col]]
    return out


def _write_outputs(run: Path, df: pd.DataFrame, tasks: list[Task], results: dict[str, CaseResult], params: PrepareParams) -> None:
    """index.csv, perfusion.csv and, last (it commits the run), keyframes.json, in manifest order; a failed
    case's stale files go."""
    layout = RunLayout(run)
    order = [cid for cid, *_ in tasks]
    rows, kf, perf = [], {}, []
    by_id = df.set_index(df["case_id"].astype(str))
    for cid in order:
        res = results.get(cid)
        if res is None or not res.ok:
            for stale in (layout.prepared_case(cid), *_extras(run, cid)):
                if stale.is_file():
                    stale.unlink()
            continue
        r = by_id.loc[cid]
        rows.append({"case_id": cid, "label": int(r["label"]), "split": r.get("split", ""), "group": r["group"],
                     "center": r.get("center", ""), "has_image": int(res.has_image), "has_video": int(res.has_video), "hash": res.hash,
                     **{c: res.keyframes.get(c.split("_")[0], {}).get("roi", "") for c in ROI_COLUMNS}})
        entry = {k: v for k, v in res.keyframes.items() if k not in ("_perfusion", "params")}
        kf[cid] = entry
        if res.perfusion:
            perf.append({"case_id": cid, **res.perfusion})
    index = pd.DataFrame(rows, columns=cache.INDEX_COLUMNS + ROI_COLUMNS)
    write_csv(layout.prepared_index, index)
    write_csv(layout.perfusion, pd.DataFrame(perf, columns=["case_id"] + PERFUSION_COLUMNS))
    cache.write_run_record(run, CACHE_VERSION, params.recorded(), kf)


def roi_source_counts(index: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """{image|video: {source: {split: cases}}} from index.csv's ROI columns (roi.ROI_SOURCES): what the report,
    Table 1's analysed set and the model card show. An index written before the columns existed gives {}."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    splits = index["split"].fillna("all").astype(str) if "split" in index.columns else pd.Series("all", index=index.index)
    for col in ROI_COLUMNS:
        if col not in index.columns:
            continue
        src = index[col].astype(object).fillna("").astype(str)  # an all-empty column reads as float64
        counts = {s: {str(k): int(v) for k, v in splits[src == s].value_counts().sort_index().items()}
                  for s in sorted(set(src) - {""})}
        if counts:
            out[col.split("_")[0]] = counts
    return out


class _progress:
    """A rich progress bar on a terminal; silent otherwise. A context manager: the bar stops however the run ends."""

    def __init__(self, enabled: bool, total: int):
        self.p = None
        if enabled:
            self.p = Progress(TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
            self.p.start()
            self.task = self.p.add_task("prepare", total=total)

    def __enter__(self) -> "_progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def advance(self) -> None:
        if self.p is not None:
            self.p.advance(self.task)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()
