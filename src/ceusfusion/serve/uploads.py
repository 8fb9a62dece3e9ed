"""One request's uploads: streamed into its own temp folder, size-limited, checked, turned into predict's files.

Why our own multipart reader (``python_multipart``'s push parser) rather than the web framework's form
parser: the framework spools large parts to anonymous files in the system temp folder and applies no
limit to file parts. Here every byte goes straight into the request's folder, the limit is enforced
while the body streams in (a body over it is refused before it is read to the end), only the known
fields are accepted, and an uploaded file's name is used for its suffix only (the name a hospital gives
a file may carry a patient's name; it is never stored or echoed).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import numpy as np
from PIL import Image
from python_multipart.multipart import MultipartParser, parse_options_header

from ceusfusion.core.errors import CeusError
from ceusfusion.io.filetypes import IMAGE_SUFFIXES, MASK_SUFFIXES, VIDEO_SUFFIXES, full_suffix, is_dicom
from ceusfusion.io.image import read_image
from ceusfusion.io.video import video_header

FILE_FIELDS = {"image": IMAGE_SUFFIXES, "image_mask": MASK_SUFFIXES, "video": VIDEO_SUFFIXES, "video_mask": MASK_SUFFIXES}
TEXT_FIELDS = ("box", "clinical")
LABELS = {"image": "B-mode still", "image_mask": "still mask", "video": "CEUS video", "video_mask": "video mask"}
MAX_TEXT_BYTES = 16_384  # a box is a few dozen bytes
TEMP_PREFIX = "ceusfusion-serve-"


class UploadError(CeusError):
    """A bad upload: one line for the page, with the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Uploads:
    """What one request sent: file fields as paths inside ``folder``, text fields as strings."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)
    drawn: set[str] = field(default_factory=set)  # masks made from a box

    def describe(self, message: str) -> str:
        """A message about our temp paths, with each path replaced by the field it came from."""
        for name, path in self.files.items():
            what = f"the box drawn on the {LABELS[name[:-5]]}" if name in self.drawn else f"the uploaded {LABELS.get(name, name)}"
            message = message.replace(str(path), f"{name} ({what})")
        return message.replace(str(self.folder), "upload")


def new_folder(root: str | Path | None) -> Path:
    """A fresh private folder for one request (mkdtemp: 0700, never an existing path)."""
    return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class _Collector:
    """Callbacks of the push parser: headers of each part, then its bytes into a file or a small buffer."""

    def __init__(self, folder: Path, allowed: dict[str, tuple[str, ...]], text_fields: tuple[str, ...]):
        self.folder, self.allowed, self.text_fields = folder, allowed, text_fields
        self.headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self.field: str | None = None
        self.filename: str | None = None
        self.sink = None
        self.buffer = bytearray()
        self.parts: dict[str, tuple[str | None, Path | bytes]] = {}

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field, "on_header_value": self.header_value,
                "on_header_end": self.header_end, "on_headers_finished": self.headers_done, "on_part_data": self.data,
                "on_part_end": self.end}

    def begin(self) -> None:
        self.headers, self.field, self.filename, self.sink, self.buffer = {}, None, None, None, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self.headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def headers_done(self) -> None:
        _, opts = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        known = sorted(self.allowed) + list(self.text_fields)
        if name not in known:
            raise UploadError(f"unknown form field {name[:40]!r} (expected {', '.join(known)})")
        if name in self.parts:
            raise UploadError(f"form field {name!r} given twice")
        self.field = name
        if name in self.allowed:
            self.filename = opts.get(b"filename", b"").decode("utf-8", "replace")
            self.sink = open(self.folder / f"{name}.part", "wb")
        elif b"filename" in opts:
            raise UploadError(f"form field {name!r} is text, not a file")

    def data(self, data: bytes, start: int, end: int) -> None:
        if self.sink is not None:
            self.sink.write(data[start:end])
            return
        self.buffer += data[start:end]
        if len(self.buffer) > MAX_TEXT_BYTES:
            raise UploadError(f"form field {self.field!r} is over {MAX_TEXT_BYTES} bytes")

    def end(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.parts[self.field] = (self.filename, self.folder / f"{self.field}.part")
            self.sink = None
        else:
            self.parts[self.field] = (None, bytes(self.buffer))

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


async def within(body: AsyncIterator[bytes], seconds: float | None) -> AsyncIterator[bytes]:
    """The body's chunks, as long as the whole body arrives within ``seconds`` (else 408: a client trickling
    a body would hold its request's temp folder open)."""
    if seconds is None:
        async for chunk in body:
            yield chunk
        return
    loop = asyncio.get_running_loop()
    end, chunks = loop.time() + seconds, body.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(end - loop.time(), 0.0))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadError(f"upload too slow: the files did not arrive within {seconds:g} s; send them again",
                              408) from None
        yield chunk


async def read_multipart(content_type: str, length: str | None, body: AsyncIterator[bytes], folder: Path,
                         limit: int, allowed: dict[str, tuple[str, ...]] = FILE_FIELDS,
                         text_fields: tuple[str, ...] = TEXT_FIELDS, seconds: float | None = None) -> Uploads:
    """Stream a multipart body into ``folder``; refuse it as soon as it is over ``limit`` bytes (413), or once
    it has taken longer than ``seconds`` (408)."""
    kind, opts = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not opts.get(b"boundary"):
        raise UploadError("send the files as multipart/form-data (the page does; see docs/serve.md)", 415)
    mb = f"{limit / 1e6:.0f} MB" if limit >= 1e6 else f"{limit} bytes"
    if length is not None and length.isdigit() and int(length) > limit:
        raise UploadError(f"upload too large: {int(length) / 1e6:.1f} MB is over the limit of {mb} (--max-upload-mb)", 413)
    collector = _Collector(folder, allowed, text_fields)
    parser = MultipartParser(opts[b"boundary"], collector.callbacks())
    seen = 0
    try:
        async for chunk in within(body, seconds):
            seen += len(chunk)
            if seen > limit:
                raise UploadError(f"upload too large: over the limit of {mb} (--max-upload-mb)", 413)
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # python_multipart's parse errors, a client that went away mid-body
        raise UploadError(f"malformed upload ({type(exc).__name__}); send the files again") from None
    finally:
        collector.close()
    return _finish(collector.parts, folder, allowed)


def _finish(parts: dict, folder: Path, allowed: dict[str, tuple[str, ...]]) -> Uploads:
    """Each file part under a name of our own with its checked suffix; empty file parts count as not given."""
    up = Uploads(folder)
    for name, (filename, value) in parts.items():
        if isinstance(value, bytes):
            up.text[name] = value.decode("utf-8", "replace")
            continue
        if value.stat().st_size == 0 and not filename:
            value.unlink()
            continue
        suffix = full_suffix(filename or "")
        if suffix not in allowed[name]:
            suffix = ".dcm" if ".dcm" in allowed[name] and is_dicom(value) else None
        if suffix is None:  # no part of the file's name is echoed: a hospital's names may carry a patient's
            raise UploadError(f"{name}: not a file type it reads; the {LABELS.get(name, name)} must be one of "
                              f"{', '.join(allowed[name])}")
        up.files[name] = value.rename(folder / f"{name}{suffix}")
    return up


# --------------------------------------------------------------------------- a box instead of a mask


def json_field(text: str | None, name: str, expected: str):
    """A text field's JSON value, None when the field is absent or blank; one line when it is not JSON."""
    if text is None or not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise UploadError(f"{name}: not JSON (expected {expected})") from None


def parse_boxes(text: str | None) -> dict[str, tuple[int, int, int, int]]:
    """The ``box`` field: JSON ``{"image": [x, y, w, h], "video": [x, y, w, h]}`` in the still's / the video
    frame's pixels (either key may be left out); a bare ``[x, y, w, h]`` is the box of both."""
    obj = json_field(text, "box", '{"image": [x, y, w, h], "video": [x, y, w, h]}')
    if obj is None:
        return {}
    if isinstance(obj, list):
        obj = {"image": obj, "video": obj}
    if not isinstance(obj, dict) or not set(obj) <= {"image", "video"}:
        raise UploadError('box: expected {"image": [x, y, w, h], "video": [x, y, w, h]}')
    out = {}
    for key, v in obj.items():
        if v is None:
            continue
        ok = isinstance(v, list) and len(v) == 4 and all(isinstance(n, (int, float)) and not isinstance(n, bool)
                                                          and math.isfinite(n) for n in v)
        if not ok or v[2] < 2 or v[3] < 2:
            raise UploadError(f"box.{key}: expected [x, y, w, h], numbers with w and h at least 2 px, got {str(v)[:60]}")
        out[key] = tuple(int(round(n)) for n in v)
    return out


def parse_clinical(text: str | None) -> dict[str, str]:
    """The ``clinical`` field: JSON ``{"age": 63, "sex": "F"}``, the covariates a fused model reads (values as text,
    read as the cohort's were: numbers where the model was fitted on numbers)."""
    obj = json_field(text, "clinical", '{"name": value, ...}')
    if obj is None:
        return {}
    ok = isinstance(obj, dict) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in obj.values())
    if not ok:
        raise UploadError('clinical: expected {"name": value, ...} with a number or a text per covariate')
    return {str(k): str(v) for k, v in obj.items()}


def box_mask(box: tuple[int, int, int, int], shape: tuple[int, int], path: Path, what: str) -> Path:
    """A 2-D mask PNG of the frame's size, foreground inside the box: what predict takes as a mask."""
    x, y, w, h = box
    height, width = shape
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise UploadError(f"box.{what}: [{x}, {y}, {w}, {h}] lies outside the {width}x{height} px picture")
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask, mode="L").save(path, format="PNG")
    return path


def masks_from_boxes(up: Uploads, boxes: dict[str, tuple[int, int, int, int]]) -> None:
    """Turn each box into the modality's mask file; a box beside a mask, or without its picture, is refused."""
    for modality, box in boxes.items():
        if f"{modality}_mask" in up.files:
            raise UploadError(f"give either {modality}_mask or box.{modality}, not both")
        if modality not in up.files:
            raise UploadError(f"box.{modality} given without the {LABELS[modality]}")
        path = up.files[modality]
        if modality == "image":
            shape = read_image(path).shape[:2]
        else:
            info = video_header(path)
            shape = (info.height, info.width)
        up.files[f"{modality}_mask"] = box_mask(box, shape, up.folder / f"{modality}_box_mask.png", modality)
        up.drawn.add(f"{modality}_mask")
