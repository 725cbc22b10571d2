"""The HTTP protocol tickpipe serves with: uvicorn's (httptools when installed, else h11),
with parser refusals in the API's JSON shape (``api.errors``) and limits on the request
head, enforced on the bytes as they arrive, before the head becomes Python objects and
before any key is checked:

- ``MAX_HEAD_BYTES`` (64 KiB) for the request line and headers together: over it the
  answer is 431 ``headers_too_large`` (414 ``uri_too_long`` while still in the request
  line); at most ``MAX_HEADERS`` (100) header fields: 431 ``too_many_headers``;
- the head complete within ``HEAD_TIMEOUT_S`` (10 s) of the connection opening, or of the
  first byte of a later request on it: else 408 ``request_timeout`` (a connection that
  sent nothing at all is just closed). A connection idle between requests is closed by
  uvicorn's keep-alive timeout (5 s).

Unbounded, a 100 MB header held the event loop for seconds (httptools joins a header
value piece by piece, each join a copy) and a client could keep a connection open forever
by sending a byte now and then. A WebSocket handshake is an HTTP request until its head is
complete, so the same limits hold for it. A refused client gets its JSON answer and the
end of the stream; what it still sends is read and dropped, up to ``LINGER_BYTES`` and
for at most ``LINGER_S``, before the socket closes (closing with unread input resets the
connection, which can lose the answer). Refusals are counted (``refusals()``) and logged
at most once per ``LOG_EVERY_S`` per reason.

Pass ``HttpProtocol`` as ``uvicorn.Config(http=...)``.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any

import h11

from tickpipe.api.errors import MAX_URL_BYTES, JsonErrorsH11Protocol, error_body
from tickpipe.logsafe import Throttle

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT_S = 10.0
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024
LOG_EVERY_S = 30.0

_MESSAGES = {
    "bad_request": "invalid HTTP request: a malformed request line or header",
    "uri_too_long": f"request line over {MAX_HEAD_BYTES:,} bytes; URLs may have at most "
    f"{MAX_URL_BYTES:,}: ask for fewer symbols per request",
    "headers_too_large": f"request line and headers over {MAX_HEAD_BYTES:,} bytes: send "
    "fewer or smaller headers",
    "too_many_headers": f"more than {MAX_HEADERS} header fields: send fewer",
    "request_timeout": f"the request line and headers did not arrive within {HEAD_TIMEOUT_S:g} s",
}
_THROTTLES = {code: Throttle(LOG_EVERY_S) for code in _MESSAGES}


def refusals() -> dict[str, int]:
    """Requests refused before their head was complete, per code, since the process started."""
    return {code: throttle.total for code, throttle in _THROTTLES.items()}


def _response(status: int, code: str) -> bytes:
    body = error_body(code, _MESSAGES[code])
    return (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class _TooManyHeaders(Exception):
    """Raised in the parser's header callback to stop it (httptools has no pause)."""


class _HeadLimits:
    """The limits, over either uvicorn protocol. The subclass feeds its parser in ``_feed``
    (False once the connection is no longer its to feed), calls ``_head_done`` when a
    head is complete and ``_head_next`` when the next one may begin."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _limits_init(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._line_done = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._lingered = 0

    def _feed(self, data: bytes) -> bool:
        raise NotImplementedError

    def _busy(self) -> bool:
        """A response is being produced: a pipelined head is not timed out under it."""
        raise NotImplementedError

    def _receive(self, data: bytes) -> None:
        """``data_received``: a head's bytes count against ``MAX_HEAD_BYTES`` before the
        parser sees them; bodies and what follows go to the parser as they come."""
        if self._refused:
            self._lingered += len(data)  # lingering: read and drop, a little
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        while data:
            if not self._in_head:
                self._feed(data)
                return
            if self._head_timer is None:
                self._arm()
            room = MAX_HEAD_BYTES - self._head_bytes
            if room <= 0:
                self._refuse(431 if self._line_done else 414, _too_large(self._line_done))
                return
            part, data = data[:room], data[room:]
            self._head_bytes += len(part)
            self._line_done = self._line_done or b"\n" in part
            if not self._feed(part):
                return

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_done(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._line_done = False
        self._disarm()

    def _head_next(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._line_done = False

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._busy():
            self._arm()  # a pipelined head: timed again once the response is out
        elif self._head_bytes == 0:
            self._refused = True
            self.transport.close()  # nothing sent, nothing to answer
        else:
            self._refuse(408, "request_timeout")

    def _refuse(self, status: int, code: str) -> None:
        """Answer in JSON, end our side of the stream, drop what still comes for a while."""
        self._refused = True
        self._disarm()
        count = _THROTTLES[code].hit()
        if count:
            log.warning(
                "refused %d request(s) with %d %s: %s (said at most every %.0f s)",
                count,
                status,
                code,
                _MESSAGES[code],
                LOG_EVERY_S,
            )
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(_response(status, code))
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()


def _too_large(line_done: bool) -> str:
    return "headers_too_large" if line_done else "uri_too_long"


class LimitedH11Protocol(_HeadLimits, JsonErrorsH11Protocol):
    """uvicorn's h11 protocol with the head limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = self._counting = _CountingConnection(h11.SERVER, MAX_HEAD_BYTES)
        self._limits_init()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._receive(data)

    def _feed(self, data: bytes) -> bool:
        idle = self.conn.their_state is h11.IDLE
        super().data_received(data)
        if (
            self._refused
            or self.transport.is_closing()
            or self.transport.get_protocol() is not self
        ):
            self._disarm()  # refused, or upgraded to a WebSocket
            return False
        if idle and self.conn.their_state is not h11.IDLE:
            self._head_done()
        return True

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self._in_head:
            self._head_next()

    def send_400_response(self, msg: str) -> None:
        refusal = self._counting.refusal
        self._refuse(431 if refusal else 400, refusal or "bad_request")


class _CountingConnection(h11.Connection):
    """h11, refusing a request of more than ``MAX_HEADERS`` fields, and remembering why it
    refused a head (h11's own byte cap hints 431)."""

    refusal: str | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                self.refusal = "headers_too_large"
            raise
        if isinstance(event, h11.Request) and len(event.headers) > MAX_HEADERS:
            self.refusal = "too_many_headers"
            raise h11.RemoteProtocolError("too many header fields", error_status_hint=431)
        return event


HttpProtocol: type[Any]
"""What ``http="auto"`` would pick, with the head limits and JSON refusals."""

try:
    import httptools

    from tickpipe.api.errors import JsonErrorsHttpToolsProtocol
except ImportError:  # httptools comes with uvicorn[standard]; h11 is always there
    HttpProtocol = LimitedH11Protocol
else:

    class LimitedHttpToolsProtocol(_HeadLimits, JsonErrorsHttpToolsProtocol):
        """uvicorn's httptools protocol with the head limits; ``data_received`` is
        uvicorn's with the byte count in front of the parser and refusals via ``_refuse``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._limits_init()
            self._header_count = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()
            self._receive(data)

        def _feed(self, data: bytes) -> bool:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._disarm()
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return False
            except httptools.HttpParserError as exc:
                too_many = isinstance(exc.__context__, _TooManyHeaders)
                self._refuse(
                    431 if too_many else 400, "too_many_headers" if too_many else "bad_request"
                )
                return False
            return not self._refused

        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_count = 0

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count > MAX_HEADERS:
                raise _TooManyHeaders
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_done()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._head_next()

    HttpProtocol = LimitedHttpToolsProtocol
