"""Synthetic cohort generator: the demo's data, shaped like a hospital export.

Per patient a B-mode still (PNG), a CEUS video (MJPEG in AVI) and ITK-SNAP
style masks (``.nii.gz``, one slice) for both, plus ``cohort.csv`` with
clinical covariates resembling the reference study's Table 1 per class and
``truth.csv`` with every generator parameter. The label enters through a
*static* latent (margin irregularity, microcalcification count; with the
size it is visible in the still) and a *dynamic* latent (hypo-enhancement,
slower wash-in, faster wash-out, heterogeneous enhancement; visible only in
the video), each weakly tied to the label, so image < video < both and
nothing is near-perfect. ``docs/synthetic.md`` describes the model.

Each patient is drawn from its own seed ``(seed, index)``, so the output does
not depend on the number of worker processes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import RECORD, atomic_path, claim, foreign_entries, record_created, write_csv, write_json

# --------------------------------------------------------------------------- reference values

# Training-set columns of the reference study's Table 1: (OLNM-, OLNM+).
# A zero cell is replaced by the pooled train+test rate so that no category is
# impossible for a class (ETE "yes" in negatives: 1 of 314).
REF_COUNTS = {"train": (225, 55), "test": (89, 27)}
REF_N = 396
REF_AGE = ((42.84, 10.97), (40.13, 10.81))
REF_SIZE_MM = ((10.77, 6.30), (15.69, 8.55))
REF_MALE = (49 / 225, 21 / 55)
REF_ETE = (1 / 314, 33 / 55)
LOCATIONS = ("upper", "mid", "lower", "isthmus")
REF_LOCATION = ((55, 105, 56, 9), (9, 29, 13, 4))
MARGINS = ("ill-defined", "irregular")
REF_MARGIN = ((80, 145), (51, 4))
FOCI = ("none", "microcalcification", "macrocalcification")
REF_FOCI = ((73, 138, 14), (11, 43, 1))
PEAKS = ("hypo", "iso", "hyper")
REF_PEAK = ((157, 53, 15), (48, 7, 0))  # not drawn: follows from the dynamic latent

# Label effects (shift of the class-conditional mean in SD units).
STATIC_SHIFT = 0.80  # static latent: AUC about Phi(0.80 / sqrt 2) = 0.71 on its own
DYNAMIC_SHIFT = 1.10  # dynamic latent: about 0.78 on its own
MARGIN_TIE = 0.4  # within-class correlation of the static latent with the reported margin

COHORT_COLUMNS = ["case_id", "label", "split", "group", "center", "image", "image_mask", "video", "video_mask",
                  "age", "sex", "size_mm", "location", "margin", "extrathyroidal_extension", "echogenic_foci",
                  "ceus_peak_intensity"]


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. ``duration=None`` draws 20-60 s per patient."""
    n: int = 396
    seed: int = 0
    size: int = 192  # video frame size (px, square)
    fps: float = 4.0
    duration: float | None = None
    still_size: int | None = None  # B-mode still size (px); default 4/3 of ``size``
    quality: int = 20  # MJPEG quantiser (2 best .. 31 smallest)
    centers: int = 2
    # Controlled experiments (defaults = the reference-like cohort). ``signal`` scales both label
    # effects; ``size_tied=False`` draws every nodule's size as for a negative patient, so the
    # image evidence is only local (margin, foci) and not also the size, which a ROI crop
    # resized to a fixed side turns into a texture scale over the whole crop.
    signal: float = 1.0
    size_tied: bool = True
    # Motion truth for ROI tracking (issue 26). ``motion`` (pixels of the video frame) adds a smooth path
    # (breathing plus a slow drift) of that amplitude to the scene; the video mask is then drawn on the frame
    # of the nodule's peak (``video_box_time`` in cohort.csv) and signal/<case>_video_path.csv holds the true
    # box in every frame. ``mask_per_frame`` writes the video mask as the true mask of every frame.
    motion: float = 0.0
    mask_per_frame: bool = False

    def resolved_still_size(self) -> int:
        return int(self.still_size or 2 * round(self.size * 2 / 3))

    def check(self) -> None:
        if self.n < 4:
            raise CeusError(f"synth: --n must be at least 4 (both classes in train and test), got {self.n}")
        if self.size < 32 or self.resolved_still_size() < 32:
            raise CeusError(f"synth: frame size must be at least 32 px, got {self.size}")
        if not 0 < self.fps <= 60:
            raise CeusError(f"synth: --fps must be in (0, 60], got {self.fps}")
        if self.duration is not None and not 2 <= self.duration <= 600:
            raise CeusError(f"synth: --duration must be between 2 and 600 s, got {self.duration}")
        if not 2 <= self.quality <= 31:
            raise CeusError(f"synth: quality must be between 2 and 31, got {self.quality}")
        if not 0 <= self.signal <= 10:
            raise CeusError(f"synth: --signal must be between 0 and 10, got {self.signal}")
        if self.centers < 1:
            raise CeusError(f"synth: at least one centre is needed, got {self.centers}")
        if not 0 <= self.motion <= self.size / 4:
            raise CeusError(f"synth: --motion must be between 0 and a quarter of the frame ({self.size / 4:g} px), got {self.motion}")

    def moving(self) -> bool:
        """True when the cohort carries the motion truth (per-frame positions, the mask's frame)."""
        return self.motion > 0 or self.mask_per_frame


# --------------------------------------------------------------------------- the table


def split_counts(n: int) -> dict[str, tuple[int, int]]:
    """(negatives, positives) per split, in the reference proportions (280/116, 55/27 positive)."""
    n_test = min(max(round(n * 116 / REF_N), 2), n - 2)
    n_train = n - n_test
    out = {}
    for split, m in (("train", n_train), ("test", n_test)):
        ref_neg, ref_pos = REF_COUNTS[split]
        pos = min(max(round(m * ref_pos / (ref_neg + ref_pos)), 1), m - 1)
        out[split] = (m - pos, pos)
    return out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _choice(rng, names, counts) -> str:
    p = np.asarray(counts, float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _shifted_gamma(rng, mean: float, sd: float, low: float = 2.0, high: float = 60.0) -> float:
    """A right-skewed size with the given mean and SD: low + Gamma."""
    k = ((mean - low) / sd) ** 2
    theta = sd**2 / (mean - low)
    while True:
        v = low + rng.gamma(k, theta)
        if v <= high:
            return float(v)


def _draw_patient(seed: int, index: int, label: int, duration: float | None, centers: int,
                  signal: float = 1.0, size_tied: bool = True) -> tuple[dict, dict]:
    """Covariates, latents and TIC parameters of one patient, from its own seed."""
    rng = np.random.default_rng([seed, 1, index])
    y = int(label)
    row: dict = {}
    centre = 1 if centers == 1 else (1 + int(rng.random() < 0.35) if centers == 2 else 1 + int(rng.integers(centers)))
    row["center"] = f"center{centre}"
    row["age"] = int(np.clip(round(rng.normal(*REF_AGE[y])), 18, 85))
    row["sex"] = "male" if rng.random() < REF_MALE[y] else "female"
    row["size_mm"] = round(_shifted_gamma(rng, *REF_SIZE_MM[y if size_tied else 0]), 1)
    row["location"] = _choice(rng, LOCATIONS, REF_LOCATION[y])
    row["margin"] = _choice(rng, MARGINS, REF_MARGIN[y])
    row["extrathyroidal_extension"] = "yes" if rng.random() < REF_ETE[y] else "no"
    row["echogenic_foci"] = _choice(rng, FOCI, REF_FOCI[y])

    # static latent: label shift + a within-class tie to the reported margin + noise
    p_ill = REF_MARGIN[y][0] / sum(REF_MARGIN[y])
    z_ill = ((row["margin"] == "ill-defined") - p_ill) / math.sqrt(p_ill * (1 - p_ill))
    s = signal * STATIC_SHIFT * y + MARGIN_TIE * z_ill + math.sqrt(1 - MARGIN_TIE**2) * rng.normal()
    irr = float(_sigmoid(1.6 * s - 0.5))
    n_foci = {"none": 0, "microcalcification": 2 + int(rng.poisson(1.0 + 4.0 * _sigmoid(s))), "macrocalcification": 1}[row["echogenic_foci"]]

    # dynamic latent and the time-intensity curves it shapes
    d = signal * DYNAMIC_SHIFT * y + rng.normal()
    dur = float(duration) if duration is not None else round(float(rng.uniform(20, 60)), 1)
    ts = min(1.0, dur / 30.0)  # short test videos: compress the timing so the peak stays inside
    t0_p = ts * rng.uniform(3.0, 7.0)
    tp_p = ts * rng.uniform(6.0, 10.0)
    alpha_p = rng.uniform(0.8, 1.8)
    peak_ratio = float(math.exp(-0.215 - 0.21 * d + rng.normal(0, 0.04)))
    t0_n = t0_p + ts * 0.6 * math.exp(0.45 * d + rng.normal(0, 0.2))
    tp_n = tp_p * math.exp(0.18 * d + rng.normal(0, 0.05))
    alpha_n = alpha_p * math.exp(0.15 * d + rng.normal(0, 0.05))
    het = float(np.clip(0.15 + 0.45 * _sigmoid(1.6 * (d - 0.5)) + rng.normal(0, 0.03), 0.05, 0.8))
    row["ceus_peak_intensity"] = "hypo" if peak_ratio < 0.9 else ("hyper" if peak_ratio > 1.1 else "iso")

    truth = {
        "static_latent": s, "dynamic_latent": d, "margin_irregularity": irr, "n_foci": n_foci,
        "duration_s": dur, "tic_par_arrival_s": t0_p, "tic_par_ttp_s": t0_p + tp_p, "tic_par_alpha": alpha_p,
        "tic_par_peak": 1.0, "tic_nod_arrival_s": t0_n, "tic_nod_ttp_s": t0_n + tp_n, "tic_nod_alpha": alpha_n,
        "tic_nod_peak": peak_ratio, "peak_ratio": peak_ratio, "heterogeneity": het,
    }
    return row, truth


def draw_cohort_table(cfg: SynthConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest (with the file paths ``generate`` writes) and the per-patient truth; no pixels.

    Labels and splits are fixed counts shuffled by ``seed``; everything else
    per patient comes from the seed ``(seed, index)``.
    """
    cfg.check()
    counts = split_counts(cfg.n)
    labels, splits = [], []
    for split in ("train", "test"):
        neg, pos = counts[split]
        labels += [0] * neg + [1] * pos
        splits += [split] * (neg + pos)
    order = np.random.default_rng([cfg.seed, 0]).permutation(cfg.n)
    labels = np.asarray(labels)[order]
    splits = np.asarray(splits)[order]
    width = max(4, len(str(cfg.n)))
    rows, truths = [], []
    for i in range(cfg.n):
        cid = f"P{i + 1:0{width}d}"
        row, truth = _draw_patient(cfg.seed, i, int(labels[i]), cfg.duration, cfg.centers, cfg.signal, cfg.size_tied)
        rows.append({"case_id": cid, "label": int(labels[i]), "split": str(splits[i]), "group": cid,
                     "center": row.pop("center"), "image": f"images/{cid}.png", "image_mask": f"masks/{cid}_image.nii.gz",
                     "video": f"videos/{cid}.avi", "video_mask": f"masks/{cid}_video.nii.gz", **row})
        if cfg.moving():  # the frame the video mask is drawn on
            rows[-1]["video_box_time"] = f"{anchor_frame(truth, cfg.fps) / cfg.fps:g}"
        truths.append({"case_id": cid, "index": i, "label": int(labels[i]), "split": str(splits[i]), **truth})
    columns = COHORT_COLUMNS + (["video_box_time"] if cfg.moving() else [])
    return pd.DataFrame(rows, columns=columns), pd.DataFrame(truths)


# --------------------------------------------------------------------------- geometry


def gamma_variate(t: np.ndarray, arrival: float, ttp: float, alpha: float, peak: float) -> np.ndarray:
    """Madsen's gamma-variate: 0 before arrival, ``peak`` at ``ttp``, wash-out sharper for larger alpha."""
    tp = max(ttp - arrival, 1e-3)
    tau = np.clip((np.asarray(t, float) - arrival) / tp, 0.0, None)
    with np.errstate(divide="ignore"):
        out = peak * np.exp(alpha * (np.log(np.where(tau > 0, tau, 1.0)) + 1.0 - tau))
    return np.where(tau > 0, out, 0.0)


@dataclass
class _Nodule:
    cx: float  # mm
    cy: float
    a: float  # semi-axes, mm
    b: float
    angle: float  # rad
    k: np.ndarray  # harmonic orders
    amp: np.ndarray
    phase: np.ndarray

    def distance(self, X: np.ndarray, Y: np.ndarray, max_order: int = 99) -> np.ndarray:
        """Radial signed distance (mm) to the boundary: negative inside."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = (X - self.cx) * c + (Y - self.cy) * s
        v = -(X - self.cx) * s + (Y - self.cy) * c
        rho = np.hypot(u, v)
        phi = np.arctan2(v, u)
        r = self.a * self.b / np.sqrt((self.b * np.cos(phi)) ** 2 + (self.a * np.sin(phi)) ** 2)
        wobble = np.ones_like(phi)
        for k, a, p in zip(self.k, self.amp, self.phase):
            if k <= max_order:
                wobble += a * np.cos(k * phi + p)
        return rho - r * wobble


def _grid(n: int, fov: float, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    px = fov / n
    c = (np.arange(-pad, n + pad, dtype=np.float64) + 0.5) * px
    return np.meshgrid(c, c, indexing="xy")  # X (columns), Y (rows)


def _smooth_field(rng, shape, sigma_px) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px, mode="wrap")
    return f / max(float(f.std()), 1e-6)


def _speckle_pair(rng, shape, sigma_rc) -> np.ndarray:
    """A complex Gaussian field smoothed by the PSF, normalised to mean power 1."""
    re = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_rc, mode="wrap")
    im = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_rc, mode="wrap")
    z = re + 1j * im
    return (z / math.sqrt(float(np.mean(np.abs(z) ** 2)))).astype(np.complex64)


def _layers(X, Y, fov, carotid) -> tuple[np.ndarray, ...]:
    """Tissue maps: skin, strap muscle, capsule line, parenchyma, carotid lumen/wall."""
    depth = Y / fov
    skin = (depth < 0.05).astype(np.float32)
    muscle = ((depth >= 0.05) & (depth < 0.2)).astype(np.float32)
    capsule = np.exp(-0.5 * ((Y - 0.2 * fov) / 0.25) ** 2).astype(np.float32)
    par = (depth >= 0.2).astype(np.float32)
    cx, cy, r = carotid
    rr = np.hypot(X - cx, Y - cy)
    lumen = (rr < r).astype(np.float32)
    wall = np.exp(-0.5 * ((rr - r - 0.25) / 0.25) ** 2).astype(np.float32)
    return skin, muscle, capsule, par * (1 - lumen), lumen, wall


# --------------------------------------------------------------------------- one patient


def _geometry(rng, size_mm: float, irr: float) -> tuple[float, _Nodule, _Nodule, tuple]:
    fov = max(40.0, 1.6 * size_mm)
    a = size_mm / 2
    b = a * rng.uniform(0.6, 0.95)
    angle = float(np.clip(rng.normal(0, 0.35), -0.7, 0.7))
    k = np.arange(2, 13)
    low = rng.normal(0, 0.04, 2)  # lobulation (nuisance), orders 2-3
    high = (0.01 + 0.40 * irr) * k[2:] ** -0.5 * rng.uniform(0.5, 1.0, k.size - 2)  # orders 4-12
    amp = np.concatenate([low, high])
    phase = rng.uniform(0, 2 * np.pi, k.size)
    side = rng.random() < 0.5
    carotid = ((0.09 if side else 0.91) * fov, 0.62 * fov, 0.08 * fov)

    def place():
        lo, hi = 0.2 * fov + a, 0.8 * fov - a
        cx = rng.uniform(lo, hi) if lo < hi else 0.5 * fov  # clear of the carotid at 0.09 / 0.91
        top = 0.2 * fov + 0.6 + a * 1.05
        cy = max(rng.uniform(0.5, 0.6) * fov, top)
        return cx, cy

    still = _Nodule(*place(), a, b, angle, k, amp, phase)
    video = _Nodule(*place(), a, b, angle, k, amp, phase)
    return fov, still, video, carotid


def _margin_width(irr: float) -> float:
    """Boundary transition width (mm): irregular nodules are also less sharply defined."""
    return 0.08 + 0.5 * irr


def _render_still(rng, n: int, fov: float, nod: _Nodule, carotid, irr: float, foci: str, n_foci: int, centre: int):
    X, Y = _grid(n, fov)
    px = fov / n
    skin, muscle, capsule, par, lumen, wall = _layers(X, Y, fov, carotid)
    striation = 1 + 0.3 * np.sin(2 * np.pi * Y / 1.2)
    E = 1.2 * skin + 0.35 * muscle * striation + 0.62 * par + 0.04 * lumen + 0.9 * wall + 0.9 * capsule
    dist = nod.distance(X, Y)
    width = _margin_width(irr)
    inside = 0.5 * (1 - np.tanh(dist / width))
    echo = rng.uniform(0.35, 0.55)  # hypoechoic level relative to parenchyma (nuisance)
    E = E * (1 - inside * (1 - echo))
    foci_xy = []
    if n_foci:
        # bright foci inside the nodule; macrocalcification casts a posterior shadow
        for _ in range(n_foci):
            r = math.sqrt(rng.uniform(0, 0.55)) * min(nod.a, nod.b)
            t = rng.uniform(0, 2 * np.pi)
            foci_xy.append((nod.cx + r * math.cos(t), nod.cy + r * math.sin(t)))
        sig = 0.9 if foci == "macrocalcification" else 0.22
        amp = 2.5 if foci == "macrocalcification" else 2.2
        for fx, fy in foci_xy:
            blob = np.exp(-0.5 * ((X - fx) ** 2 + (Y - fy) ** 2) / sig**2)
            E = E + amp * blob
            if foci == "macrocalcification":
                shadow = _sigmoid((Y - fy - sig) / 0.3) * np.exp(-0.5 * ((X - fx) / (1.2 * sig)) ** 2)
                E = E * (1 - 0.65 * shadow)
    E = E * (1.05 - 0.3 * Y / fov) * (1.0 if centre == 1 else 0.9)
    sig_rc = (0.15 / px, (0.28 if centre == 1 else 0.34) / px)  # speckle: axial, lateral PSF (px)
    env = np.abs(_speckle_pair(rng, E.shape, sig_rc)) * E
    db = 20 * np.log10(np.maximum(env, 1e-4))
    img = np.clip((db + 22.0) / 40.0, 0, 1) * 255
    mask = dist < 0
    return np.round(img).astype(np.uint8), mask, dist, foci_xy


def n_video_frames(duration: float, fps: float) -> int:
    return max(2, int(round(duration * fps)))


def anchor_frame(case: dict, fps: float) -> int:
    """The frame a moving cohort's video mask is drawn on: the nodule's peak enhancement, as a reader would."""
    return int(min(round(float(case["tic_nod_ttp_s"]) * fps), n_video_frames(case["duration_s"], fps) - 1))


def _smooth_path(rng, t: np.ndarray, amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 2-D path (pixels) of peak amplitude about ``amplitude``: breathing (3.5-6 s) plus a slow drift."""
    out = []
    for _ in range(2):
        p1, p2, ph1, ph2 = rng.uniform(3.5, 6.0), rng.uniform(12.0, 25.0), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)
        out.append(amplitude * (0.6 * np.sin(2 * np.pi * t / p1 + ph1) + 0.4 * np.sin(2 * np.pi * t / p2 + ph2)))
    return out[0], out[1]


def _scene_offsets(rng, t: np.ndarray, px: float, motion: float, motion_rng) -> tuple[np.ndarray, np.ndarray, int, tuple]:
    """Each frame's window into the padded scene (ox, oy: integer pixels), the pad, and the largest motion (mm)
    along x and y; the nodule of frame i sits (pad - oy[i], pad - ox[i]) pixels from its nominal place."""
    n_frames = t.size
    # breathing-like motion plus jitter, as integer pixel shifts of a padded scene
    amp_x, amp_y = rng.uniform(0.2, 0.8), rng.uniform(0.3, 1.0)
    period, ph = rng.uniform(3.5, 6.0), rng.uniform(0, 2 * np.pi)
    mx = amp_x * np.sin(2 * np.pi * t / period + ph) + rng.normal(0, 0.1, n_frames)
    my = amp_y * np.sin(2 * np.pi * t / period + ph + 0.8) + rng.normal(0, 0.1, n_frames)
    pad = max(1, int(math.ceil(1.4 / px)))
    if motion > 0:  # the tracking truth: a larger smooth path, from its own seed (the default cohort is unchanged)
        dx, dy = _smooth_path(motion_rng, t, motion)
        mx, my, pad = mx + dx * px, my + dy * px, pad + int(math.ceil(motion))
    ox = np.clip(np.round(mx / px).astype(int) + pad, 0, 2 * pad)
    oy = np.clip(np.round(my / px).astype(int) + pad, 0, 2 * pad)
    return ox, oy, pad, (float(np.abs(mx).max()), float(np.abs(my).max()))


def _render_video(rng, n: int, fov: float, nod: _Nodule, carotid, tic: dict, fps: float, centre: int, path: Path, quality: int,
                  motion: float = 0.0, motion_rng=None):

    px = fov / n
    dur = tic["duration_s"]
    n_frames = n_video_frames(dur, fps)
    t = np.arange(n_frames) / fps
    ox, oy, pad, largest = _scene_offsets(rng, t, px, motion, motion_rng)

    X, Y = _grid(n, fov, pad)
    skin, muscle, capsule, par, lumen, wall = _layers(X, Y, fov, carotid)
    dist = nod.distance(X, Y, max_order=3)  # CEUS resolves the outline, not the fine margin
    inside = 0.5 * (1 - np.tanh(dist / 0.6))
    het = np.maximum(0.0, 1 + tic["heterogeneity"] * _smooth_field(rng, X.shape, 1.2 / px))
    m_par = (par * (1 - inside) + 0.25 * muscle + 0.05 * skin).astype(np.float32)
    m_nod = (par * inside * het).astype(np.float32)
    m_art = lumen.astype(np.float32)
    c_par = gamma_variate(t, tic["tic_par_arrival_s"], tic["tic_par_ttp_s"], tic["tic_par_alpha"], 1.0)
    c_nod = gamma_variate(t, tic["tic_nod_arrival_s"], tic["tic_nod_ttp_s"], tic["tic_nod_alpha"], tic["tic_nod_peak"])
    ts = min(1.0, dur / 30.0)
    a_arr = tic["tic_par_arrival_s"] - 1.0 * ts
    c_art = gamma_variate(t, a_arr, a_arr + 0.6 * (tic["tic_par_ttp_s"] - tic["tic_par_arrival_s"]), 2.0, 1.8)
    gain = rng.uniform(0.85, 1.15) * (1.0 if centre == 1 else 1.1)

    # bubble speckle: a slowly drifting field mixed with a fresh one each frame (with ``motion``: _slow_speckle)
    q = n // 4
    sig_rc = (0.22 / px, 0.36 / px)
    side = n + 2 * pad if motion > 0 else n + 2 * q
    A = _speckle_pair(rng, (side, side), sig_rc)
    B = _speckle_pair(rng, (n + 2 * q, n + 2 * q), sig_rc)
    walk = np.clip(q + np.cumsum(rng.integers(-1, 2, (n_frames, 2)), axis=0), 0, 2 * q)
    jump = rng.integers(0, 2 * q + 1, (n_frames, 2))
    A2 = _speckle_pair(motion_rng, (side, side), sig_rc) if motion > 0 else None

    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="avi")
        try:
            stream = container.add_stream("mjpeg", rate=Fraction(fps).limit_denominator(1000))
            stream.width = n
            stream.height = n
            stream.pix_fmt = "yuvj420p"
            stream.thread_count = 1
            stream.options = {"qmin": str(quality), "qmax": str(quality)}
            for i in range(n_frames):
                sl = (slice(oy[i], oy[i] + n), slice(ox[i], ox[i] + n))
                P = c_par[i] * m_par[sl] + c_nod[i] * m_nod[sl] + c_art[i] * m_art[sl]
                a = _slow_speckle(A, A2, walk[i] if A2 is None else (oy[i], ox[i]), n, t[i])
                b = B[jump[i, 0]:jump[i, 0] + n, jump[i, 1]:jump[i, 1] + n]
                S = np.abs(0.8 * a + 0.6 * b) ** 2
                frame = np.clip(0.45 * gain * np.sqrt(P * S) * 255, 0, 255).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="gray")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return dist, (ox, oy, pad), largest


def _slow_speckle(A: np.ndarray, A2: np.ndarray | None, at, n: int, t: float) -> np.ndarray:
    """The slow part of the bubble speckle in one frame. The default cohort: field A drifting as a block
    (``at`` its random walk). A moving cohort (``A2`` given): the bubbles in the microvessels move with the
    tissue (``at`` the frame's window into the scene) and their pattern decorrelates over seconds (A and A2
    mixed at a slowly turning angle, a quarter turn in 5 s), as a clip's speckle does; a field that drifted
    as one block apart from the tissue would be a second motion, not the nodule's."""
    y, x = int(at[0]), int(at[1])
    if A2 is None:
        return A[y : y + n, x : x + n]
    theta = 2 * np.pi * t / 20.0
    return np.cos(theta) * A[y : y + n, x : x + n] + np.sin(theta) * A2[y : y + n, x : x + n]


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Save a 2-D mask as ITK-SNAP does for a 2-D image: a one-slice uint8 NIfTI."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8)[None]))
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), True)


def _ensure_nonempty(mask: np.ndarray, dist: np.ndarray) -> np.ndarray:
    if mask.any():
        return mask
    out = np.zeros_like(mask)
    out[np.unravel_index(int(np.argmin(dist)), dist.shape)] = True
    return out


def _centre_radius(mask: np.ndarray) -> tuple[float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.mean()), float(rows.mean()), float(math.sqrt(mask.sum() / math.pi))


def render_case(out: str | Path, cfg: SynthConfig, case: dict) -> dict:
    """Write one patient's still, video, masks and signal masks; return its geometric truth."""
    out = Path(out)
    cid = case["case_id"]
    rng = np.random.default_rng([cfg.seed, 2, int(case["index"])])
    centre = int(str(case["center"]).removeprefix("center") or 1)
    fov, n_still, n_video, carotid = _geometry(rng, float(case["size_mm"]), float(case["margin_irregularity"]))

    ns = cfg.resolved_still_size()
    img, mask, dist, foci_xy = _render_still(rng, ns, fov, n_still, carotid, case["margin_irregularity"],
                                             case["echogenic_foci"], int(case["n_foci"]), centre)
    mask = _ensure_nonempty(mask, dist)
    with atomic_path(out / case["image"]) as tmp:
        Image.fromarray(img, mode="L").save(tmp, format="PNG")
    write_mask(out / case["image_mask"], mask)
    band = max(1.5, 2.0 * _margin_width(case["margin_irregularity"]) + 0.5)  # mm around the boundary
    write_mask(out / "signal" / f"{cid}_margin.nii.gz", (dist < band) | mask)

    motion_rng = np.random.default_rng([cfg.seed, 3, int(case["index"])])
    scene, (ox, oy, pad), (motion_x, motion_y) = _render_video(rng, cfg.size, fov, n_video, carotid, case, cfg.fps, centre,
                                                               out / case["video"], cfg.quality, cfg.motion, motion_rng)
    n_frames = ox.size
    k = anchor_frame(case, cfg.fps) if cfg.moving() else None
    n = cfg.size
    vdist = scene[pad : pad + n, pad : pad + n] if k is None else scene[oy[k] : oy[k] + n, ox[k] : ox[k] + n]
    vmask = _ensure_nonempty(vdist < 0, vdist)
    moving = _write_motion_truth(out, cid, cfg, scene, ox, oy) if cfg.moving() else {}
    if not cfg.mask_per_frame:
        write_mask(out / case["video_mask"], vmask)
    write_mask(out / "signal" / f"{cid}_video_margin.nii.gz", (vdist < 1.5) | vmask)

    icx, icy, ir = _centre_radius(mask)
    vcx, vcy, vr = _centre_radius(vmask)
    return {"case_id": cid, "fov_mm": fov, "image_mm_per_px": fov / ns, "video_mm_per_px": fov / cfg.size,
            "image_cx": icx, "image_cy": icy, "image_radius_px": ir, "video_cx": vcx, "video_cy": vcy,
            "video_radius_px": vr, "axis_ratio": n_still.b / n_still.a, "angle_rad": n_still.angle,
            "foci_xy_mm": ";".join(f"{x:.2f},{y:.2f}" for x, y in foci_xy), "n_frames": n_frames, "fps": cfg.fps,
            "motion_x_mm": motion_x, "motion_y_mm": motion_y,
            "image_signal": f"signal/{cid}_margin.nii.gz", "video_signal": f"signal/{cid}_video_margin.nii.gz", **moving}


def _write_motion_truth(out: Path, cid: str, cfg: SynthConfig, scene: np.ndarray, ox: np.ndarray, oy: np.ndarray) -> dict:
    """signal/<case>_video_path.csv: the true nodule box (x,y,w,h) in every frame; with ``mask_per_frame`` the
    video mask is the true mask of every frame. Returns truth.csv's columns for them."""
    n = cfg.size
    masks = np.stack([scene[y : y + n, x : x + n] < 0 for x, y in zip(ox, oy)])
    rows = []
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)) if ys.size else (0, 0, 0, 0)
        rows.append({"frame": i, "time_s": round(i / cfg.fps, 6), "x": box[0], "y": box[1], "w": box[2], "h": box[3]})
    write_csv(out / "signal" / f"{cid}_video_path.csv", pd.DataFrame(rows))
    if cfg.mask_per_frame:
        img = sitk.GetImageFromArray(np.ascontiguousarray(masks.astype(np.uint8)))
        with atomic_path(out / "masks" / f"{cid}_video.nii.gz") as tmp:
            sitk.WriteImage(img, str(tmp), True)
    return {"video_path": f"signal/{cid}_video_path.csv"}


def _render_star(args):
    return render_case(*args)


# --------------------------------------------------------------------------- the cohort


OUTPUT_FILES = ("cohort.csv", "truth.csv", "synth.json")
OUTPUT_FOLDERS = ("images", "videos", "masks", "signal")


def _claim_out(out: Path, overwrite: bool, force: bool) -> None:
    """May synth write into ``out``? Not over a cohort (unless ``overwrite``), and not into a folder holding
    anything synth did not write (unless ``force``): a careless --out must not replace the user's files.
    What synth will write is recorded first, so an interrupted run can be repeated."""
    if (out / "cohort.csv").exists() and not overwrite:
        raise CeusError(f"{out}: already holds a cohort (cohort.csv); pass --overwrite to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise CeusError(f"{out}: exists and is not a folder")
    if not (out / RECORD).exists() and _is_synth_folder(out):  # written before the record existed
        record_created(out, [out / f for f in OUTPUT_FILES], [out / d for d in OUTPUT_FOLDERS])
    foreign = foreign_entries(out)
    if foreign and not force:
        raise CeusError(f"{out}: holds files synth did not write ({', '.join(foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''}); choose an empty folder, or pass --force to write into it")
    claim(out, [out / f for f in OUTPUT_FILES], [out / d for d in OUTPUT_FOLDERS], force=True)


def _is_synth_folder(out: Path) -> bool:
    try:
        return json.loads((out / "synth.json").read_text()).get("generator") == "ceusfusion.synthetic.synth"
    except (OSError, ValueError, AttributeError):
        return False


def generate(out: str | Path, cfg: SynthConfig | None = None, workers: int = 2, overwrite: bool = False,
             force: bool = False) -> Path:
    """Write the synthetic cohort under ``out``; return the path of its ``cohort.csv``.

    ``cohort.csv`` is written last, so an interrupted run leaves no manifest
    that points at missing files. ``out`` must be new, empty or synth's own (``force``: any folder).
    """
    cfg = cfg or SynthConfig()
    cfg.check()
    out = Path(out)
    if workers < 1:
        raise CeusError(f"synth: --workers must be at least 1, got {workers}")
    _claim_out(out, overwrite, force)
    cohort, truth = draw_cohort_table(cfg)
    cases = [{**c, **t} for c, t in zip(cohort.to_dict("records"), truth.drop(columns=["case_id", "label", "split"]).to_dict("records"))]
    for sub in ("images", "videos", "masks", "signal"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(out, cfg, c) for c in cases]
    if workers == 1 or len(jobs) < 2:
        geo = [render_case(*j) for j in jobs]
    else:
        # fork where available: no re-import of the caller's script (spawn needs a __main__ guard)
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            geo = list(pool.map(_render_star, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    truth = truth.merge(pd.DataFrame(geo), on="case_id", how="left")
    write_csv(out / "truth.csv", truth)
    write_json(out / "synth.json", {"generator": "ceusfusion.synthetic.synth", "config": asdict(cfg),
                                    "codec": "mjpeg/avi", "static_shift": STATIC_SHIFT, "dynamic_shift": DYNAMIC_SHIFT})
    manifest = out / "cohort.csv"
    write_csv(manifest, cohort)
    return manifest


def folder_size(path: str | Path) -> int:
    """Total bytes under ``path`` (for the size check in docs and benchmarks)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


__all__ = ["SynthConfig", "draw_cohort_table", "generate", "render_case", "split_counts", "gamma_variate", "write_mask",
           "folder_size"]
