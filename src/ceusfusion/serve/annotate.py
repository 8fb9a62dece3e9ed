"""``ceusfusion annotate COHORT --out BOXES.csv``: a local page to draw each case's boxes, in seconds a case.

The case list with its progress; the still, and the clip with a frame slider (frames decoded by the
package's readers, a few cases kept decoded); drag a box, move it on any frame; keys for next, previous
and accept. Every answer rewrites BOXES.csv atomically at once (``serve.boxes``), so a restart, or a reload
of the page, resumes at the first case without an answer. The manifest is only read: ``--out`` may not be
it, and a file there that this tool did not write is refused unless ``--force`` (``core.fsutil.claim``).

With ``--segmenter MODEL`` (a ``segment train`` folder, loaded once before the page listens), the page draws the
segmenter's proposal for the picture shown (``serve.proposal``: box-prompted from the user's box, automatic
otherwise, exactly what ``segment predict`` makes of the saved answer); a key accepts it, a new box redoes it.

The same stack and guards as ``serve``: loopback only (Host check), POSTs from the page's own Origin only,
slow clients cut off, strict CSP, no path of the disk in a message beyond the manifest's own relative paths.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from collections import OrderedDict
from importlib.resources import files as package_files
from pathlib import Path
from string import Template
from typing import Callable

import pandas as pd
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import claim
from ceusfusion.ingest.cohort import read_manifest, resolve
from ceusfusion.io.image import read_image
from ceusfusion.serve.boxes import Answer, inside, parse_box, parse_time, read_answers, write_answers
from ceusfusion.serve.guards import guard_middleware, without_server_paths
from ceusfusion.serve.preview import Clip, clip_frames, png_bytes
from ceusfusion.serve.protocol import Limits
from ceusfusion.serve.server import listen
from ceusfusion.serve.uploads import UploadError, within

log = logging.getLogger("ceusfusion.annotate")
LOOPBACK = ("127.0.0.1", "localhost")
STATIC = {"annotate.js": "text/javascript; charset=utf-8", "annotate.css": "text/css; charset=utf-8"}
MAX_BODY = 4096  # an answer is a few dozen bytes
CACHED_CASES = 3  # decoded stills and clips kept (the case shown, and the ones either side)
ANSWER_KEYS = {"image_box", "video_box", "video_box_time"}


def cohort_cases(cohort: Path) -> list[dict]:
    """``[{"case_id", "image", "video"}]`` (paths as the manifest writes them, None where empty)."""
    df = read_manifest(cohort)
    if "case_id" not in df.columns or not ({"image", "video"} & set(df.columns)):
        raise CeusError(f"{cohort}: a cohort manifest needs case_id and an image and/or video column")
    cases, seen = [], set()
    for row, r in enumerate(df.to_dict(orient="records"), start=1):
        cid = "" if pd.isna(r["case_id"]) else str(r["case_id"]).strip()
        if not cid or cid in seen:
            raise CeusError(f"{cohort}: row {row}: case_id {'missing' if not cid else repr(cid) + ' repeated'}; "
                            "each case needs its own id")
        seen.add(cid)
        cases.append({"case_id": cid, **{c: (None if pd.isna(r.get(c)) or not str(r.get(c)).strip() else str(r[c]))
                                         for c in ("image", "video")}})
    return cases


class Annotator:
    """The cohort's cases, the answers so far, and a few cases' decoded pictures."""

    def __init__(self, cohort: str | Path, out: str | Path, force: bool = False, warn: Callable[[str], None] = print,
                 frames: int = 240, segmenter: str | Path | None = None):
        self.cohort, self.out, self.frames = Path(cohort), Path(out), frames
        self.cases = cohort_cases(self.cohort)
        self.proposer = None
        if segmenter is not None:  # loaded before out is claimed: a bad MODEL folder is one line and leaves no file
            from ceusfusion.serve.proposal import Proposer  # torch loads only for --segmenter

            self.proposer = Proposer(segmenter)
        claim(self.out.parent, files=[self.out], force=force, inputs=[self.cohort])
        answers, rows, warnings = read_answers(self.out)
        ids = [c["case_id"] for c in self.cases]
        self.answers = {k: v for k, v in answers.items() if k in set(ids)}
        self.kept = rows  # every row read back, written again as it was until its case is answered
        for w in warnings:
            warn(w)
        self.lock = threading.Lock()
        self.cache: OrderedDict = OrderedDict()

    def case(self, i: int) -> dict:
        if not 0 <= i < len(self.cases):
            raise UploadError(f"no case {i} (the cohort has {len(self.cases)})", 404)
        return self.cases[i]

    def resume(self) -> int:
        """The first case without an answer (the last case when every one has one)."""
        return next((i for i, c in enumerate(self.cases) if c["case_id"] not in self.answers), len(self.cases) - 1)

    def overview(self) -> dict:
        return {"cases": [{"case_id": c["case_id"], "image": c["image"] is not None, "video": c["video"] is not None,
                           "answer": self._answer(c)} for c in self.cases],
                "resume": self.resume(), "done": len(self.answers), "total": len(self.cases), "out": self.out.name,
                "segmenter": self.proposer.summary() if self.proposer else None}

    def proposal(self, i: int, modality: str, box, t) -> dict:
        """The segmenter's proposal for case ``i``'s still or clip frame (``box`` "x,y,w,h" or None; ``t`` the
        clip frame's time in seconds, default 0)."""
        case = self.case(i)
        if self.proposer is None:
            raise UploadError("no segmenter: start `ceusfusion annotate` with --segmenter MODEL", 404)
        if modality not in ("image", "video") or case[modality] is None:
            raise UploadError(f"case {case['case_id']}: no {modality[:20]} in the manifest", 404)
        box = parse_box(box, f"case {case['case_id']}: {modality}_box")
        t = parse_time(t, f"case {case['case_id']}: t") if modality == "video" else None
        return self.proposer.answer(self.cohort, case, modality, box, 0.0 if t is None else t)

    def _answer(self, c: dict) -> dict | None:
        a = self.answers.get(c["case_id"])
        return None if a is None else a.record()

    def picture(self, i: int, column: str):
        """The case's still (``(width, height, png)``) or sampled clip (:class:`Clip`), decoded once and kept."""
        case = self.case(i)
        rel = case[column]
        if rel is None:
            raise UploadError(f"case {case['case_id']}: no {column} in the manifest", 404)
        key = (i, column)
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        path = resolve(self.cohort, rel)
        try:
            if column == "image":
                arr = read_image(path)
                value = (int(arr.shape[1]), int(arr.shape[0]), png_bytes(arr))
            else:
                value = clip_frames(path, self.frames)
        except CeusError as exc:
            msg = (str(exc).splitlines() or [""])[0].replace(str(path), rel)
            raise UploadError(f"case {case['case_id']}: {column}: {msg}", 422) from None
        with self.lock:
            self.cache[key] = value
            while len(self.cache) > 2 * CACHED_CASES:
                self.cache.popitem(last=False)
        return value

    def info(self, i: int) -> dict:
        """The case, its answer and its pictures' sizes (the clip's frame times), or one line per picture that
        cannot be read: the page shows it and the user goes on to the next case."""
        case = self.case(i)
        out = {"index": i, "case_id": case["case_id"], "answer": self._answer(case), "image": None, "video": None}
        for column in ("image", "video"):
            if case[column] is None:
                continue
            try:
                pic = self.picture(i, column)
            except UploadError as exc:
                out[column] = {"error": str(exc)}
                continue
            out[column] = ({"width": pic[0], "height": pic[1]} if column == "image" else
                           {"width": pic.width, "height": pic.height, "times": [round(t, 4) for t in pic.times]})
        return out

    def answer(self, i: int, body: dict) -> dict:
        """Check one case's boxes against its pictures, then rewrite BOXES.csv with it (atomically)."""
        case = self.case(i)
        if not isinstance(body, dict) or not set(body) <= ANSWER_KEYS:
            raise UploadError(f"an answer is a JSON object with {', '.join(sorted(ANSWER_KEYS))}")
        cid = case["case_id"]
        a = Answer(parse_box(body.get("image_box"), f"case {cid}: image_box"),
                   parse_box(body.get("video_box"), f"case {cid}: video_box"),
                   parse_time(body.get("video_box_time"), f"case {cid}: video_box_time"))
        for column, box in (("image", a.image_box), ("video", a.video_box)):
            if box is None:
                continue
            pic = self.picture(i, column)
            width, height = (pic[0], pic[1]) if column == "image" else (pic.width, pic.height)
            inside(box, width, height, f"case {case['case_id']}: {column}_box")
        if a.video_box is not None:
            clip: Clip = self.picture(i, "video")
            t = 0.0 if a.video_box_time is None else a.video_box_time
            if t > clip.times[-1] + 1e-6:
                raise CeusError(f"case {case['case_id']}: video_box_time {t:g} s is beyond the clip "
                                f"(its last frame is at {clip.times[-1]:g} s)")
            a = Answer(a.image_box, a.video_box, t)
        with self.lock:
            self.answers[case["case_id"]] = a
            write_answers(self.out, [c["case_id"] for c in self.cases], self.answers, self.kept)
        return {"answer": a.record(), "done": len(self.answers), "total": len(self.cases), "resume": self.resume()}


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": without_server_paths(message)}, status_code=status)


async def read_json(request: Request, seconds: float) -> dict:
    """A small JSON body (an answer), within the size limit and the body deadline."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UploadError("send the answer as application/json (the page does)", 415)
    data = b""
    async for chunk in within(request.stream(), seconds):
        data += chunk
        if len(data) > MAX_BODY:
            raise UploadError(f"an answer is at most {MAX_BODY} bytes", 413)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UploadError("the answer is not JSON") from None


def _routes(ann: Annotator, page: str, assets: dict, limits: Limits) -> list[Route]:
    async def guarded(job, *args) -> Response:
        try:
            result = await run_in_threadpool(job, *args)
        except UploadError as exc:
            return error(str(exc), exc.status)
        except CeusError as exc:
            return error((str(exc).splitlines() or [""])[0], 400)
        except Exception as exc:  # our bug, not the user's file: logged here, one line there
            log.exception("request failed")
            return error(f"internal error ({type(exc).__name__}); the console has the details", 500)
        return result if isinstance(result, Response) else JSONResponse(result)

    def image(i: int) -> Response:
        return Response(ann.picture(i, "image")[2], media_type="image/png")

    def frame(i: int, k: int) -> Response:
        clip = ann.picture(i, "video")
        if not 0 <= k < len(clip.frames):
            raise UploadError(f"no frame {k} (the slider has {len(clip.frames)})", 404)
        return Response(clip.frames[k], media_type="image/jpeg")

    async def answer(request: Request) -> Response:
        try:
            body = await read_json(request, limits.body_s)
        except UploadError as exc:
            return error(str(exc), exc.status)
        return await guarded(ann.answer, request.path_params["i"], body)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return error(f"no such file: {name[:40]}", 404)
        return Response(assets[name], media_type=STATIC[name])

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)  # browsers ask; an answer keeps their console quiet

    async def cases(request: Request) -> Response:
        return await guarded(ann.overview)

    async def info(request: Request) -> Response:
        return await guarded(ann.info, request.path_params["i"])

    async def still(request: Request) -> Response:
        return await guarded(image, request.path_params["i"])

    async def clip_frame(request: Request) -> Response:
        return await guarded(frame, request.path_params["i"], request.path_params["k"])

    async def proposal(request: Request) -> Response:
        q = request.query_params
        return await guarded(ann.proposal, request.path_params["i"], request.path_params["modality"], q.get("box"), q.get("t"))

    return [Route("/", index), Route("/static/{name}", static), Route("/favicon.ico", no_icon),
            Route("/api/case/{i:int}/proposal/{modality}", proposal),
            Route("/api/cases", cases), Route("/api/case/{i:int}", info), Route("/api/case/{i:int}", answer, methods=["POST"]),
            Route("/api/case/{i:int}/image", still), Route("/api/case/{i:int}/frame/{k:int}", clip_frame)]


def create_annotate_app(cohort: str | Path, out: str | Path, force: bool = False, warn: Callable[[str], None] = print,
                        limits: Limits = Limits(), frames: int = 240, segmenter: str | Path | None = None) -> Starlette:
    """The annotate app: the cohort read, the segmenter loaded, ``out`` claimed and its answers read back, before
    anything listens."""
    ann = Annotator(cohort, out, force=force, warn=warn, frames=frames, segmenter=segmenter)
    assets_dir = package_files("ceusfusion.serve") / "static"
    assets = {name: (assets_dir / name).read_bytes() for name in STATIC}
    page = Template((assets_dir / "annotate.html").read_text(encoding="utf-8")).substitute(
        cohort=html.escape(ann.cohort.name), out=html.escape(ann.out.name))

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(str(exc.detail), exc.status_code)

    app = Starlette(routes=_routes(ann, page, assets, limits), middleware=guard_middleware(LOOPBACK),
                    exception_handlers={HTTPException: http_error})
    app.state.annotator, app.state.limits = ann, limits
    return app


def annotate(cohort: str | Path, out: str | Path, port: int = 8000, force: bool = False,
             warn: Callable[[str], None] = print, limits: Limits = Limits(), segmenter: str | Path | None = None) -> None:
    """`ceusfusion annotate`: check the cohort, the segmenter and BOXES.csv, then serve the page on this computer only."""
    if not 0 <= port <= 65535:
        raise CeusError(f"--port {port}: not a TCP port (0-65535)")
    app = create_annotate_app(cohort, out, force=force, warn=warn, limits=limits, segmenter=segmenter)
    ann = app.state.annotator
    seg = f"; proposals from the segmenter {ann.proposer.model}" if ann.proposer else ""
    warn(f"ceusfusion annotate: {len(ann.cases)} cases, {len(ann.answers)} answered; answers go to {ann.out} "
         f"(each at once){seg}; open http://127.0.0.1:{port}/ (Ctrl+C stops)")
    listen(app, "127.0.0.1", port, limits)
