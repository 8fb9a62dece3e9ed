"""The upload reader, the box → mask conversion and the bind-address rule of ``ceusfusion serve``, without a bundle."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from cli_run import exit_code
from ingest_fixtures import write_dicom
from PIL import Image

from ceusfusion.serve import server as server_module
from ceusfusion.serve.server import is_loopback
from ceusfusion.serve.uploads import FILE_FIELDS, UploadError, box_mask, parse_boxes, read_multipart

BOUNDARY = "b0undary"


def body(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def read(raw: bytes, folder, limit: int = 1 << 20, chunk: int = 7, length: bool = True):
    async def stream():
        for i in range(0, len(raw), chunk):  # small chunks: a part's bytes arrive split across many writes
            yield raw[i:i + chunk]

    return asyncio.run(read_multipart(f"multipart/form-data; boundary={BOUNDARY}", str(len(raw)) if length else None,
                                      stream(), folder, limit))


def test_files_land_under_our_own_names_with_their_checked_suffix(tmp_path):
    png = b"\x89PNG fake bytes" * 50
    up = read(body([("image", "DOE_JANE 1961.PNG", png), ("box", None, b'{"image": [1, 2, 3, 4]}'),
                    ("video_mask", "", b"")]), tmp_path)
    assert up.files == {"image": tmp_path / "image.png"}  # the empty part counts as not given
    assert (tmp_path / "image.png").read_bytes() == png
    assert up.text == {"box": '{"image": [1, 2, 3, 4]}'}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.png"]  # the patient's file name is not kept


def test_a_dicom_without_suffix_is_recognised_by_its_magic(tmp_path):
    dcm = write_dicom(tmp_path / "src", np.zeros((1, 8, 8), np.uint8))
    folder = tmp_path / "up"
    folder.mkdir()
    up = read(body([("video", "EXPORT0001", dcm.read_bytes())]), folder)
    assert up.files["video"].name == "video.dcm"


@pytest.mark.parametrize("parts, match", [
    ([("image", "scan.exe", b"x")], r"image: not a file type it reads; the B-mode still must be one of"),
    ([("patient", None, b"x")], "unknown form field 'patient'"),
    ([("image", "a.png", b"x"), ("image", "b.png", b"y")], "given twice"),
    ([("box", "box.json", b"[]")], "is text, not a file"),
    ([("box", None, b"x" * 20_000)], "over 16384 bytes"),
])
def test_bad_forms_are_one_line(tmp_path, parts, match):
    with pytest.raises(UploadError, match=match) as e:
        read(body(parts), tmp_path)
    assert e.value.status == 400 and "\n" not in str(e.value)


@pytest.mark.parametrize("length", [True, False])
def test_the_size_limit_holds_with_and_without_a_content_length(tmp_path, length):
    """Declared too large: refused before reading; streamed (chunked) past the limit: refused once over it."""
    with pytest.raises(UploadError, match="upload too large") as e:
        read(body([("video", "v.avi", b"\0" * 5000)]), tmp_path, limit=4000, chunk=512, length=length)
    assert e.value.status == 413


def test_not_multipart_is_refused(tmp_path):
    async def empty():
        yield b""

    with pytest.raises(UploadError, match="multipart/form-data") as e:
        asyncio.run(read_multipart("application/json", "2", empty(), tmp_path, 100, FILE_FIELDS))
    assert e.value.status == 415


def test_boxes_parse_and_become_masks_of_the_picture(tmp_path):
    assert parse_boxes(None) == {} and parse_boxes(" ") == {}
    assert parse_boxes("[1, 2, 30.4, 40]") == {"image": (1, 2, 30, 40), "video": (1, 2, 30, 40)}
    assert parse_boxes('{"video": [5, 6, 7, 8]}') == {"video": (5, 6, 7, 8)}
    for bad in ("{", '{"image": [1, 2, 3]}', '{"image": [1, 2, 1, 9]}', '{"mask": [1, 2, 3, 4]}', '{"image": [1, 2, true, 4]}'):
        with pytest.raises(UploadError, match="box"):
            parse_boxes(bad)
    path = box_mask((10, 5, 20, 8), (30, 40), tmp_path / "m.png", "image")
    m = np.asarray(Image.open(path)) > 0
    assert m.shape == (30, 40)
    ys, xs = np.nonzero(m)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (5, 12, 10, 29)
    clipped = np.asarray(Image.open(box_mask((35, -3, 20, 8), (30, 40), tmp_path / "c.png", "image"))) > 0
    assert clipped[:5, 35:].all() and clipped.sum() == 5 * 5
    with pytest.raises(UploadError, match="outside the 40x30 px picture"):
        box_mask((50, 50, 10, 10), (30, 40), tmp_path / "o.png", "image")


def test_only_loopback_is_local_and_anything_else_warns(monkeypatch, tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    seen = {}

    class FakeApp:
        class state:  # noqa: N801 - what create_app's result carries
            service = type("S", (), {"bundle_id": "f" * 64})

    monkeypatch.setattr(server_module, "create_app", lambda bundle, **kw: seen.update(kw) or FakeApp)
    monkeypatch.setattr(server_module.uvicorn, "run", lambda app, **kw: seen.update(run=kw))
    said = []
    server_module.serve(tmp_path, host="0.0.0.0", port=8123, warn=said.append)
    assert "reachable from other machines" in said[0] and seen["allowed_hosts"] is None
    assert seen["run"]["host"] == "0.0.0.0" and seen["run"]["port"] == 8123
    said.clear()
    server_module.serve(tmp_path, warn=said.append)
    assert not any("reachable" in s for s in said) and seen["allowed_hosts"] == ("127.0.0.1", "localhost")
    assert seen["run"]["host"] == "127.0.0.1"


def test_serve_command_refuses_a_missing_bundle_in_one_line(tmp_path, capsys):
    assert exit_code(["serve", "--bundle", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "not a ceusfusion bundle" in err and "Traceback" not in err
