"""BOXES.csv, what ``ceusfusion annotate`` writes: one row per answered case, the contract ``validate --boxes``,
``prepare --boxes`` and the study read.

Columns ``case_id,image_box,video_box,video_box_time``. A box is ``"x,y,w,h"``: integers in the source file's
pixel grid, x and y (the top-left corner) >= 0, w and h >= 1, inside the frame. ``video_box_time`` is the
time, in seconds from the clip's start, of the frame the video box was drawn on (written to the
millisecond, rounded down: the reader takes the nearest frame, so the same one). An empty cell is no box; a
row with both cells empty is a case the user looked at and left without a box.

The file is rewritten whole, atomically (``core.fsutil.write_csv``), after every answer: a kill leaves the
previous answers or the new ones, never half a file, and a restart resumes from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import read_csv_exact, write_csv
from ceusfusion.ingest.roi import XYWH, parse_xywh

COLUMNS = ("case_id", "image_box", "video_box", "video_box_time")


@dataclass(frozen=True)
class Answer:
    """One case's boxes (None: no box) and the time of the frame the video box was drawn on."""

    image_box: XYWH | None = None
    video_box: XYWH | None = None
    video_box_time: float | None = None

    def row(self, case_id: str) -> dict:
        t = self.video_box_time if self.video_box is not None else None
        return {"case_id": case_id, "image_box": box_text(self.image_box), "video_box": box_text(self.video_box),
                "video_box_time": "" if t is None else written_time(t)}

    def record(self) -> dict:
        """What the page shows (JSON)."""
        return {"image_box": None if self.image_box is None else list(self.image_box),
                "video_box": None if self.video_box is None else list(self.video_box),
                "video_box_time": self.video_box_time if self.video_box is not None else None}


def written_time(t: float) -> str:
    """A box's time as the file holds it: to the millisecond, rounded down (the reader takes the nearest frame)."""
    return f"{math.floor(t * 1000) / 1000:.3f}"


def box_text(box: XYWH | None) -> str:
    return "" if box is None else ",".join(str(int(v)) for v in box)


def parse_box(value, what: str) -> XYWH | None:
    """``"x,y,w,h"`` or ``[x, y, w, h]`` (whole numbers, x, y >= 0, w, h >= 1); None for an empty cell or null."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    if isinstance(value, (list, tuple)):  # the page sends numbers; the manifest's reader parses the text
        if len(value) != 4 or not all(isinstance(p, int) and not isinstance(p, bool) for p in value):
            raise CeusError(f"{what}: {str(value)[:40]!r} is not four integers x,y,w,h (pixels of the file)")
        value = ",".join(str(p) for p in value)
    try:
        return parse_xywh(str(value))
    except CeusError as exc:
        raise CeusError(f"{what}: {exc}") from None


def parse_time(value, what: str) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if isinstance(value, bool) or not math.isfinite(t) or t < 0:
        raise CeusError(f"{what}: {str(value)[:40]!r} is not a time in seconds (a number >= 0)")
    return t


def inside(box: XYWH | None, width: int, height: int, what: str) -> None:
    """A box must lie in its picture's frame, as the boxes reader checks."""
    if box is not None and (box[0] + box[2] > width or box[1] + box[3] > height):
        raise CeusError(f"{what} {box_text(box)} lies outside the {width}x{height} px frame")


def read_answers(path: Path) -> tuple[dict[str, Answer], dict[str, dict], list[str]]:
    """(answers by case id, every row as it is written by case id, one warning line per row that is not an
    answer).

    The caller writes back, as they are, the rows of case ids the cohort does not have, and a malformed row
    (warned about; its case counts as not answered and is asked again) until its case is answered."""
    if not path.is_file():
        return {}, {}, []
    df = read_csv_exact(path, dtype=str, keep_default_na=False)
    if list(df.columns) != list(COLUMNS):
        raise CeusError(f"{path}: columns {', '.join(map(str, df.columns))[:120]} are not {','.join(COLUMNS)}; "
                        "not a boxes file this tool wrote (choose another --out)")
    answers, rows, warnings = {}, {}, []
    for i, r in enumerate(df.to_dict(orient="records"), start=2):
        cid = str(r["case_id"]).strip()
        rows.setdefault(cid, {k: str(r[k]) for k in COLUMNS})
        try:
            answers[cid] = Answer(parse_box(r["image_box"], "image_box"), parse_box(r["video_box"], "video_box"),
                                  parse_time(r["video_box_time"], "video_box_time"))
        except CeusError as exc:
            warnings.append(f"{path.name} line {i}, case {cid}: {exc}; the case will be asked again "
                            "(its row is kept until then)")
    return answers, rows, warnings


def write_answers(path: Path, order: list[str], answers: dict[str, Answer], kept: dict[str, dict]) -> None:
    """The whole file, atomically: the cohort's cases in its order (the answer, else the row read back as it
    was), then the rows of case ids the cohort does not have."""
    rows = [answers[c].row(c) if c in answers else kept[c] for c in order if c in answers or c in kept]
    rows += [r for c, r in kept.items() if c not in set(order)]
    write_csv(path, pd.DataFrame(rows, columns=list(COLUMNS)), index=False)
