"""The segmenter's proposal on the annotate page (``ceusfusion annotate COHORT --out BOXES.csv --segmenter MODEL``).

For the picture shown, the mask ``segment predict`` would write from the answer the page would save: the row
that BOXES.csv would hold (``serve.boxes.Answer``) is loaded as predict loads it (``segment.data.load_picture``:
the still, or the clip's frame nearest the box's written time, in grey) and segmented by the same fold models
(``segment.infer.segment``): box-prompted from the user's box, automatic (the whole frame) without one. The
answer is the mask's contour in the file's pixels and the box the mask was refined in, which the user accepts:
written to BOXES.csv, ``segment predict --boxes`` gives this very mask again. The automatic proposal of a clip is
on the frame shown; accepting it records that frame's time with the box.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from skimage.measure import approximate_polygon, find_contours

from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.ingest.cohort import absolute
from ceusfusion.ingest.roi import XYWH, Box
from ceusfusion.segment.data import Sample, frame_at, grey, load_picture
from ceusfusion.segment.infer import Result, segment
from ceusfusion.segment.link import MODE_WORDS
from ceusfusion.segment.predict import load_segmenter
from ceusfusion.segment.record import read_record
from ceusfusion.serve.boxes import Answer, written_time


def contours(mask: np.ndarray, tolerance: float = 0.5) -> list[list[list[float]]]:
    """The mask's outlines as polygons of ``[x, y]`` in the file's pixels (pixel i spans [i, i + 1)), simplified
    to ``tolerance`` px; the padding closes an outline that touches the frame's edge."""
    padded = np.pad(mask.astype(np.float32), 1)
    out = []
    for c in find_contours(padded, 0.5):
        c = approximate_polygon(c, tolerance) - 1 + 0.5  # back from the padding, to pixel centres
        out.append([[round(float(x), 2), round(float(y), 2)] for y, x in c])
    return out


def xywh(box: Box | None) -> list[int] | None:
    if box is None:
        return None
    y0, x0, y1, x1 = box
    return [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]


class Proposer:
    """The segmenter's fold models, loaded once before the page listens (a bad MODEL folder is one line)."""

    def __init__(self, model: str | Path, device: str = "auto"):
        self.model = Path(model)
        self.record = read_record(self.model)
        self.seg = load_segmenter(self.model, self.record, device)
        self.lock = threading.Lock()  # one segmentation at a time: the CPU's threads go to it

    def summary(self) -> dict:
        """What the page says about the segmenter: its folder's name, encoder and cross-validated Dice."""
        return {"model": self.model.name, "encoder": self.record.encoder, "trained_cases": len(self.record.trained_on),
                "cv_dice": {MODE_WORDS.get(m, m): v.get("dice") for m, v in self.record.cv.items()}}

    def picture(self, cohort: Path, case: dict, modality: str, box: XYWH | None, t: float) -> Sample:
        """The picture as `segment predict` loads it from the answer the page would save."""
        cid = case["case_id"]
        row = {"case_id": cid, "image": case["image"], "video": case["video"],
               **Answer(box if modality == "image" else None, box if modality == "video" else None, t).row(cid)}
        if modality == "video" and box is None:  # automatic on the frame shown (predict: the frame of the box's time)
            rel = case["video"]
            try:
                frame, idx, when = frame_at(absolute(cohort, rel), float(written_time(t)))
            except CeusError as exc:
                raise CaseError(cid, rel, str(exc).replace(str(absolute(cohort, rel)), rel)) from None
            return Sample(cid, modality, cid, grey(frame), absolute(cohort, rel), None, None, idx, when)
        return load_picture(row, modality, cohort, with_mask=False)

    def propose(self, cohort: Path, case: dict, modality: str, box: XYWH | None, t: float) -> tuple[Result, str, Sample]:
        """(result, mode, picture): exactly what `segment predict` makes of this answer."""
        s = self.picture(cohort, case, modality, box, t)
        with self.lock, torch.inference_mode():
            res, mode = segment(self.seg, s.frame, s.box)
        return res, mode, s

    def answer(self, cohort: Path, case: dict, modality: str, box: XYWH | None, t: float) -> dict:
        """The page's JSON: the contour, the box to accept, the mode, the folds' agreement, the frame's time."""
        try:
            res, mode, s = self.propose(cohort, case, modality, box, t)
        except CaseError as exc:
            raise CeusError(f"case {exc.case_id}: {modality}: {exc.file}: {exc.problem}") from None
        found = bool(res.mask.any())
        return {"case_id": case["case_id"], "modality": modality, "mode": mode, "mode_words": MODE_WORDS[mode],
                "box": xywh(res.box) if found else None, "contour": contours(res.mask) if found else [],
                "agreement": round(res.agreement, 4), "area_px": int(res.mask.sum()), "time": s.time,
                "width": int(s.frame.shape[1]), "height": int(s.frame.shape[0]),
                "note": None if found else f"no nodule found ({MODE_WORDS[mode]}): draw a box"}
