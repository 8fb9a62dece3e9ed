"""Slow clients: uvicorn's HTTP/1.1 protocol with a header timeout and a body deadline per connection.

Why here and not in the app: a client that sends its request headers a byte at a time never reaches the
app, and uvicorn has no header timeout (its keep-alive timer stops at the first byte). A review held 30
such connections, and 5 trickling bodies, open for 90 s. :class:`GuardedH11Protocol` closes a connection
whose request headers are not complete ``header_s`` after it opened (or after its previous answer), with
a bare 408, and one whose request body is not complete ``body_s`` after its headers: the app answers
an upload that slow itself (``uploads.read_multipart``: 408, its temp folder removed) a little before
this backstop, which also covers a body sent to a route that never reads it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BACKSTOP_S = 2.0  # the protocol's body deadline trails the app's, whose answer is a JSON line


@dataclass(frozen=True)
class Limits:
    """Seconds a client may take: to send a request's headers, and then its body (upload at most ``body_s``)."""

    header_s: float = 10.0
    body_s: float = 60.0

    def __post_init__(self):
        for name in ("header_s", "body_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < 86_400):
                raise ValueError(f"{name} {v!r}: seconds, positive and under a day")


class GuardedH11Protocol(H11Protocol):
    """H11Protocol whose connections wait at most ``limits.header_s`` for request headers, and at most
    ``limits.body_s`` (plus a backstop) for the body after them."""

    def __init__(self, *args, limits: Limits = Limits(), **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.deadline = None  # the TimerHandle of whichever wait is running

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def connection_lost(self, exc) -> None:
        self._cancel()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        waiting = self.conn.their_state
        super().handle_events()
        if self.conn.their_state is not waiting:
            self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _cancel(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _watch(self) -> None:
        """Start the wait that matches the client's state: its headers (idle), its body, or nothing."""
        self._cancel()
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self.deadline = self.loop.call_later(self.limits.header_s, self._too_slow, TIMEOUT_408)
        elif state is h11.SEND_BODY:
            self.deadline = self.loop.call_later(self.limits.body_s + BACKSTOP_S, self._too_slow, b"")

    def _too_slow(self, answer: bytes) -> None:
        """Close the connection (a bare 408 first when no request is under way); the app sees a disconnect."""
        self.deadline = None
        if self.transport.is_closing():
            return
        if answer and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(answer)
        self.transport.close()


def protocol(limits: Limits):
    """What uvicorn's ``http=`` takes: a protocol factory bound to ``limits``."""
    return functools.partial(GuardedH11Protocol, limits=limits)
