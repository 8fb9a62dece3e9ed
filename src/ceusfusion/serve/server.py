"""Running the app: ``ceusfusion serve`` in the foreground, or a server in a background thread (tests, the
benchmark, a notebook) on a free port of the loopback interface."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import uvicorn

from ceusfusion.core.errors import CeusError
from ceusfusion.serve.app import DEFAULT_MAX_UPLOAD_MB, LOOPBACK_HOSTS, create_app
from ceusfusion.serve.protocol import Limits, protocol


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses: the only ones no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(bundle: str | Path, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          warn: Callable[[str], None] = print, tmp_root: str | Path | None = None, expect_sha256: str | None = None,
          limits: Limits = Limits()) -> None:
    """Verify and load the whole bundle, then serve the page until interrupted: a bad bundle, or one whose
    bundle.json is not ``expect_sha256``, is one CeusError before the socket is bound. Warns when the page
    is reachable from other machines."""
    if not 0 <= port <= 65535:
        raise CeusError(f"--port {port}: not a TCP port (0-65535)")
    if max_upload_mb <= 0:
        raise CeusError(f"--max-upload-mb {max_upload_mb}: must be positive")
    local = is_loopback(host)
    if not local:
        warn(f"warning: --host {host} makes the page reachable from other machines, over plain HTTP, "
             "with no login; patients' images would cross the network. Use it only on a network you trust.")
    app = create_app(bundle, max_upload_mb=max_upload_mb, tmp_root=tmp_root, expect_sha256=expect_sha256,
                     allowed_hosts=LOOPBACK_HOSTS if local else None, limits=limits)
    shown = f"[{host}]" if ":" in host else host
    warn(f"ceusfusion serve: bundle {app.state.service.bundle_id} on http://{shown}:{port}/ (Ctrl+C stops)")
    listen(app, host, port, limits)


def listen(app, host: str, port: int, limits: Limits) -> None:
    """uvicorn in the foreground, its HTTP/1.1 connections guarded against slow clients (``protocol``)."""
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False,
                http=protocol(limits))


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[str]:
    """The app served in a background thread on a free port; yields its base URL, stops it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    limits = getattr(app.state, "limits", Limits())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           http=protocol(limits)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
