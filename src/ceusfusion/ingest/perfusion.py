"""The time–intensity curve (TIC) of a CEUS video and its quantitative perfusion parameters.

The TIC is the mean luma inside the nodule ROI and in a parenchyma ring
around it, per frame (``RoiMeter``, ``TicRecorder``: fed frame by frame by the
keyframe pass, so the video is decoded once). Intensities are full-range grey
(0–255). The curve is smoothed over ``smooth_s`` seconds before reading peak,
slopes and times, so single-frame noise does not decide them. A
gamma-variate ``b + A·(t−t0)^α·exp(−(t−t0)/β)`` is fitted with
``scipy.optimize.curve_fit``; its R² says how well the curve follows a bolus
shape (NaN when the fit fails, e.g. a curve with no enhancement).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.optimize import curve_fit

from ceusfusion.ingest.roi import bbox
from ceusfusion.io.video import Frame

COLUMNS = [
    "baseline", "peak_intensity", "peak_enhancement", "ring_peak_intensity", "peak_ratio_ring",
    "time_to_peak", "arrival_time", "rise_time", "wash_in_slope", "auc", "wash_out_slope",
    "gv_A", "gv_t0", "gv_alpha", "gv_beta", "gv_b", "gv_peak_time", "gv_mtt", "gv_r2", "tic_frames", "tic_duration",
]

GV_PARAMS = ("gv_A", "gv_t0", "gv_alpha", "gv_beta", "gv_b")  # gamma_variate's arguments after t, in order


@dataclass
class TIC:
    """Time–intensity curve: mean luma inside the nodule and in a surrounding ring, per frame."""

    times: np.ndarray
    lesion: np.ndarray
    ring: np.ndarray


class RoiMeter:
    """Mean luma inside a mask and inside a ring around it, computed on the mask's bounding box only."""

    def __init__(self, mask: np.ndarray, ring: float):
        h, w = mask.shape
        b = bbox(mask)
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

    def measure(self, frame: Frame, shift=None) -> tuple[float, float]:
        """Means in full-range grey units (the luma plane is read without conversion, then rescaled); ``shift``
        (dy, dx) moves the ROI (a tracked nodule), the part that leaves the frame left out."""
        if self.empty:
            return np.nan, np.nan
        a, b = frame.luma_to_full()
        if shift is None or not (shift[0] or shift[1]):
            crop, lesion, ring = frame.luma()[self.sl], self.lesion, self.ring
        else:
            crop, lesion, ring = self._moved(frame.luma(), int(shift[0]), int(shift[1]))
        if not lesion.any():
            return np.nan, np.nan
        les = float(crop[lesion].mean()) * a + b
        ring = float(crop[ring].mean()) * a + b if ring.any() else np.nan
        return les, ring

    def _moved(self, luma: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The luma under the ROI moved by (dy, dx), with the lesion and ring masks cut to the part inside the frame."""
        h, w = luma.shape
        ys, xs = self.sl
        y0, y1, x0, x1 = ys.start + dy, ys.stop + dy, xs.start + dx, xs.stop + dx
        cy0, cx0 = max(0, -y0), max(0, -x0)
        crop = luma[max(0, y0) : max(0, min(h, y1)), max(0, x0) : max(0, min(w, x1))]
        cut = (slice(cy0, cy0 + crop.shape[0]), slice(cx0, cx0 + crop.shape[1]))
        return crop, self.lesion[cut], self.ring[cut]


class TicRecorder:
    """Builds the TIC frame by frame during a decode pass, from one 2-D mask or one mask per frame.

    With a tracked 2-D mask (``shifts``) one meter moves with the ROI. With a mask per frame the ROI moves,
    so each frame gets its own meter; frames
    where the nodule is not visible (or beyond the mask's frames) count as NaN.
    """

    def __init__(self, mask: np.ndarray, ring: float, shifts: np.ndarray | None = None):
        self.mask = mask
        self.ring_share = ring
        self.shifts = shifts  # (T, 2): a 2-D mask moved (dy, dx) in each frame (ingest.track)
        self.meter = RoiMeter(mask, ring) if mask.ndim == 2 else None
        self.times: list[float] = []
        self.lesion: list[float] = []
        self.ring: list[float] = []

    def add(self, frame: Frame) -> None:
        """Measure one decoded frame."""
        if self.meter is not None:
            moved = self.shifts[frame.index] if self.shifts is not None and frame.index < len(self.shifts) else None
            les, ring = self.meter.measure(frame, moved)
        else:
            fm = self.mask[frame.index] if frame.index < self.mask.shape[0] else None
            les, ring = RoiMeter(fm, self.ring_share).measure(frame) if fm is not None and fm.any() else (np.nan, np.nan)
        self.times.append(frame.time)
        self.lesion.append(les)
        self.ring.append(ring)

    def curve(self) -> TIC:
        return TIC(np.asarray(self.times), np.asarray(self.lesion), np.asarray(self.ring))



def _smooth(y: np.ndarray, t: np.ndarray, smooth_s: float) -> np.ndarray:
    if y.size < 3:
        return y.copy()
    dt = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    w = max(1, int(round(smooth_s / dt)) if dt > 0 else 1)
    if w <= 1:
        return y.copy()
    w = min(w, y.size)
    pad = np.pad(y, (w // 2, w - 1 - w // 2), mode="edge")
    return np.convolve(pad, np.ones(w) / w, mode="valid")


def _fill(y: np.ndarray) -> np.ndarray:
    """Interpolate NaNs (frames where a per-frame mask is empty)."""
    ok = np.isfinite(y)
    if ok.all() or not ok.any():
        return y
    idx = np.arange(y.size)
    return np.interp(idx, idx[ok], y[ok])


def gamma_variate(t, A, t0, alpha, beta, b):
    dt = np.clip(t - t0, 0, None)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        y = A * np.power(dt, alpha) * np.exp(-dt / beta)
    return b + np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)


def fit_gamma_variate(t: np.ndarray, y: np.ndarray, baseline: float, t_peak: float, enh: float) -> dict:
    """Least-squares gamma-variate fit; dict of gv_* parameters and R² (NaN on failure)."""
    nan = {k: np.nan for k in ("gv_A", "gv_t0", "gv_alpha", "gv_beta", "gv_b", "gv_peak_time", "gv_mtt", "gv_r2")}
    if t.size < 6 or not np.isfinite(enh) or enh <= 0:
        return nan
    span = float(t[-1] - t[0]) or 1.0
    t0_guess = max(float(t[0]), t_peak - span / 4)
    alpha0, beta0 = 2.0, max((t_peak - t0_guess) / 2.0, 1e-2)
    A0 = enh / max((alpha0 * beta0) ** alpha0 * np.exp(-alpha0), 1e-12)
    p0 = [A0, t0_guess, alpha0, beta0, baseline]
    lo = [0.0, float(t[0]) - span, 0.05, 1e-3, -255.0]
    hi = [np.inf, t_peak, 20.0, 10.0 * span, 510.0]
    p0 = list(np.clip(p0, lo, [h if np.isfinite(h) else 1e12 for h in hi]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = curve_fit(gamma_variate, t, y, p0=p0, bounds=(lo, hi), maxfev=4000)
    except (RuntimeError, ValueError):
        return nan
    pred = gamma_variate(t, *popt)
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    A, t0, alpha, beta, b = (float(v) for v in popt)
    return {
        "gv_A": A, "gv_t0": t0, "gv_alpha": alpha, "gv_beta": beta, "gv_b": b,
        "gv_peak_time": t0 + alpha * beta, "gv_mtt": (alpha + 1.0) * beta,
        "gv_r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else np.nan,
    }


def perfusion_parameters(tic: TIC, baseline_s: float = 1.0, smooth_s: float = 0.5) -> dict:
    """Baseline, peak (absolute and relative to the ring), times, slopes, AUC and the gamma-variate fit."""
    t = np.asarray(tic.times, float)
    y = _fill(np.asarray(tic.lesion, float))
    r = _fill(np.asarray(tic.ring, float))
    out = {k: np.nan for k in COLUMNS}
    out["tic_frames"] = int(t.size)
    out["tic_duration"] = float(t[-1] - t[0]) if t.size else np.nan
    if t.size < 2 or not np.isfinite(y).any():
        return out
    ys = _smooth(y, t, smooth_s)
    base_n = max(1, int(np.sum(t <= t[0] + baseline_s)))
    baseline = float(np.mean(y[:base_n]))
    ip = int(np.argmax(ys))
    peak, t_peak = float(ys[ip]), float(t[ip])
    enh = peak - baseline
    out.update(baseline=baseline, peak_intensity=peak, peak_enhancement=enh, time_to_peak=t_peak - t[0])
    if np.isfinite(r).any():
        rs = _smooth(r, t, smooth_s)
        rp = float(np.nanmax(rs))
        out["ring_peak_intensity"] = rp
        out["peak_ratio_ring"] = peak / rp if rp > 0 else np.nan
    out["auc"] = float(np.trapezoid(ys - baseline, t)) if hasattr(np, "trapezoid") else float(np.trapz(ys - baseline, t))
    if enh > 0:
        rising = ys[: ip + 1]
        i10 = int(np.argmax(rising >= baseline + 0.1 * enh))
        i90 = int(np.argmax(rising >= baseline + 0.9 * enh))
        out["arrival_time"] = float(t[i10] - t[0])
        out["rise_time"] = float(t[i90] - t[i10])
    if ip >= 1:
        out["wash_in_slope"] = float(np.max(np.diff(ys[: ip + 1]) / np.diff(t[: ip + 1])))
    if t.size - ip >= 3:
        out["wash_out_slope"] = float(np.polyfit(t[ip:], ys[ip:], 1)[0])
    out.update(fit_gamma_variate(t, y, baseline, t_peak, enh))
    return out


def fitted_curve(times: np.ndarray, params: dict) -> np.ndarray | None:
    """The fitted gamma-variate at ``times`` (for the TIC plot); None when the fit failed."""
    if not np.isfinite(params.get("gv_r2", np.nan)):
        return None
    return gamma_variate(times, *(params[k] for k in GV_PARAMS))
