"""ROI crop, resize and the ``prepare`` driver that fills ``RUN/prepared/`` (docs/contracts.md).

Per case: the still is cropped to its mask's bounding box plus a margin,
made square (zero padding where the square leaves the frame) and resized to
S; the video's keyframes (``keyframes.py``) get one box, the union over the
selected frames. Cases without a mask use the whole frame or a fixed crop.
A case whose input files (content hash) and parameters are unchanged since
the last run is skipped. A bad case becomes one line in ``failures.csv``;
the others go through.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.ingest import cache
from ceusfusion.ingest.cohort import FILE_COLUMNS, load_cohort, resolve
from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import atomic_path, sha256_file, write_csv, write_json
from ceusfusion.ingest.keyframes import Box, KeyframeParams, _bbox, select_keyframes

CACHE_VERSION = 1


@dataclass(frozen=True)
class PrepareParams:
    size: int = 256
    frames: int = 5
    period: float = 2.0
    policy: str = "study"
    margin: float = 0.1  # box grows by this share of its larger side, on each side
    crop: tuple[int, int, int, int] | None = None  # x, y, w, h for cases without a mask
    color: str = "auto"
    ring: float = 0.5
    tic_plots: bool = False

    def keyframe_params(self) -> KeyframeParams:
        return KeyframeParams(policy=self.policy, n=self.frames, period=self.period, color=self.color, ring=self.ring)

    def validate(self) -> None:
        if self.size < 8:
            raise CeusError(f"--size must be at least 8, got {self.size}")
        if self.margin < 0:
            raise CeusError(f"--margin must be >= 0, got {self.margin}")
        if self.crop is not None and (len(self.crop) != 4 or self.crop[2] <= 0 or self.crop[3] <= 0):
            raise CeusError(f"--crop must be X,Y,W,H with positive W and H, got {self.crop}")
        self.keyframe_params()


# --------------------------------------------------------------------------- ROI geometry


def square_box(bbox: Box, margin: float, shape: tuple[int, int] | None = None) -> Box:
    """The bbox grown by ``margin`` × its larger side on each side, made square about its centre.

    With the frame ``shape``, a box that would stick out of the frame is shifted back inside
    (along each axis where it fits). Zero padding would otherwise appear at the crop's edge
    with an extent set by the lesion's size and position, a shortcut a network learns
    (Grad-CAM on synthetic data lit up exactly those black borders).
    """
    y0, x0, y1, x1 = bbox
    side = max(y1 - y0, x1 - x0)
    side = max(1, int(round(side * (1 + 2 * margin))))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    top = int(round(cy - side / 2.0))
    left = int(round(cx - side / 2.0))
    if shape is not None:
        h, w = shape
        top = min(max(top, 0), h - side) if side <= h else int(round((h - side) / 2.0))
        left = min(max(left, 0), w - side) if side <= w else int(round((w - side) / 2.0))
    return top, left, top + side, left + side


def fixed_or_whole(shape: tuple[int, int], crop: tuple[int, int, int, int] | None) -> Box:
    """Box of a case without mask: the fixed crop (must lie inside the frame) or the whole frame."""
    h, w = shape
    if crop is None:
        return 0, 0, h, w
    x, y, cw, ch = crop
    if x < 0 or y < 0 or x + cw > w or y + ch > h:
        raise CeusError(f"the fixed crop {x},{y},{cw},{ch} lies outside the {w}x{h} px frame")
    return y, x, y + ch, x + cw


def clip_box(box: Box, shape: tuple[int, int]) -> Box:
    h, w = shape
    return max(0, box[0]), max(0, box[1]), min(h, box[2]), min(w, box[3])


def crop_resize(arr: np.ndarray, box: Box, size: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Cut ``box`` (frame coordinates) from ``arr`` (which starts at ``offset``), zero-pad outside, resize to size×size."""
    from PIL import Image

    y0, x0, y1, x1 = box
    oy, ox = offset
    h, w = arr.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + arr.shape[2:], np.uint8)
    sy0, sx0 = max(y0 - oy, 0), max(x0 - ox, 0)
    sy1, sx1 = min(y1 - oy, h), min(x1 - ox, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 + oy - y0 : sy1 + oy - y0, sx0 + ox - x0 : sx1 + ox - x0] = arr[sy0:sy1, sx0:sx1]
    if out.shape[:2] != (size, size):
        out = np.asarray(Image.fromarray(out).resize((size, size), Image.Resampling.BILINEAR))
    return out


def _mask_box(mask2d: np.ndarray, what: str) -> Box:
    b = _bbox(mask2d)
    if b is None:
        raise CeusError(f"{what} is empty (no foreground pixel)")
    return b


def _union(boxes: list[Box]) -> Box:
    a = np.array(boxes)
    return int(a[:, 0].min()), int(a[:, 1].min()), int(a[:, 2].max()), int(a[:, 3].max())


# --------------------------------------------------------------------------- one case


def prepare_image(path: Path, mask_path: Path | None, p: PrepareParams) -> tuple[np.ndarray, dict]:
    from ceusfusion.io.image import read_image
    from ceusfusion.io.mask import read_mask

    img = read_image(path)
    h, w = img.shape[:2]
    if mask_path is not None:
        m = read_mask(mask_path)
        if m.ndim == 3:
            if m.shape[0] != 1:
                raise CeusError(f"{mask_path}: image mask has {m.shape[0]} slices, expected one")
            m = m[0]
        if m.shape != (h, w):
            raise CeusError(f"{mask_path}: mask is {m.shape[1]}x{m.shape[0]} px but the image is {w}x{h} px")
        bbox = _mask_box(m, f"{mask_path}: mask")
        box = square_box(bbox, p.margin, (h, w))
    else:
        bbox = fixed_or_whole((h, w), p.crop)
        box = square_box(bbox, 0.0)
    return crop_resize(img, box, p.size), {"shape": [h, w], "bbox": list(bbox), "box": list(box), "gray": img.ndim == 2}


def prepare_video(path: Path, mask_path: Path | None, p: PrepareParams) -> tuple[dict, dict, object]:
    """Keyframes → ROI arrays; returns (arrays, keyframes.json entry, Selection)."""
    from ceusfusion.io.mask import read_mask

    mask = read_mask(mask_path) if mask_path is not None else None
    if mask is not None and mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    geo: dict = {}
    if mask is not None and mask.ndim == 3 and not mask.any():
        raise CeusError(f"{mask_path}: mask is empty in every frame")

    def region(shape: tuple[int, int]) -> Box:
        """Box known before decoding (one 2-D mask, or none): frames are cut to it as they are kept."""
        if mask is not None:
            if mask.shape != shape:
                raise CeusError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} px but the video is {shape[1]}x{shape[0]} px")
            geo["bbox"] = _mask_box(mask, f"{mask_path}: mask")
            geo["box"] = square_box(geo["bbox"], p.margin, shape)
        else:
            geo["bbox"] = fixed_or_whole(shape, p.crop)
            geo["box"] = square_box(geo["bbox"], 0.0)
        return clip_box(geo["box"], shape)

    per_frame = mask is not None and mask.ndim == 3
    sel = select_keyframes(path, mask, p.keyframe_params(), region=None if per_frame else region, tic=mask is not None)
    if per_frame:  # union over the selected frames
        bbox = _union([_bbox(mask[k]) for k in sel.frame_index])
        box = square_box(bbox, p.margin, mask.shape[1:])
    else:
        bbox, box = geo["bbox"], geo["box"]
    offset = (sel.region[0], sel.region[1]) if sel.region is not None else (0, 0)
    video = np.stack([crop_resize(f, box, p.size, offset) for f in sel.frames])
    entry = {
        "times": sel.times.round(4).tolist(), "frame_index": sel.frame_index.tolist(),
        "bbox": list(bbox), "box": list(box), "frame_shape": list(sel.frame_shape),
        "policy": p.policy, "n": p.frames, "period": p.period, "step": round(sel.step, 4),
        "centre_index": sel.centre, "n_decoded": sel.n_decoded, "duration": round(sel.duration, 4),
        "gray": sel.gray, "mask": "none" if mask is None else ("per-frame" if mask.ndim == 3 else "2d"),
    }
    if sel.note:
        entry["note"] = sel.note
    arrays = {"video": video, "times": sel.times.astype(np.float64), "frame_index": sel.frame_index.astype(np.int64)}
    return arrays, entry, sel


def case_hash(files: dict[str, Path], p: PrepareParams) -> str:
    """Hash of the input files' contents and the parameters: equal hash → the cached case is valid."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "params": asdict(p)}, sort_keys=True).encode())
    for col in sorted(files):
        h.update(col.encode())
        h.update(sha256_file(files[col]).encode() if files[col].is_file() else b"missing")
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


def process_case(run: Path, case_id: str, files: dict[str, Path], rel: dict[str, str], p: PrepareParams, previous: dict | None) -> CaseResult:
    """Prepare one case; never raises for bad input (the failure is in the result)."""
    col = None
    try:
        h = case_hash(files, p)
        if previous and previous.get("hash") == h and cache.case_path(run, case_id).is_file():
            return CaseResult(case_id, True, h, skipped=True, has_image="image" in files, has_video="video" in files,
                              keyframes=previous, perfusion=previous.get("_perfusion"))
        arrays: dict[str, np.ndarray] = {}
        entry: dict = {"hash": h}
        perf = None
        if "image" in files:
            col = "image" if "image_mask" not in files else "image/image_mask"
            img, meta = prepare_image(files["image"], files.get("image_mask"), p)
            arrays["image"] = img
            entry["image"] = meta
        if "video" in files:
            col = "video" if "video_mask" not in files else "video/video_mask"
            vid, meta, sel = prepare_video(files["video"], files.get("video_mask"), p)
            arrays.update(vid)
            entry["video"] = meta
            if sel.tic is not None:
                from ceusfusion.ingest.perfusion import perfusion_parameters

                perf = perfusion_parameters(sel.tic)
                if p.tic_plots:
                    _tic_plot(run, case_id, sel.tic, perf)
        col = None
        cache.save_case(run, case_id, **arrays)
        write_sheet(run, case_id, arrays, entry)
        entry["_perfusion"] = perf
        return CaseResult(case_id, True, h, has_image="image" in arrays, has_video="video" in arrays, keyframes=entry, perfusion=perf)
    except CeusError as exc:
        return CaseResult(case_id, False, file=_which(col, rel), problem=_relative(str(exc), files, rel))
    except Exception as exc:  # decoder / filesystem trouble we did not foresee stays with its case
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        return CaseResult(case_id, False, file=_which(col, rel), problem=_relative(f"unexpected {exc.__class__.__name__}: {first}", files, rel))


def _which(col: str | None, rel: dict[str, str]) -> str | None:
    if col is None:
        return None
    return ";".join(rel[c] for c in col.split("/") if c in rel)


def _relative(msg: str, files: dict[str, Path], rel: dict[str, str]) -> str:
    """Messages name the manifest's relative path, not the absolute one."""
    for c, pth in files.items():
        msg = msg.replace(str(pth), rel[c])
    return msg


def _tic_plot(run: Path, case_id: str, tic, perf: dict) -> None:
    import matplotlib.pyplot as plt

    from ceusfusion.core.fsutil import savefig
    from ceusfusion.ingest.perfusion import plot_tic

    fig = plot_tic(tic, perf, case_id)
    savefig(fig, cache.prepared_dir(run) / "tic" / f"{case_id}.png")
    plt.close(fig)


def write_sheet(run: Path, case_id: str, arrays: dict, entry: dict, tile: int = 160) -> Path:
    """Contact sheet: the still and the keyframes side by side with their times (quick visual QC)."""
    from PIL import Image, ImageDraw

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
    path = cache.prepared_dir(run) / "sheets" / f"{case_id}.png"
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


def _load_previous(run: Path) -> dict:
    prev: dict = {}
    kf = cache.prepared_dir(run) / "keyframes.json"
    if kf.is_file():
        try:
            prev = json.loads(kf.read_text()).get("cases", {})
        except (json.JSONDecodeError, AttributeError):
            return {}
    perf = cache.prepared_dir(run) / "perfusion.csv"
    if perf.is_file() and prev:
        try:
            pf = pd.read_csv(perf, dtype={"case_id": str})
            for r in pf.to_dict(orient="records"):
                if r["case_id"] in prev:
                    prev[r["case_id"]]["_perfusion"] = {k: v for k, v in r.items() if k != "case_id"}
        except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError):
            pass
    return prev


def _case_files(df: pd.DataFrame, manifest: Path) -> list[tuple[str, dict, dict]]:
    out = []
    for r in df.to_dict(orient="records"):
        files, rel = {}, {}
        for col in FILE_COLUMNS:
            v = r.get(col)
            if col in df.columns and isinstance(v, str) and v.strip():
                rel[col] = v
                files[col] = resolve(manifest, v).resolve()
        out.append((str(r["case_id"]), files, rel))
    return out


def prepare(cohort: str | Path, run: str | Path, params: PrepareParams = PrepareParams(), workers: int = 1,
            strict: bool = False, progress: bool = True, on_failure=None) -> PrepareSummary:
    """Fill RUN/prepared/ for every case of the manifest; see the module docstring.

    ``on_failure(case_id, file, problem)`` is called as failures happen (the CLI prints them).
    ``strict`` stops at the first failure with a CeusError (failures.csv is still written).
    """
    params.validate()
    cohort, run = Path(cohort), Path(run)
    df = load_cohort(cohort)
    run.mkdir(parents=True, exist_ok=True)
    pdir = cache.prepared_dir(run)
    write_csv(run / "cohort.csv", _absolute_paths(df, cohort))
    previous = _load_previous(run)
    tasks = _case_files(df, cohort)
    results: dict[str, CaseResult] = {}
    failed: list[CaseResult] = []

    def record(res: CaseResult) -> None:
        results[res.case_id] = res
        if not res.ok:
            failed.append(res)
            if on_failure:
                on_failure(res.case_id, res.file, res.problem)

    prog = _progress(progress, len(tasks))
    try:
        if workers <= 1:
            for cid, files, rel in tasks:
                record(process_case(run, cid, files, rel, params, previous.get(cid)))
                prog.advance()
                if strict and failed:
                    break
        else:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                futs = [ex.submit(process_case, run, cid, files, rel, params, previous.get(cid)) for cid, files, rel in tasks]
                for fut in as_completed(futs):
                    record(fut.result())
                    prog.advance()
                    if strict and failed:
                        for f in futs:
                            f.cancel()
                        break
    finally:
        prog.close()

    fail_df = pd.DataFrame([{"case_id": r.case_id, "file": r.file or "", "problem": r.problem} for r in failed],
                           columns=["case_id", "file", "problem"])
    write_csv(pdir / "failures.csv", fail_df)
    if strict and failed:
        r = failed[0]
        raise CaseError(r.case_id, r.file, r.problem)
    _write_outputs(run, df, tasks, results, params)
    n_ok = sum(r.ok for r in results.values())
    return PrepareSummary(run, len(tasks), n_ok, sum(r.skipped for r in results.values()), fail_df)


def _absolute_paths(df: pd.DataFrame, manifest: Path) -> pd.DataFrame:
    out = df.copy()
    for col in FILE_COLUMNS:
        if col in out.columns:
            out[col] = [str(resolve(manifest, v).resolve()) if isinstance(v, str) and v.strip() else v for v in out[col]]
    return out


def _write_outputs(run: Path, df: pd.DataFrame, tasks, results: dict[str, CaseResult], params: PrepareParams) -> None:
    pdir = cache.prepared_dir(run)
    order = [cid for cid, _, _ in tasks]
    rows, kf, perf = [], {}, []
    by_id = df.set_index(df["case_id"].astype(str))
    for cid in order:
        res = results.get(cid)
        if res is None or not res.ok:
            for stale in (cache.case_path(run, cid), pdir / "sheets" / f"{cid}.png", pdir / "tic" / f"{cid}.png"):
                if stale.is_file():
                    stale.unlink()
            continue
        r = by_id.loc[cid]
        rows.append({"case_id": cid, "label": int(r["label"]), "split": r.get("split", ""), "group": r["group"],
                     "center": r.get("center", ""), "has_image": int(res.has_image), "has_video": int(res.has_video), "hash": res.hash})
        entry = {k: v for k, v in res.keyframes.items() if k != "_perfusion"}
        kf[cid] = entry
        if res.perfusion:
            perf.append({"case_id": cid, **res.perfusion})
    index = pd.DataFrame(rows, columns=cache.INDEX_COLUMNS)
    write_csv(pdir / "index.csv", index)
    write_json(pdir / "keyframes.json", {"version": CACHE_VERSION, "params": asdict(params), "cases": kf})
    from ceusfusion.ingest.perfusion import COLUMNS

    write_csv(pdir / "perfusion.csv", pd.DataFrame(perf, columns=["case_id"] + COLUMNS))


class _progress:
    """A rich progress bar on a terminal; silent otherwise."""

    def __init__(self, enabled: bool, total: int):
        self.p = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
            self.p.start()
            self.task = self.p.add_task("prepare", total=total)

    def advance(self) -> None:
        if self.p is not None:
            self.p.advance(self.task)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()
