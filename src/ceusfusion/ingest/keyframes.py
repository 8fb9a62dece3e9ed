"""Keyframe sampling policies, with the time–intensity curve measured in the same streamed pass.

The reference study samples one frame every ``period`` seconds, keeps the
frames where the nodule is visible, takes as centre the frame with the largest
nodule diameter (a mask per frame) or the peak-enhancement frame (one 2-D
mask, or none), and picks ``n`` frames at equal time intervals around it
(``n // 2`` before), shifted to stay inside the visible part of the video.

One decoding pass does everything: frames nearest to each sampling time are
converted to numpy (the others are only decoded), cut to the region of
interest when it is already known, and every frame feeds the time–intensity
curve (TIC, measured by ``perfusion.TicRecorder``) from the luma plane without
conversion. A second, index-targeted pass is needed only when the visible
part is too short for the sampling grid (then the ``n`` frames spread evenly
over it).

Policies: ``study`` (above), ``peak`` (centre = peak enhancement even with a
mask per frame), ``uniform`` (``n`` frames evenly over the visible part).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.perfusion import TIC, TicRecorder
from ceusfusion.ingest.roi import Box, max_diameter, shift_mask
from ceusfusion.io.video import Frame, VideoInfo, VideoStream

POLICIES = ("study", "uniform", "peak")


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




def select_keyframes(
    path: str | Path,
    mask: np.ndarray | None = None,
    params: KeyframeParams = KeyframeParams(),
    region: "Box | Callable[[tuple[int, int]], Box] | None" = None,
    tic: bool = True,
    shifts: np.ndarray | None = None,
) -> Selection:
    """Pick keyframes (and measure the TIC) in one streamed pass; see the module docstring.

    ``mask``: None, one (H, W) mask for every frame, or (T, H, W) per frame.
    ``region``: where the ROI lies when already known (None or a 2-D mask);
    kept frames are cut to it at once. Must lie inside the frame. A callable
    gets the frame shape (H, W) from the header and returns the box.
    ``shifts``: (T, 2) whole-pixel (dy, dx) of a 2-D mask in each decoded frame (a tracked ROI,
    ``ingest.track``): scores and the TIC follow it; full frames are kept (each is cut at its own box).
    """
    per_frame = mask is not None and mask.ndim == 3
    if per_frame or shifts is not None:
        region = None  # the box is the union over the selected frames, or moves: known only afterwards
    with VideoStream(path) as vs:
        info = vs.info
        _check_mask_shape(mask, info, path)
        if callable(region):
            region = region((info.height, info.width))
        step = _grid_step(info, params)
        sampler = _Sampler(mask, params, region, shifts)
        recorder = TicRecorder(mask, params.ring, shifts) if (tic and mask is not None) else None
        all_times = _stream(vs, info, step, sampler, recorder, path)
        n_decoded = vs.n_decoded
    _check_decoded(mask, n_decoded, params, path)
    _check_times(all_times, path)
    note = ""
    if len(sampler.samples) >= params.n:
        chosen, centre = _choose(sampler.samples, params)
    else:
        chosen, step = _spread_over_visible(path, mask, params, region, all_times, n_decoded)
        centre, note = None, "visible part shorter than the sampling grid: frames spread evenly over it"
    frames, is_gray = _decide_colour([s.array for s in chosen], params)
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
        duration=float(all_times[-1]),
        note=note,
        tic=recorder.curve() if recorder is not None else None,
        meta={"params": asdict(params)},
    )


def _check_mask_shape(mask: np.ndarray | None, info: VideoInfo, path) -> None:
    """A mask drawn on another video (other size) would crop the wrong pixels: refuse it before decoding."""
    if mask is not None and tuple(mask.shape[-2:]) != (info.height, info.width):
        mh, mw = mask.shape[-2:]
        raise CeusError(f"{path}: the mask is {mw}x{mh} px but the video is {info.width}x{info.height} px")


def _grid_step(info: VideoInfo, params: KeyframeParams) -> float:
    """Seconds between grid times: ``period``, finer for a short video so that n samples still fit one pass.

    ``uniform`` spreads the n samples over the whole (header) duration.
    """
    est = None
    if info.duration_s:
        est = info.duration_s - (1.0 / info.fps if info.fps else 0.0)
    step = params.period
    if est and est > 0 and params.n > 1:
        if params.policy == "uniform":
            step = est / (params.n - 1)
        else:
            step = min(step, est / (params.n - 1))
    return step


def _frame_mask(mask: np.ndarray | None, k: int) -> np.ndarray | None:
    if mask is None:
        return None
    if mask.ndim == 2:
        return mask
    return mask[k] if k < mask.shape[0] else None


def _cut(arr: np.ndarray, region: Box | None) -> np.ndarray:
    """The region of a frame as an array of its own (the full frame is not kept)."""
    if region is None:
        return arr
    return np.ascontiguousarray(arr[region[0] : region[2], region[1] : region[3]])


class _Sampler:
    """Turns the frames picked on the sampling grid into candidates: a score (for the centre) and the kept pixels."""

    def __init__(self, mask: np.ndarray | None, params: KeyframeParams, region: Box | None, shifts: np.ndarray | None = None):
        self.mask = mask
        self.shifts = shifts
        self.params = params
        self.region = region
        self.per_frame = mask is not None and mask.ndim == 3
        self.gray = params.color == "gray"
        self.samples: list[_Sample] = []

    def emit(self, fr: Frame) -> None:
        """Keep a grid frame once (two grid times may pick the same frame), if the nodule is visible in it."""
        if self.samples and self.samples[-1].index == fr.index:
            return
        fm = _frame_mask(self.mask, fr.index)
        if self.shifts is not None and fm is not None and fr.index < len(self.shifts):
            fm = shift_mask(fm, self.shifts[fr.index])
        if self.per_frame and (fm is None or not fm.any()):
            return  # nodule not visible: not a candidate
        score = self._score(fr, fm)
        self.samples.append(_Sample(fr.index, fr.time, _cut(fr.to_array(self.gray), self.region), score))

    def _score(self, fr: Frame, fm: np.ndarray | None) -> float:
        """What the centre maximises: the nodule's diameter (study, mask per frame) or the enhancement."""
        policy = self.params.policy
        if policy == "uniform":
            return 0.0
        if self.per_frame and policy == "study":
            return max_diameter(fm)
        luma = fr.luma()
        if fm is not None:
            return float(luma[fm].mean())
        if self.region is not None:
            r = self.region
            return float(luma[r[0] : r[2], r[1] : r[3]].mean())
        return float(luma.mean())


def _stream(vs: VideoStream, info: VideoInfo, step: float, sampler: _Sampler, recorder: TicRecorder | None,
            path) -> np.ndarray:
    """The single decoding pass: every frame's time (and TIC value); the frame nearest each grid time is sampled.

    Returns the times of all decoded frames.
    """
    times: list[float] = []
    j = 0  # next grid time: j * step
    prev: Frame | None = None
    for fr in vs:
        if fr.index == 0 and fr.shape != (info.height, info.width):
            raise CeusError(f"{path}: frames are {fr.shape[1]}x{fr.shape[0]} px but the header says {info.width}x{info.height} px")
        times.append(fr.time)
        if recorder is not None:
            recorder.add(fr)
        while fr.time >= j * step - 1e-9:
            target = j * step
            sampler.emit(prev if (prev is not None and target - prev.time <= fr.time - target) else fr)
            j += 1
        prev = fr
    if prev is not None and j * step - prev.time <= step / 2:
        sampler.emit(prev)
    return np.asarray(times)


def _check_decoded(mask: np.ndarray | None, n_decoded: int, params: KeyframeParams, path) -> None:
    """The header's frame count can lie: check the mask and n against the frames actually decoded."""
    if mask is not None and mask.ndim == 3 and mask.shape[0] != n_decoded:
        raise CeusError(f"{path}: the mask has {mask.shape[0]} frames but the video decodes to {n_decoded}")
    if n_decoded < max(2, params.n):
        raise CeusError(f"{path}: video too short: {n_decoded} decodable frame(s), need at least {max(2, params.n)}")


def _check_times(times: np.ndarray, path) -> None:
    """Frame times drive the sampling grid and the TIC fit: equal or decreasing times would give a
    wrong grid silently, or a failed least-squares fit; refuse them with the reason."""
    bad = np.flatnonzero(~np.isfinite(times) | np.r_[False, ~(np.diff(times) > 0)])
    if bad.size:
        k = int(bad[0])
        raise CeusError(f"{path}: frame times are not positive and increasing (frame {k} at {times[k]:g} s): "
                        "frame timing unusable")


def _choose(samples: list[_Sample], params: KeyframeParams) -> tuple[list[_Sample], int | None]:
    """n of the samples, and the centre's frame index: evenly spread (uniform), or n consecutive
    samples around the best score (``n // 2`` before it), shifted to stay inside the samples."""
    if params.policy == "uniform":
        pos = np.round(np.linspace(0, len(samples) - 1, params.n)).astype(int)
        return [samples[int(p)] for p in pos], None
    scores = np.array([s.score for s in samples])
    c = int(np.argmax(scores))
    start = min(max(0, c - params.n // 2), len(samples) - params.n)
    return [samples[int(p)] for p in np.arange(start, start + params.n)], samples[c].index


def _spread_over_visible(path, mask: np.ndarray | None, params: KeyframeParams, region: Box | None,
                         all_times: np.ndarray, n_decoded: int) -> tuple[list[_Sample], float]:
    """Visible part shorter than the grid allows: n frames evenly over it, decoded by a second pass.

    Returns the samples and the mean step between their target times.
    """
    if mask is not None and mask.ndim == 3:
        vis_idx = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    else:
        vis_idx = np.arange(n_decoded)
    if vis_idx.size < params.n:
        raise CeusError(f"{path}: nodule visible in only {vis_idx.size} frame(s) of the video mask; need at least {params.n}")
    targets = np.linspace(all_times[vis_idx][0], all_times[vis_idx][-1], params.n)
    want = sorted(_nearest_distinct(vis_idx, all_times[vis_idx], targets))
    chosen = _decode_indices(path, want, params.color == "gray", region, all_times)
    step = float(np.diff(targets).mean()) if params.n > 1 else 0.0
    return chosen, step


def _nearest_distinct(vis_idx: np.ndarray, vt: np.ndarray, targets: np.ndarray) -> list[int]:
    """For each target time the nearest visible frame; frames closer together than the targets give the
    next free visible frame instead, so that the n frames are distinct."""
    want: list[int] = []
    for t in targets:
        k = int(vis_idx[int(np.argmin(np.abs(vt - t)))])
        if k in want:
            free = [int(i) for i in vis_idx if int(i) not in want and i > k]
            k = free[0] if free else int([i for i in vis_idx if int(i) not in want][-1])
        want.append(k)
    return want


def _decode_indices(path, want: list[int], gray: bool, region: Box | None, all_times: np.ndarray) -> list[_Sample]:
    """Second pass: the frames at the given decode indices, cut to the region."""
    out = []
    wanted = set(want)
    with VideoStream(path) as vs:
        for fr in vs:
            if fr.index in wanted:
                out.append(_Sample(fr.index, float(all_times[fr.index]), _cut(fr.to_array(gray), region), 0.0))
                if len(out) == len(wanted):
                    break
    if len(out) != len(wanted):
        raise CeusError(f"{path}: video decodes differently on a second pass (unstable file)")
    return out


def _decide_colour(frames: list[np.ndarray], params: KeyframeParams) -> tuple[list[np.ndarray], bool]:
    """Frames in the colour mode asked for; ``auto`` stores grey (one channel) when every frame is grey."""
    is_gray = params.color == "gray"
    if params.color == "auto":
        is_gray = all(_near_gray(a) for a in frames)
        if is_gray:
            frames = [a[..., 0].copy() if a.ndim == 3 else a for a in frames]
    elif params.color == "rgb":
        frames = [np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a for a in frames]
    return frames, is_gray


def _near_gray(a: np.ndarray, tol: int = 6) -> bool:
    """True when an RGB frame is grey up to codec chroma noise (99.5% of pixels within ``tol``)."""
    if a.ndim == 2:
        return True
    sub = a[::2, ::2, :3].astype(np.int16)
    d = np.maximum(np.abs(sub[..., 0] - sub[..., 1]), np.abs(sub[..., 1] - sub[..., 2]))
    return float(np.quantile(d, 0.995)) <= tol
