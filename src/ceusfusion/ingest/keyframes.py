"""Keyframe sampling policies and the time–intensity curve, in one streamed pass.

The reference study samples one frame every ``period`` seconds, keeps the
frames where the nodule is visible, takes as centre the frame with the largest
nodule diameter (a mask per frame) or the peak-enhancement frame (one 2-D
mask, or none), and picks ``n`` frames at equal time intervals around it
(``n // 2`` before), shifted to stay inside the visible part of the video.

One decoding pass does everything: frames nearest to each sampling time are
converted to numpy (the others are only decoded), cut to the region of
interest when it is already known, and the ROI mean of every frame feeds the
time–intensity curve (TIC) from the luma plane without conversion. A second,
index-targeted pass is needed only when the visible part is too short for the
sampling grid (then the ``n`` frames spread evenly over it).

Policies: ``study`` (above), ``peak`` (centre = peak enhancement even with a
mask per frame), ``uniform`` (``n`` frames evenly over the visible part).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ceusfusion.core.errors import CeusError
from ceusfusion.io.video import Frame, VideoStream

POLICIES = ("study", "uniform", "peak")
Box = tuple[int, int, int, int]  # y0, x0, y1, x1 (end exclusive)


@dataclass(frozen=True)
class KeyframeParams:
    policy: str = "study"
    n: int = 5
    period: float = 2.0  # seconds between sampled frames
    color: str = "auto"  # auto | gray | rgb
    ring: float = 0.5  # parenchyma ring width, as a share of the nodule's equivalent radius

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise CeusError(f"unknown keyframe policy {self.policy!r} (choose {', '.join(POLICIES)})")
        if self.n < 1:
            raise CeusError(f"--frames must be at least 1, got {self.n}")
        if not self.period > 0:
            raise CeusError(f"--period must be positive, got {self.period}")
        if self.color not in ("auto", "gray", "rgb"):
            raise CeusError(f"unknown colour mode {self.color!r} (auto, gray or rgb)")


@dataclass
class TIC:
    """Time–intensity curve: mean luma inside the nodule and in a surrounding ring, per frame."""

    times: np.ndarray
    lesion: np.ndarray
    ring: np.ndarray


@dataclass
class Selection:
    times: np.ndarray  # (T,) seconds
    frame_index: np.ndarray  # (T,) int64
    frames: list[np.ndarray]  # cut to ``region`` (y0, x0 of the frame); full frames if region is None
    region: Box | None
    frame_shape: tuple[int, int]
    gray: bool
    centre: int | None  # frame index of the centre frame (study / peak)
    step: float  # seconds between sampled frames actually used
    n_decoded: int
    duration: float  # time of the last decoded frame
    note: str = ""
    tic: TIC | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class _Sample:
    index: int
    time: float
    array: np.ndarray
    score: float


def _bbox(mask: np.ndarray) -> Box | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def max_diameter(mask: np.ndarray, n_angles: int = 36) -> float:
    """Largest caliper (Feret) diameter of a 2-D mask in pixels, over ``n_angles`` directions."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    ang = np.linspace(0, np.pi, n_angles, endpoint=False)
    proj = np.outer(xs, np.cos(ang)) + np.outer(ys, np.sin(ang))
    return float((proj.max(axis=0) - proj.min(axis=0)).max() + 1.0)


class _RoiMeter:
    """Mean luma inside a mask and inside a ring around it, computed on the mask's bounding box only."""

    def __init__(self, mask: np.ndarray, ring: float):
        from scipy.ndimage import distance_transform_edt

        h, w = mask.shape
        b = _bbox(mask)
        if b is None:
            self.empty = True
            return
        self.empty = False
        area = float(mask.sum())
        width = max(2, int(round(ring * np.sqrt(area / np.pi))))
        y0, x0 = max(0, b[0] - width), max(0, b[1] - width)
        y1, x1 = min(h, b[2] + width), min(w, b[3] + width)
        self.sl = (slice(y0, y1), slice(x0, x1))
        m = mask[self.sl]
        dist = distance_transform_edt(~m)
        self.lesion = m
        self.ring = (dist > 0) & (dist <= width)
        self.n_lesion = int(m.sum())
        self.n_ring = int(self.ring.sum())

    def measure(self, frame: Frame) -> tuple[float, float]:
        """Means in full-range grey units (the luma plane is read without conversion, then rescaled)."""
        if self.empty:
            return np.nan, np.nan
        a, b = frame.luma_to_full()
        crop = frame.luma()[self.sl]
        les = float(crop[self.lesion].mean()) * a + b
        ring = float(crop[self.ring].mean()) * a + b if self.n_ring else np.nan
        return les, ring


def _frame_mask(mask: np.ndarray | None, k: int) -> np.ndarray | None:
    if mask is None:
        return None
    if mask.ndim == 2:
        return mask
    return mask[k] if k < mask.shape[0] else None


def select_keyframes(
    path: str | Path,
    mask: np.ndarray | None = None,
    params: KeyframeParams = KeyframeParams(),
    region: "Box | Callable[[tuple[int, int]], Box] | None" = None,
    tic: bool = True,
) -> Selection:
    """Pick keyframes (and measure the TIC) in one streamed pass; see the module docstring.

    ``mask``: None, one (H, W) mask for every frame, or (T, H, W) per frame.
    ``region``: where the ROI lies when already known (None or a 2-D mask);
    kept frames are cut to it at once. Must lie inside the frame. A callable
    gets the frame shape (H, W) from the header and returns the box.
    """
    per_frame = mask is not None and mask.ndim == 3
    if per_frame:
        region = None  # the box is the union over the selected frames: known only afterwards
    with VideoStream(path) as vs:
        info = vs.info
        if mask is not None and tuple(mask.shape[-2:]) != (info.height, info.width):
            mh, mw = mask.shape[-2:]
            raise CeusError(f"mask is {mw}x{mh} px but the video is {info.width}x{info.height} px")
        if callable(region):
            region = region((info.height, info.width))
        visible = mask.reshape(mask.shape[0], -1).any(axis=1) if per_frame else None
        # a short video gets a finer grid, so that n samples still fit one pass
        est = None
        if info.duration_s:
            est = info.duration_s - (1.0 / info.fps if info.fps else 0.0)
        step = params.period
        if est and est > 0 and params.n > 1:
            if params.policy == "uniform":
                step = est / (params.n - 1)
            else:
                step = min(step, est / (params.n - 1))
        gray = params.color == "gray"
        meter = None
        if tic and mask is not None and not per_frame:
            meter = _RoiMeter(mask, params.ring)
        roi_for_score = None
        if not per_frame or params.policy == "peak":
            roi_for_score = mask if (mask is not None and not per_frame) else None

        samples: list[_Sample] = []
        times: list[float] = []
        les: list[float] = []
        ring: list[float] = []
        state = {"j": 0}
        prev: Frame | None = None

        def emit(fr: Frame) -> None:
            if samples and samples[-1].index == fr.index:
                return
            fm = _frame_mask(mask, fr.index)
            if per_frame and (fm is None or not fm.any()):
                return  # nodule not visible: not a candidate
            luma = fr.luma()
            if params.policy == "uniform":
                score = 0.0
            elif per_frame and params.policy == "study":
                score = max_diameter(fm)
            else:
                m = fm if per_frame else roi_for_score
                if m is not None:
                    score = float(luma[m].mean())
                elif region is not None:
                    score = float(luma[region[0] : region[2], region[1] : region[3]].mean())
                else:
                    score = float(luma.mean())
            arr = fr.to_array(gray)
            if region is not None:
                arr = np.ascontiguousarray(arr[region[0] : region[2], region[1] : region[3]])
            samples.append(_Sample(fr.index, fr.time, arr, score))

        for fr in vs:
            if fr.index == 0 and fr.shape != (info.height, info.width):
                raise CeusError(f"frames are {fr.shape[1]}x{fr.shape[0]} px but the header says {info.width}x{info.height} px")
            times.append(fr.time)
            if tic and mask is not None:
                if per_frame:
                    fm = _frame_mask(mask, fr.index)
                    l_, r_ = (_RoiMeter(fm, params.ring).measure(fr) if fm is not None and fm.any() else (np.nan, np.nan))
                else:
                    l_, r_ = meter.measure(fr)
                les.append(l_)
                ring.append(r_)
            while fr.time >= state["j"] * step - 1e-9:
                target = state["j"] * step
                pick = prev if (prev is not None and target - prev.time <= fr.time - target) else fr
                emit(pick)
                state["j"] += 1
            prev = fr
        if prev is not None and state["j"] * step - prev.time <= step / 2:
            emit(prev)
        n_decoded = vs.n_decoded

    all_times = np.asarray(times)
    if per_frame and mask.shape[0] != n_decoded:
        raise CeusError(f"the mask has {mask.shape[0]} frames but the video decodes to {n_decoded}")
    if n_decoded < max(2, params.n):
        raise CeusError(f"video too short: {n_decoded} decodable frame(s), need at least {max(2, params.n)}")
    sel_tic = TIC(all_times, np.asarray(les), np.asarray(ring)) if (tic and mask is not None) else None
    duration = float(all_times[-1])
    centre = None
    note = ""
    if len(samples) >= params.n:
        if params.policy == "uniform":
            pos = np.round(np.linspace(0, len(samples) - 1, params.n)).astype(int)
        else:
            scores = np.array([s.score for s in samples])
            c = int(np.argmax(scores))
            before = params.n // 2
            start = min(max(0, c - before), len(samples) - params.n)
            pos = np.arange(start, start + params.n)
            centre = samples[c].index
        chosen = [samples[int(p)] for p in pos]
    else:
        # visible part shorter than the grid allows: n frames evenly over it (second pass)
        vis_idx = np.flatnonzero(visible) if per_frame else np.arange(n_decoded)
        if vis_idx.size < params.n:
            raise CeusError(f"nodule visible in only {vis_idx.size} frame(s) of the video mask; need at least {params.n}")
        vt = all_times[vis_idx]
        targets = np.linspace(vt[0], vt[-1], params.n)
        want = []
        for t in targets:
            k = int(vis_idx[int(np.argmin(np.abs(vt - t)))])
            if k in want:  # frames closer together than targets: take the next free visible frame
                free = [int(i) for i in vis_idx if int(i) not in want and i > k]
                k = free[0] if free else int([i for i in vis_idx if int(i) not in want][-1])
            want.append(k)
        want = sorted(want)
        chosen = _decode_indices(path, want, gray, region, all_times)
        step = float(np.diff(targets).mean()) if params.n > 1 else 0.0
        note = "visible part shorter than the sampling grid: frames spread evenly over it"

    frames = [s.array for s in chosen]
    is_gray = gray
    if params.color == "auto":
        is_gray = all(_near_gray(a) for a in frames)
        if is_gray:
            frames = [a[..., 0].copy() if a.ndim == 3 else a for a in frames]
    elif params.color == "rgb":
        frames = [np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a for a in frames]
    return Selection(
        times=np.array([s.time for s in chosen], dtype=np.float64),
        frame_index=np.array([s.index for s in chosen], dtype=np.int64),
        frames=frames,
        region=region,
        frame_shape=(info.height, info.width),
        gray=is_gray,
        centre=centre,
        step=float(step),
        n_decoded=n_decoded,
        duration=duration,
        note=note,
        tic=sel_tic,
        meta={"params": asdict(params)},
    )


def _decode_indices(path, want: list[int], gray: bool, region: Box | None, all_times: np.ndarray) -> list[_Sample]:
    out = []
    wanted = set(want)
    with VideoStream(path) as vs:
        for fr in vs:
            if fr.index in wanted:
                arr = fr.to_array(gray)
                if region is not None:
                    arr = np.ascontiguousarray(arr[region[0] : region[2], region[1] : region[3]])
                out.append(_Sample(fr.index, float(all_times[fr.index]), arr, 0.0))
                if len(out) == len(wanted):
                    break
    if len(out) != len(wanted):
        raise CeusError("video decodes differently on a second pass (unstable file)")
    return out


def _near_gray(a: np.ndarray, tol: int = 6) -> bool:
    """True when an RGB frame is grey up to codec chroma noise (99.5% of pixels within ``tol``)."""
    if a.ndim == 2:
        return True
    sub = a[::2, ::2, :3].astype(np.int16)
    d = np.maximum(np.abs(sub[..., 0] - sub[..., 1]), np.abs(sub[..., 1] - sub[..., 2]))
    return float(np.quantile(d, 0.995)) <= tol
