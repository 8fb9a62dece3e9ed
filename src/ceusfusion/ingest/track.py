"""Follow the nodule through a CEUS clip: the ROI drawn on one frame, moved frame by frame (issue 26).

A clip of 10-120 s moves (breathing, swallowing, the carotid's pulse), so one fixed box lets the
crops drift and the TIC mix nodule and parenchyma. ``track_roi`` decodes the clip once, keeps the
grey window around the ROI (the box grown by ``context`` of its side, at least ``min_patch`` px
across, plus the largest motion searched, ``reach``; a patch over ``max_patch`` px is matched on a grid of
f x f pixel blocks, so a large frame costs no more than a small one) and, from the frame the ROI was drawn on (the
anchor), finds its displacement in every other frame, forward and backward, by normalised
cross-correlation (scikit-image's ``match_template``) of lightly smoothed patches: the smoothing
takes out pixel noise and codec blocks and keeps the speckle, which moves with the tissue (speckle
tracking, as in echocardiography), and the nodule's outline. Each frame is matched

- against the anchor's own patch, near the previous frame's position: no drift where the anatomy
  looks as it did on the anchor;
- against the previous frame's patch where the anchor's no longer matches (the contrast changed the
  picture): a frame-to-frame step;
- neither correlates (before the contrast arrives the window is noise): the position is held.

The result is a whole-pixel displacement per decoded frame (``Track.shifts``, (dy, dx) from the
anchor) with each frame's correlation, and a record for keyframes.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, median_filter

from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.roi import Box, clip_box
from ceusfusion.io.video import VideoStream

METHOD = "ncc-anchor+previous"


@dataclass
class Track:
    times: np.ndarray  # (T,) s, every decoded frame
    shifts: np.ndarray  # (T, 2) int: (dy, dx) of the ROI from its place on the anchor frame (between frames tracked:
    #                     interpolated)
    score: np.ndarray  # (K,) per frame tracked: correlation of the match that placed it (NaN: held)
    how: np.ndarray  # (K,) per frame tracked: 0 anchor, 1 matched to the anchor, 2 frame-to-frame, 3 held
    anchor: int
    box: Box
    used: bool = True  # prepare's choice (track: auto uses it only where motion_px reaches track_px)
    params: dict = field(default_factory=dict)

    def motion_px(self) -> float:
        """The largest displacement from the anchor (pixels): what ``track: auto`` compares with ``track_px``."""
        return float(np.hypot(*self.shifts.T).max()) if self.shifts.size else 0.0

    def record(self) -> dict:
        """keyframes.json's account of the track: method, anchor, how each frame was placed, the motion found."""
        return {"method": METHOD, "used": bool(self.used), "anchor_index": int(self.anchor),
                "anchor_time": round(float(self.times[self.anchor]), 4), "motion_px": round(self.motion_px(), 2),
                "frames": len(self.times), "frames_tracked": len(self.how), "matched_anchor": int((self.how == 1).sum()), "frame_to_frame": int((self.how == 2).sum()),
                "held": int((self.how == 3).sum()), **self.params,
                "frame_shifts": self.shifts.tolist() if self.used else None}  # (dy, dx) of every decoded frame


@dataclass(frozen=True)
class TrackParams:
    context: float = 0.5  # the patch: the box grown by this share of its larger side, on each side ...
    min_patch: int = 64  # ... and at least this many pixels across (a small nodule alone has little to match)
    max_patch: int = 128  # a larger patch is matched on a grid of f x f pixel blocks (f = patch / max_patch, rounded up)
    reach: float = 0.25  # the largest displacement searched from the anchor, as a share of the frame's larger side
    step: int = 4  # the largest move between two frames searched (grid cells; times n when every n-th frame is tracked)
    smooth: float = 1.0  # Gaussian sigma (grid cells) before matching: pixel noise and codec blocks out, speckle kept
    min_score: float = 0.3  # a match below this correlation is not trusted
    memory_mb: int = 512  # the clip's windows kept at most; a longer or larger clip is tracked every n-th frame


@dataclass
class _Clip:
    """The decoded clip as the tracker sees it: every frame's time, the frames tracked, their windows on the grid."""

    times: np.ndarray  # (T,) s
    kept: np.ndarray  # (K,) decode indices of the frames tracked
    windows: np.ndarray  # (K, h, w) float32, smoothed, on the grid of f x f blocks
    patch: Box  # the anchor's patch in window cells
    f: int  # pixels per grid cell
    reach: int  # cells
    step: int  # cells between two frames tracked


def _geometry(box: Box, shape: tuple[int, int], p: TrackParams) -> tuple[int, int, int]:
    """(context, reach, f) in pixels: context and reach whole multiples of the grid's block side f."""
    side = max(box[2] - box[0], box[3] - box[1])
    ctx = max(int(round(p.context * side)), (p.min_patch - side + 1) // 2)
    f = max(1, -(-(side + 2 * ctx) // p.max_patch))
    reach = max(p.step * f, int(round(p.reach * max(shape))))
    return -(-ctx // f) * f, -(-reach // f) * f, f


def track_roi(path: str | Path, box: Box, anchor_time: float | None, params: TrackParams = TrackParams()) -> Track:
    """The ROI ``box`` (y0, x0, y1, x1), drawn on the frame nearest ``anchor_time`` (the first when None),
    followed through every decoded frame of the video; see the module docstring."""
    clip = _decode(path, box, params, anchor_time)
    times, kept = clip.times, clip.kept
    anchor = 0 if anchor_time is None else _anchor_index(times[kept], anchor_time, path)
    n = len(kept)
    shifts = np.zeros((n, 2), np.int64)
    score = np.full(n, np.nan)
    how = np.full(n, 3, np.int8)
    how[anchor] = 0
    for order in (range(anchor + 1, n), range(anchor - 1, -1, -1)):
        prev = anchor
        for k in order:
            shifts[k], score[k], how[k] = _place(clip.windows, clip.patch, anchor, prev, shifts[prev], k, clip.reach,
                                                 clip.step, params.min_score)
            prev = k
    shifts = _despike(shifts) * clip.f
    every = np.stack([np.round(np.interp(times, times[kept], shifts[:, j])) for j in range(2)], 1).astype(np.int64)
    return Track(times, every, score, how, int(kept[anchor]), box,
                 params={"context": params.context, "reach_px": clip.reach * clip.f, "step_px": clip.step * clip.f,
                         "smooth": params.smooth, "grid_px": clip.f, "every_nth_frame": int(kept[1] - kept[0]) if n > 1 else 1})


def _decode(path, box: Box, params: TrackParams, anchor_time: float | None) -> _Clip:
    """One decoding pass: every frame's time, and the window around ``box`` (grown by the context and the reach,
    zero outside the frame) of the frames tracked, as f x f block means, smoothed. Every frame is tracked, or every
    n-th where the windows would exceed ``params.memory_mb``, counted from the anchor's frame as the header's rate
    places it."""
    times, kept, frames = [], [], []
    with VideoStream(path) as vs:
        info = vs.info
        ctx, reach, f = _geometry(box, (info.height, info.width), params)
        bh, bw = -(-(box[2] - box[0]) // f) * f, -(-(box[3] - box[1]) // f) * f
        want = (box[0] - ctx - reach, box[1] - ctx - reach, box[0] + bh + ctx + reach, box[1] + bw + ctx + reach)
        inner = clip_box(want, (info.height, info.width))
        if inner[2] <= inner[0] or inner[3] <= inner[1]:
            raise CeusError(f"{path}: the ROI {box} lies outside the {info.width}x{info.height} px frame")
        cells = (want[2] - want[0]) * (want[3] - want[1]) // (f * f)
        every = max(1, int(np.ceil((info.n_frames or 0) * cells * 4 / (params.memory_mb * 2**20))))
        phase = int(round(anchor_time * info.fps)) % every if anchor_time and info.fps else 0
        for fr in vs:
            times.append(fr.time)
            if (fr.index - phase) % every == 0:
                frames.append(_window(fr.luma(), want, inner, f, params.smooth))
                kept.append(fr.index)
    if not frames:
        raise CeusError(f"{path}: no decodable frame to track the ROI in")
    r, c = reach // f, ctx // f
    patch = (r, r, r + (bh + 2 * ctx) // f, r + (bw + 2 * ctx) // f)
    return _Clip(np.asarray(times), np.asarray(kept), np.stack(frames), patch, f, r, params.step * every)


def _window(luma: np.ndarray, want: Box, inner: Box, f: int, smooth: float) -> np.ndarray:
    """The frame's window ``want`` (zero outside the frame), as f x f block means, smoothed."""
    win = np.zeros((want[2] - want[0], want[3] - want[1]), np.float32)
    win[inner[0] - want[0] : inner[2] - want[0], inner[1] - want[1] : inner[3] - want[1]] = \
        luma[inner[0] : inner[2], inner[1] : inner[3]]
    if f > 1:
        # here: scikit-image pulls scipy.signal and scipy.stats (0.5 s) into every import of prepare, predict's too
        from skimage.transform import downscale_local_mean

        win = downscale_local_mean(win, (f, f)).astype(np.float32)
    return gaussian_filter(win, smooth) if smooth > 0 else win


def _anchor_index(times: np.ndarray, t: float, path) -> int:
    """The decoded frame nearest ``t``; a time beyond the clip is an error (the box was drawn on another clip?)."""
    step = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    if t > times[-1] + step:
        raise CeusError(f"{path}: video_box_time {t:g} s is beyond the clip (its last frame is at {times[-1]:g} s)")
    return int(np.argmin(np.abs(times - t)))


def _cut(img: np.ndarray, patch: Box, d) -> np.ndarray | None:
    """The patch moved by d = (dy, dx) inside ``img``; None where it leaves the window."""
    y0, x0, y1, x1 = patch[0] + d[0], patch[1] + d[1], patch[2] + d[0], patch[3] + d[1]
    if y0 < 0 or x0 < 0 or y1 > img.shape[0] or x1 > img.shape[1]:
        return None
    return img[y0:y1, x0:x1]


def _match(img: np.ndarray, templ: np.ndarray | None, patch: Box, centre, radius: int) -> tuple[np.ndarray, float]:
    """The displacement (from the patch's anchor place) within ``radius`` of ``centre`` where ``templ`` correlates
    best in ``img``, and that correlation (-inf where nothing can be compared)."""
    if templ is None or templ.std() < 1e-3:
        return np.asarray(centre), -np.inf
    cy, cx = int(centre[0]), int(centre[1])
    y0, x0 = max(0, patch[0] + cy - radius), max(0, patch[1] + cx - radius)
    y1, x1 = min(img.shape[0], patch[2] + cy + radius), min(img.shape[1], patch[3] + cx + radius)
    region = img[y0:y1, x0:x1]
    if region.shape[0] < templ.shape[0] or region.shape[1] < templ.shape[1] or region.std() < 1e-3:
        return np.asarray(centre), -np.inf
    from skimage.feature import match_template  # here: only when a clip is tracked (see _window)

    ncc = match_template(region, templ)
    iy, ix = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return np.array([y0 + iy - patch[0], x0 + ix - patch[1]]), float(ncc[iy, ix])


def _place(window, patch: Box, anchor: int, prev: int, d_prev, k: int, reach: int, step: int, min_score: float):
    """Frame k's displacement, its correlation and how it was found (see the module docstring)."""
    img = window[k]
    d_a, s_a = _match(img, _cut(window[anchor], patch, (0, 0)), patch, d_prev, step)
    if s_a >= min_score and np.abs(d_a).max() <= reach:
        return d_a, s_a, 1
    d_p, s_p = _match(img, _cut(window[prev], patch, d_prev), patch, d_prev, step)
    if s_p >= min_score and np.abs(d_p).max() <= reach:
        return d_p, s_p, 2
    return np.asarray(d_prev), np.nan, 3


def _despike(shifts: np.ndarray, width: int = 3) -> np.ndarray:
    """A running median over ``width`` frames: one mismatched frame does not move the box."""
    if len(shifts) < width:
        return shifts
    return np.stack([median_filter(shifts[:, j], size=width, mode="nearest") for j in range(2)], axis=1).astype(np.int64)
