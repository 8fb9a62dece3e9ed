"""The ASGI app of ``ceusfusion serve``: one server-rendered page and the JSON API it calls.

Why Starlette: the page is one HTML file, a small script and a stylesheet; what is needed is routing,
an async request body to stream uploads from, a thread pool for the CPU-bound prediction and a
test-friendly app object. Starlette is that and little else (no ORM, no template engine, no
validation layer we would not use); uvicorn serves it. A heavier framework would add weight and no
feature the page uses.

Routes: ``GET /`` the page, ``GET /static/{app.js,app.css}``, ``GET /api/model`` the model card,
``POST /api/preview`` a still or video frame for drawing a box, ``POST /api/predict`` what
``ceusfusion predict --json`` returns for the uploaded files (Grad-CAM overlays inline as data URLs).
Every error is ``{"error": "one line"}`` with a 4xx (5xx only for our own bugs), never a traceback.
"""

from __future__ import annotations

import html
import logging
import threading
from importlib.resources import files as package_files
from pathlib import Path
from string import Template

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ceusfusion.core.errors import CeusError
from ceusfusion.core.runtime import threads as torch_threads
from ceusfusion.deploy.export import finite
from ceusfusion.deploy.predict import LoadedBundle, predict_loaded
from ceusfusion.io.filetypes import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ceusfusion.serve.card import card_html, model_card
from ceusfusion.serve.guards import guard_middleware, without_server_paths
from ceusfusion.serve.preview import png_data_url, preview
from ceusfusion.serve.protocol import Limits
from ceusfusion.serve.uploads import (
    FILE_FIELDS,
    UploadError,
    Uploads,
    masks_from_boxes,
    new_folder,
    parse_boxes,
    parse_clinical,
    read_multipart,
    remove_folder,
)

log = logging.getLogger("ceusfusion.serve")
DEFAULT_MAX_UPLOAD_MB = 512
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
DICOM_IDENTIFIERS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames",
                     "AccessionNumber", "PatientAddress", "InstitutionName", "ReferringPhysicianName", "StudyID")


def error(message: str, status: int = 400, close: bool = False) -> JSONResponse:
    """``{"error": message}``; ``close``: end the connection too (a body that was not read to its end)."""
    return JSONResponse({"error": message}, status_code=status, headers={"connection": "close"} if close else None)


def dicom_identifiers(paths) -> set[str]:
    """Identifying values of the uploaded DICOM files (and each part of a person's name), to keep out of replies."""
    import pydicom  # here, not at the top: most requests carry no DICOM; pydicom comes with io.dicom anyway
    from pydicom.multival import MultiValue  # with pydicom, for the same reason

    found: set[str] = set()
    for p in paths:
        if p.suffix not in (".dcm", ".dicom"):
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        except Exception:  # unreadable headers carry nothing we could echo either
            continue
        for tag in DICOM_IDENTIFIERS:
            v = ds.get(tag)
            for item in (v if isinstance(v, (list, MultiValue)) else [v]):
                s = str(item or "").strip()
                found.update(x for x in {s, *s.replace("^", " ").split()} if len(x) >= 3)
    return found


def scrub(obj, secrets: set[str]):
    """``obj`` with every string free of ``secrets`` (longest first, so a full name goes before its parts)."""
    if not secrets:
        return obj
    if isinstance(obj, str):
        if obj.startswith("data:image/png;base64,"):  # pixels, not text: a short name could match base64 by chance
            return obj
        for s in sorted(secrets, key=len, reverse=True):
            obj = obj.replace(s, "[removed]")
        return obj
    if isinstance(obj, dict):
        return {k: scrub(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v, secrets) for v in obj]
    return obj


class Service:
    """The bundle, verified and loaded whole at start (every file hashed, every model and the fusion model
    built), then used from memory for every request: nothing is read from the bundle's folder afterwards, so a
    change there cannot reach a prediction. One prediction at a time."""

    def __init__(self, bundle: str | Path, max_upload_bytes: int, tmp_root: str | Path | None = None,
                 expect_sha256: str | None = None, limits: Limits = Limits()):
        self.bundle = Path(bundle).absolute()
        self.loaded = LoadedBundle(self.bundle, expect_sha256=expect_sha256).load_all()
        meta = self.loaded.meta
        self.bundle_id = meta["bundle_sha256"]
        self.card = model_card(self.bundle, meta)
        self.max_upload_bytes = int(max_upload_bytes)
        self.tmp_root = tmp_root
        self.limits = limits
        # a batch of one on a few cores: running two at once only makes both slower, and torch's thread
        # count is process-wide; requests queue here, each in its own folder with its own result
        self.lock = threading.Lock()
        assets = package_files("ceusfusion.serve") / "static"
        self.assets = {name: (assets / name).read_bytes() for name in STATIC}
        self.page = Template((assets / "index.html").read_text(encoding="utf-8")).substitute(
            card=card_html(self.card), limit_mb=f"{self.max_upload_bytes / 1e6:.0f}", bundle_id=self.bundle_id[:12],
            negative=html.escape(self.card["outcome"]["negative"]), positive=html.escape(self.card["outcome"]["positive"]))

    def predict_files(self, up: Uploads) -> dict:
        """``predict`` on the uploaded files (in the request's folder), overlays read back inline; the answer
        names the bundle by its id, never by its folder on this server."""
        f = up.files
        with self.lock, torch_threads(1):
            res = predict_loaded(self.loaded, f.get("image"), f.get("image_mask"), f.get("video"),
                                 f.get("video_mask"), out=up.folder / "out", cams=True,
                                 clinical=parse_clinical(up.text.get("clinical")), boxes=set(up.drawn))
        res.pop("bundle", None)
        for m in res["models"].values():
            if m.get("gradcam"):
                m["gradcam"] = png_data_url(Path(m["gradcam"]).read_bytes())
        return res

    def public(self, message: str, up: Uploads) -> str:
        """A message for the client: temp paths named by their field, the bundle by a word, no other path."""
        return without_server_paths(up.describe(message), {str(self.bundle): "the bundle",
                                                            str(self.bundle.resolve()): "the bundle"})


async def _uploads(service: Service, request: Request, folder: Path, allowed) -> Uploads:
    return await read_multipart(request.headers.get("content-type", ""), request.headers.get("content-length"),
                                request.stream(), folder, service.max_upload_bytes, allowed=allowed,
                                seconds=service.limits.body_s)


async def _answer(service: Service, request: Request, allowed, job) -> JSONResponse:
    """Uploads into a fresh folder, ``job(uploads)`` in the thread pool, one JSON answer; the folder is removed
    before the answer is sent, whatever happened."""
    folder = new_folder(service.tmp_root)
    up = Uploads(folder)
    try:
        up = await _uploads(service, request, folder, allowed)
        secrets = dicom_identifiers(up.files.values())
        try:
            result = await run_in_threadpool(job, up)
        except CeusError as exc:
            msg = service.public(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, up)
            return error(scrub(msg, secrets), getattr(exc, "status", 400))
        return JSONResponse(scrub(finite(result), secrets))
    except UploadError as exc:  # the body may not have been read to its end: the connection ends with the answer
        return error(service.public(str(exc), up), exc.status, close=True)
    except Exception as exc:  # our bug, not the user's file: logged here, one line there
        log.exception("request failed")
        return error(f"internal error ({type(exc).__name__}); the server's log has the details", 500)
    finally:
        remove_folder(folder)


def _predict_job(service: Service):
    def job(up: Uploads) -> dict:
        for m in ("image", "video"):
            if f"{m}_mask" in up.files and m not in up.files:
                raise UploadError(f"{m}_mask given without the {m} it belongs to")
        if "image" not in up.files and "video" not in up.files:
            raise UploadError("give the B-mode still (image) and/or the CEUS video (video)")
        masks_from_boxes(up, parse_boxes(up.text.get("box")))
        return service.predict_files(up)
    return job


def _preview_job(up: Uploads) -> dict:
    given = [k for k in ("image", "video") if k in up.files]
    if len(given) != 1:
        raise UploadError("send one file, as image (a still) or video")
    return preview(up.files[given[0]], given[0])


def create_app(bundle: str | Path, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, tmp_root: str | Path | None = None,
               allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS, expect_sha256: str | None = None,
               limits: Limits = Limits()) -> Starlette:
    """The app for one bundle, verified and loaded whole now: a bad bundle is a CeusError before anything listens.

    ``allowed_hosts``: Host headers accepted (loopback names by default, which stops a web page from
    reaching the server through DNS rebinding); None accepts any, for ``--host`` other than loopback.
    ``tmp_root``: where each request's temp folder is made (default: the system's temp folder).
    ``expect_sha256``: the bundle id to pin (``serve --expect-sha256``); ``limits``: the slow-client timeouts
    (the server reads them from ``app.state.limits``).
    """
    service = Service(bundle, int(max_upload_mb * 1e6), tmp_root, expect_sha256=expect_sha256, limits=limits)

    async def page(request: Request) -> Response:
        return HTMLResponse(service.page)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in service.assets:
            return error(f"no such file: {name[:40]}", 404)
        return Response(service.assets[name], media_type=STATIC[name])

    async def model(request: Request) -> Response:
        return JSONResponse(service.card)

    async def predict_route(request: Request) -> Response:
        return await _answer(service, request, FILE_FIELDS, _predict_job(service))

    async def preview_route(request: Request) -> Response:
        return await _answer(service, request, {"image": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES}, _preview_job)

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)  # browsers ask; an answer keeps their console quiet

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(str(exc.detail), exc.status_code)

    routes = [Route("/", page), Route("/static/{name}", static), Route("/api/model", model), Route("/favicon.ico", no_icon),
              Route("/api/predict", predict_route, methods=["POST"]), Route("/api/preview", preview_route, methods=["POST"])]
    app = Starlette(routes=routes, middleware=guard_middleware(allowed_hosts),
                    exception_handlers={HTTPException: http_error})
    app.state.service, app.state.limits = service, limits
    return app
