"""What every page of the serve stack (``serve``, ``annotate``) puts in front of its routes.

- :class:`SecurityHeaders`: a strict CSP and friends on every response.
- :class:`SameOrigin`: a POST (any method that changes something) whose ``Origin`` is not the page's own
  is refused with 403. A browser sends ``Origin`` on every cross-origin POST, so another web page the user
  has open cannot make the local server predict, or write a boxes file; a client without ``Origin``
  (curl, a script) is not a browser page and may pass.
- Starlette's ``TrustedHostMiddleware`` on loopback names (DNS rebinding).
- :func:`without_server_paths`: no path of the server's disk in a client-facing message.
"""

from __future__ import annotations

import json
import re

from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

# the page loads nothing from elsewhere; pictures come back as data: URLs
SECURITY_HEADERS = [(b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
                     b"img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store")]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CROSS_ORIGIN = "refused: this request came from another web page (its Origin is not this server's)"
# an absolute POSIX path of two components or more, not inside a word or a URL (http://host/...)
SERVER_PATH = re.compile(r"(?<![\w.~:/-])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


class SecurityHeaders:
    """Pure ASGI middleware: the same headers on every response (no buffering of bodies)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)


def page_origin(scope) -> str:
    """The origin a page served on this request's Host has: ``http://127.0.0.1:8000``."""
    host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
    return f"{scope.get('scheme', 'http')}://{host}"


class SameOrigin:
    """Pure ASGI middleware: a state-changing request whose Origin header is not the page's own gets a 403
    before the app reads a byte of its body (the connection is closed, the body is never read)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            origin = dict(scope.get("headers") or []).get(b"origin")
            if origin is not None and origin.decode("latin-1").rstrip("/").lower() != page_origin(scope).lower():
                body = json.dumps({"error": CROSS_ORIGIN}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def guard_middleware(allowed_hosts: tuple[str, ...] | None) -> list[Middleware]:
    """The middleware of every serve-stack app, outermost first. ``allowed_hosts`` None accepts any Host
    (``--host`` other than loopback, which warns)."""
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    middleware.append(Middleware(SameOrigin))
    return middleware


def without_server_paths(message: str, named: dict[str, str] | None = None) -> str:
    """``message`` with each ``named`` path (longest first) replaced by its name, then any other absolute path
    by ``[server path]``: a client learns nothing of the server's disk (the bundle's folder, temp folders)."""
    for path, name in sorted((named or {}).items(), key=lambda kv: len(kv[0]), reverse=True):
        if path:
            message = message.replace(path, name)
    return SERVER_PATH.sub("[server path]", message)
