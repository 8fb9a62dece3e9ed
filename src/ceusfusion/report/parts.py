"""The report's building blocks (tables, embedded figures, notes), shared by its section modules."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

from ceusfusion.core.outcome import Outcome
from ceusfusion.report.captions import figure_caption


def img(path: Path, caption: str = "", width: int | None = None) -> str:
    """A figure embedded as a data URI (the report is one offline file); nothing if the file is absent.

    A figure that ``report.captions.CAPTIONS`` knows gets the caption of that table (what it shows, which
    set, which models, n) and its display width, whatever ``caption`` says; ``width`` still wins."""
    if not path.is_file():
        return ""
    known = figure_caption(path)
    if known:
        caption, width = known[0], width or known[1]
    mime = "image/svg+xml" if path.suffix.lower() == ".svg" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    style = f' style="max-width:{width}px"' if width else ""  # on the box: the caption wraps at the figure's width
    cap = f'<div class="cap">{html.escape(caption)}</div>' if caption else ""
    return (f'<div class="fig"{style}><img alt="{html.escape(caption or path.stem)}" src="data:{mime};base64,{data}">'
            f"{cap}</div>")


def table(df: pd.DataFrame, max_rows: int = 200) -> str:
    """A table in a ``div.wide`` that scrolls sideways when the table is wider than the page."""
    body = df.head(max_rows).to_html(index=False, border=0, na_rep="", escape=True, float_format=lambda v: f"{v:.3f}")
    return f'<div class="wide">{body}</div>'


def missing(what: str) -> str:
    return f'<p class="note">{html.escape(what)} not available in this run.</p>'


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def para(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def read_metrics(run: Path) -> dict:
    path = run / "evaluation" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def outcome_of(run: Path) -> Outcome:
    """The outcome's words of a run: what evaluate recorded in metrics.json, else the study config in manifest.json,
    else neutral words (a run whose study named no outcome never reads as another study's)."""
    rec = read_metrics(run).get("outcome")
    if not rec:
        manifest = run / "manifest.json"
        rec = (json.loads(manifest.read_text()).get("config") or {}).get("outcome") if manifest.is_file() else None
    return Outcome.from_record(rec)


def fmt(v, nd: int = 3) -> str:
    """A number for a table cell; NA for a missing or non-finite one."""
    if v is None or isinstance(v, str):
        return "NA" if v is None else v
    return "NA" if not math.isfinite(v) else f"{v:.{nd}f}"


def pval(p) -> str:
    if p is None or isinstance(p, str) or not math.isfinite(p):
        return "NA"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def with_ci(v, ci, nd: int = 3) -> str:
    lo, hi = (ci or [None, None])[:2]
    return f"{fmt(v, nd)} ({fmt(lo, nd)} to {fmt(hi, nd)})"
