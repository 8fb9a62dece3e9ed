"""One explained case (:class:`CaseExplanation`), and the explain output folder that holds them.

``RUN/explain/<name>/``: ``<case>.png`` per case (drawn by ``figures.explain.case_figure``),
``arrays/<case>.npz`` (display frames, maps, region: what Figure 5 is drawn from) and
``explain.json`` (the numbers per case and the run's summary).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import atomic_path, write_json
from ceusfusion.core.outcome import Outcome
from ceusfusion.explain.sanity import energy_share
from ceusfusion.figures.explain import case_figure, figure5


@dataclass
class CaseExplanation:
    """One case: display frames, maps and per-frame numbers (averaged over the fold models used)."""

    case_id: str
    label: int
    prob: float
    set: str
    folds: list  # fold numbers, or "full" (the refitted model)
    image: np.ndarray                      # (F, H, W, 3) float in [0, 1]: the de-normalised model input per frame
    cam: np.ndarray                        # (M, H, W) in [0, 1]; M = 1 (still / whole stack) or T (temporal)
    contribution: np.ndarray | None = None  # (T,) gradient × input per frame (video models)
    attention: np.ndarray | None = None     # (T,) attention weights (temporal models)
    region: np.ndarray | None = None        # (H, W) bool: where the signal lives, when known
    extra: dict = field(default_factory=dict)

    @property
    def share(self) -> np.ndarray | None:
        if self.contribution is None:
            return None
        a = np.abs(self.contribution)
        return a / a.sum() if a.sum() > 0 else np.full(len(a), 1.0 / len(a))

    def maps_per_frame(self) -> np.ndarray:
        """(F, H, W): the map to overlay on each displayed frame (the stack's one map repeated)."""
        return self.cam if len(self.cam) == len(self.image) else np.repeat(self.cam[:1], len(self.image), 0)

    def numbers(self) -> dict:
        d = {"case_id": self.case_id, "set": self.set, "label": int(self.label), "prob": float(self.prob),
             "folds": [f if isinstance(f, str) else int(f) for f in self.folds]}
        if self.contribution is not None:
            d["frame_contribution"] = [float(v) for v in self.contribution]
            d["frame_share"] = [float(v) for v in self.share]
        if self.attention is not None:
            d["attention"] = [float(v) for v in self.attention]
        if self.region is not None:
            d["region_area_share"] = float(self.region.mean())
            per = [energy_share(m, self.region) for m in self.cam]
            d["cam_energy_in_region"] = float(np.mean(per))
            if len(per) > 1:
                d["cam_energy_in_region_per_frame"] = [float(v) for v in per]
        d.update(self.extra)
        return d


def write_explanations(results: list[CaseExplanation], out, meta: dict) -> Path:
    """``out/<case>.png`` per case, ``out/arrays/<case>.npz`` (for figures), ``out/explain.json``."""
    out = Path(out)
    for r in results:
        case_figure(r, out / f"{r.case_id}.png", title_extra=meta.get("name", ""))
        arrays = {"image": r.image.astype(np.float16), "cam": r.cam.astype(np.float16)}
        if r.region is not None:
            arrays["region"] = r.region
        with atomic_path(out / "arrays" / f"{r.case_id}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
    cases = [r.numbers() for r in results]
    summary = dict(meta)
    with_reg = [c for c in cases if "cam_energy_in_region" in c]
    if with_reg:
        summary["mean_cam_energy_in_region"] = float(np.nanmean([c["cam_energy_in_region"] for c in with_reg]))
        summary["mean_region_area_share"] = float(np.mean([c["region_area_share"] for c in with_reg]))
    write_json(out / "explain.json", {**summary, "cases": cases})
    return out / "explain.json"


def load_explanations(folder) -> tuple[dict, list[CaseExplanation]]:
    """Read back what :func:`write_explanations` wrote: (meta, results)."""
    folder = Path(folder)
    path = folder / "explain.json"
    if not path.is_file():
        raise CeusError(f"{path} not found (run `ceusfusion explain` first)")
    d = json.loads(path.read_text())
    res = []
    for c in d["cases"]:
        z = np.load(folder / "arrays" / f"{c['case_id']}.npz")
        res.append(CaseExplanation(
            case_id=c["case_id"], label=c["label"], prob=c["prob"], set=c["set"], folds=c["folds"],
            image=z["image"].astype(np.float32), cam=z["cam"].astype(np.float32),
            contribution=np.array(c["frame_contribution"]) if "frame_contribution" in c else None,
            attention=np.array(c["attention"]) if "attention" in c else None,
            region=z["region"] if "region" in z.files else None,
            extra={k: c[k] for k in ("panels", "cam_class") if k in c}))
    meta = {k: v for k, v in d.items() if k != "cases"}
    return meta, res


def figure5_from_folders(image_dir, video_dir, out, outcome: Outcome | None = None) -> tuple[Path, Path]:
    """Figure 5 (``figures.explain.figure5``) from two explain output folders: a DL_image model's, then a
    DL_video model's. Each row is labelled with the model name recorded in the folder's explain.json and its class
    in the ``outcome``'s words (neutral when not given)."""
    imeta, ires = load_explanations(image_dir)
    vmeta, vres = load_explanations(video_dir)
    return figure5(ires, vres, out, image_name=imeta.get("name", Path(image_dir).name),
                   video_name=vmeta.get("name", Path(video_dir).name), outcome=outcome)
