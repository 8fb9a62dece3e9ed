"""``ceusfusion serve`` refuses early (issue 25, item 3), on a real (tiny synthetic) bundle and real sockets:
a hostile or broken bundle is refused before anything listens, ``--expect-sha256`` pins it, a POST from
another page's Origin is 403, slow headers and slow bodies are cut off (temp folders removed), and no
client-facing answer carries an upload's file name or a path of the server's disk."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import re
import shutil
import socket
import threading
import time
import uuid
import zipfile

import pytest
from cli_run import exit_code

from ceusfusion.core.errors import CeusError
from ceusfusion.deploy.export import MANIFEST, SIDECAR, bundle_id
from ceusfusion.serve import create_app, running_server
from ceusfusion.serve import server as server_module

pytestmark = pytest.mark.slow
ABS_PATH = re.compile(r"(?<![\w.:/])/[\w.-]+/")


@pytest.fixture(scope="module")
def made(tiny_study):
    """(bundle, one test patient's files); tests tamper with copies."""
    return tiny_study[1], tiny_study[2][0]


@pytest.fixture
def fast(made, tmp_path):
    """(base URL, temp root) of a server whose clients get 1 s for headers and 1 s for a body."""
    from ceusfusion.serve.protocol import Limits

    tmp_root = tmp_path / "requests"
    tmp_root.mkdir()
    with running_server(create_app(made[0], tmp_root=tmp_root, limits=Limits(header_s=1.0, body_s=1.0))) as url:
        yield url, tmp_root


def _reseal(bundle, rel: str, data: bytes) -> None:
    """Replace a listed file and update bundle.json and its sidecar, as someone rewriting a bundle would."""
    (bundle / rel).write_bytes(data)
    meta = json.loads((bundle / MANIFEST).read_text())
    meta["files"][rel] = hashlib.sha256(data).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(meta, indent=2))
    (bundle / SIDECAR).write_text(f"{hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()}  {MANIFEST}\n")


def _with_system_call(skops: bytes) -> bytes:
    """The fusion model's skops file with ``posix.system`` planted as the pipeline's ``memory``."""
    src = zipfile.ZipFile(io.BytesIO(skops))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            data = src.read(name)
            if name == "schema.json":
                schema = json.loads(data)
                schema["content"]["content"]["memory"] = {
                    "__class__": "system", "__module__": "posix", "__loader__": "FunctionNode",
                    "content": {"module_path": "posix", "function": "system"}, "__id__": 1}
                data = json.dumps(schema).encode()
            z.writestr(name, data)
    return out.getvalue()


def _never_listens(monkeypatch) -> list:
    """Record any attempt to listen (uvicorn.run) instead of listening."""
    listened = []
    monkeypatch.setattr(server_module.uvicorn, "run", lambda app, **kw: listened.append(kw))
    return listened


def test_a_fusion_model_naming_posix_system_is_refused_before_anything_listens(made, tmp_path, monkeypatch, capsys):
    bundle = shutil.copytree(made[0], tmp_path / "b")
    rel = json.loads((bundle / MANIFEST).read_text())["combined"]["model"]
    _reseal(bundle, rel, _with_system_call((bundle / rel).read_bytes()))
    listened = _never_listens(monkeypatch)
    with pytest.raises(CeusError, match=r"untrusted type\(s\) posix\.system") as e:
        server_module.serve(bundle, port=0, warn=lambda m: None)
    assert "\n" not in str(e.value) and listened == []
    assert exit_code(["serve", "--bundle", str(bundle), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "posix.system" in err and "Traceback" not in err and listened == []


def test_a_model_file_that_does_not_load_is_refused_before_anything_listens(made, tmp_path, monkeypatch):
    bundle = shutil.copytree(made[0], tmp_path / "b")
    meta = json.loads((bundle / MANIFEST).read_text())
    rel = next(r for r in meta["files"] if r.endswith(".safetensors"))
    _reseal(bundle, rel, b"\x08\x00\x00\x00\x00\x00\x00\x00{not a}")  # hashes match; the file is no safetensors
    listened = _never_listens(monkeypatch)
    with pytest.raises(CeusError) as e:
        server_module.serve(bundle, port=0, warn=lambda m: None)
    assert rel.split("/")[1] in str(e.value) and "\n" not in str(e.value) and listened == []


def test_expect_sha256_pins_the_bundle(made, tmp_path, monkeypatch, capsys):
    bundle = made[0]
    listened = _never_listens(monkeypatch)
    wrong = "0" * 64
    assert exit_code(["serve", "--bundle", str(bundle), "--expect-sha256", wrong]) == 2
    err = capsys.readouterr().err
    assert f"is not the pinned {wrong}" in err and "Traceback" not in err and listened == []
    edited = shutil.copytree(bundle, tmp_path / "e")  # one byte of bundle.json changed, sidecar made to agree
    (edited / MANIFEST).write_text((edited / MANIFEST).read_text() + " ")
    (edited / SIDECAR).write_text(f"{hashlib.sha256((edited / MANIFEST).read_bytes()).hexdigest()}  {MANIFEST}\n")
    with pytest.raises(CeusError, match="is not the pinned"):
        server_module.serve(edited, expect_sha256=bundle_id(bundle), warn=lambda m: None)
    assert listened == []
    assert exit_code(["serve", "--bundle", str(bundle), "--expect-sha256", bundle_id(bundle).upper()]) == 0
    assert len(listened) == 1 and bundle_id(bundle) in capsys.readouterr().err


def _multipart(fields: dict) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    raw = b""
    for name, (filename, data) in fields.items():
        head = f'name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        raw += f"--{b}\r\nContent-Disposition: form-data; {head}\r\n\r\n".encode() + data + b"\r\n"
    return raw + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def _post(url: str, path: str, fields: dict, headers: dict | None = None) -> tuple[int, dict]:
    raw, ctype = _multipart(fields)
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", path, body=raw, headers={"Content-Type": ctype, **(headers or {})})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def test_a_post_from_another_origin_is_refused(made, fast):
    url, tmp_root = fast
    still = {"image": ("s.png", made[1]["image"].read_bytes())}
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1", url.replace("127.0.0.1", "localhost")):
        status, res = _post(url, "/api/preview", still, {"Origin": origin})
        assert status == 403 and "another web page" in res["error"], (origin, res)
    for headers in ({"Origin": url}, {}):  # the page itself; a client that is no browser page (curl)
        status, res = _post(url, "/api/preview", still, headers)
        assert status == 200 and res["width"] > 0, (headers, res)
    assert list(tmp_root.iterdir()) == []


def _trickle(socks: list[socket.socket], data: bytes, seconds: float) -> list[float | None]:
    """Send ``data`` a byte at a time to every socket, 4 times a second, for up to ``seconds``; the time
    at which the server closed each connection (None if it never did)."""
    t0, closed = time.monotonic(), [None] * len(socks)
    for s in socks:
        s.setblocking(False)
    i = 0
    while time.monotonic() - t0 < seconds and None in closed:
        for k, s in enumerate(socks):
            if closed[k] is not None:
                continue
            try:
                if s.recv(65536) == b"":
                    closed[k] = time.monotonic() - t0
                    continue
            except BlockingIOError:
                pass
            except OSError:
                closed[k] = time.monotonic() - t0
                continue
            try:
                s.send(data[i % len(data):i % len(data) + 1])
            except OSError:
                closed[k] = time.monotonic() - t0
        i += 1
        time.sleep(0.25)
    return closed


def _connect(url: str, head: bytes) -> socket.socket:
    host, port = url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(head)
    return s


def test_slow_headers_are_cut_off(fast):
    """30 clients sending their headers a byte every 0.25 s: each is closed after the 1 s header timeout
    (they would trickle for 10 s), and the server still answers."""
    url, _ = fast
    socks = [_connect(url, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n") for _ in range(30)]
    try:
        closed = _trickle(socks, b"X-Slow: yes\r\n", 10.0)
    finally:
        for s in socks:
            s.close()
    assert None not in closed and max(closed) < 5.0, closed
    idle = _connect(url, b"")  # a connection that sends nothing at all
    idle.settimeout(8)
    t0 = time.monotonic()
    assert idle.recv(100).startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 5.0
    idle.close()
    host, port = url.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/api/model")
    assert c.getresponse().status == 200
    c.close()


def test_slow_bodies_are_cut_off_and_their_folders_removed(fast):
    """5 uploads trickling their body: each gets a 408 line after the 1 s body deadline and its temp folder
    goes; a trickled body to a route that never reads it is cut off too."""
    url, tmp_root = fast
    raw, ctype = _multipart({"image": ("s.png", b"\x89PNG" + b"\0" * 100_000)})
    head = (f"POST /api/preview HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw[:300]
    socks = [_connect(url, head) for _ in range(5)]
    answers = []

    def read_answer(s):
        s.settimeout(10)
        chunks = []
        while (chunk := s.recv(65536)) != b"":
            chunks.append(chunk)
        answers.append(b"".join(chunks))

    t0 = time.monotonic()
    threads = [threading.Thread(target=read_answer, args=(s,)) for s in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert time.monotonic() - t0 < 6.0 and len(answers) == 5
    for a in answers:
        status, body = a.partition(b"\r\n")[0], a.split(b"\r\n\r\n", 1)[1]
        assert b" 408 " in status and "upload too slow" in json.loads(body)["error"], a[:300]
    assert list(tmp_root.iterdir()) == []
    for s in socks:
        s.close()
    unread = _connect(url, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nxx")
    try:
        closed = _trickle([unread], b"x", 12.0)
    finally:
        unread.close()
    assert closed[0] is not None and closed[0] < 8.0, closed


def test_no_part_of_an_uploads_name_is_echoed(made, fast):
    url, _ = fast
    names = ["Jane_Doe_1961-02-03.exe", "Doe^Jane 19610203.png.bat", "Jane Doe 19610203", "JaneDoe.19610203.png"]
    for name in names:
        data = b"MZ not an image" if not name.endswith(".png") else b"\x89PNG not really"
        for path in ("/api/predict", "/api/preview"):
            status, res = _post(url, path, {"image": (name, data)})
            text = json.dumps(res)
            assert status == 400 and set(res) == {"error"}, res
            leaked = [w for w in re.split(r"[ _^.\-]", name) if len(w) >= 3 and w.lower() in text.lower()]
            assert leaked in ([], ["png"]) and "exe" not in text and "bat" not in text, (name, res)


def test_no_server_path_in_an_answer(made, fast, tmp_path):
    url, tmp_root = fast
    p = made[1]
    status, res = _post(url, "/api/predict", {k: (p[k].name, p[k].read_bytes()) for k in ("image", "image_mask")})
    text = json.dumps(res)
    assert status == 200 and res["models"]["DL_image_resnet18"]["available"], res
    assert str(made[0]) not in text and str(tmp_root) not in text and "bundle" not in res
    for fields in ({"image": ("a.png", b"garbage")}, {"video": ("v.avi", b"RIFF" + b"\0" * 300)},
                   {"image": ("a.png", p["image"].read_bytes()), "image_mask": ("m.png", p["video_mask"].read_bytes())}):
        status, res = _post(url, "/api/predict", fields)
        assert status == 400 and not ABS_PATH.search(res["error"]), res


def test_server_paths_are_named_or_removed():
    from ceusfusion.serve.guards import without_server_paths

    msg = "/srv/models/b/fusion/model.skops: cannot be loaded; see /usr/lib/python3/x.py, w/h, docs/serve.md, http://h/x"
    out = without_server_paths(msg, {"/srv/models/b": "the bundle"})
    assert out == ("the bundle/fusion/model.skops: cannot be loaded; see [server path], w/h, docs/serve.md, http://h/x")


def test_timeouts_must_be_seconds(made, monkeypatch, capsys):
    listened = _never_listens(monkeypatch)
    for option, value in (("--header-timeout", "0"), ("--body-timeout", "-5"), ("--body-timeout", "1e9")):
        assert exit_code(["serve", "--bundle", str(made[0]), option, value]) == 2
        err = capsys.readouterr().err
        assert "--header-timeout/--body-timeout" in err and "positive and under a day" in err and "Traceback" not in err
    assert listened == []
