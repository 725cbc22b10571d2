"""Every error as JSON ``{"error": {"code", "message"}}``: never HTML, plain text or a trace.

Three layers give the same shape: the exception handlers below (errors raised by routes),
``Guard`` (an over-long URL, and any exception a route did not expect: answered 500 here
so the keep-alive connection survives), and ``JsonErrorsHttpToolsProtocol`` /
``JsonErrorsH11Protocol`` for what uvicorn refuses before the app sees a request (a
request line or header block over its parser's limits); ``api.protocol`` builds the
served protocols on these, with limits on the request head. A message never carries more than
``MAX_MESSAGE_CHARS`` characters, whatever was sent.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from tickpipe.errors import DiskFullError, KeyStoreError, QueryError, StorageError
from tickpipe.store.hot_redis import HotStoreUnavailable

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 400
MAX_URL_BYTES = 16 * 1024
"""a request target longer than this is refused (100 OCC symbols take ~2.3 KB)"""
RETRY_AFTER_S = 1

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    414: "uri_too_long",
    422: "invalid_parameter",
    429: "rate_limited",
    503: "unavailable",
    507: "disk_full",
}

ERROR_STATUSES = {
    400: "Invalid parameters (the message names the parameter and the fix), or a request "
    "whose estimated cost is over the limit (`range_too_large`)",
    401: "Missing, invalid or revoked API key",
    403: "The key lacks the scope this route needs",
    404: "No such route or resource",
    414: "Request URL too long",
    422: "A parameter has the wrong type or is out of its range",
    429: "Over the key's rate limit; see `Retry-After`",
    500: "Unexpected server error (the server log has the details)",
    503: "A service this route needs is down (`hot_store_unavailable`: Redis; "
    "`storage_unavailable`: a file could not be written); see `Retry-After`",
    507: "The disk is full (`disk_full`): nothing was changed; retry once space is freed",
}
"""Every error status a route may answer, for the OpenAPI document."""


class ApiError(Exception):
    """Raised by routes and dependencies; rendered by the one handler below."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def clip(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[:MAX_MESSAGE_CHARS] + "…"


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": clip(message)}})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(code, message),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def hot_store_unavailable(detail: str) -> Response:
    return error_response(
        503,
        "hot_store_unavailable",
        f"the hot store (Redis) is unavailable: {detail}; history routes still answer, "
        "retry shortly",
        {"Retry-After": str(RETRY_AFTER_S)},
    )


def uri_too_long(target: int) -> Response:
    return error_response(
        414,
        "uri_too_long",
        f"request URL of {target:,} bytes; at most {MAX_URL_BYTES:,}: ask for fewer "
        "symbols per request",
    )


def internal_error() -> Response:
    return error_response(500, "internal_error", "internal error; the server log has the details")


class Guard:
    """Outermost app middleware: refuses over-long URLs and turns an unexpected exception
    into a JSON 500 *without* re-raising, so uvicorn keeps the connection alive (Starlette's
    own error middleware re-raises, which closes it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > MAX_URL_BYTES:
            await uri_too_long(target)(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise  # half a response is out: only closing the connection can say so
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await internal_error()(scope, receive, send)


def install(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def query_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, QueryError)
        return error_response(exc.status, exc.code, str(exc))

    async def key_error(request: Request, exc: Exception) -> Response:
        return error_response(400, "key_refused", str(exc))

    async def hot_store_error(request: Request, exc: Exception) -> Response:
        return hot_store_unavailable(str(exc))

    async def storage_error(request: Request, exc: Exception) -> Response:
        """A file tickpipe must write (the key database) cannot be: said, not a 500."""
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        if isinstance(exc, DiskFullError):
            return error_response(507, "disk_full", str(exc))
        return error_response(
            503, "storage_unavailable", str(exc), {"Retry-After": str(RETRY_AFTER_S)}
        )

    async def redis_down(request: Request, exc: Exception) -> Response:
        """A Redis read outside the hot store (GEX in API processes) failing the same way."""
        return hot_store_unavailable(type(exc).__name__)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors():
            where = ".".join(
                str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body")
            )
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "invalid_parameter", "; ".join(parts) or "invalid request")

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500, "internal_error", "internal error; the server log has the details"
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(QueryError, query_error)
    app.add_exception_handler(KeyStoreError, key_error)
    app.add_exception_handler(HotStoreUnavailable, hot_store_error)
    app.add_exception_handler(StorageError, storage_error)
    app.add_exception_handler(redis.exceptions.ConnectionError, redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, redis_down)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
    app.add_middleware(Guard)


_PARSER_REFUSAL = error_body(
    "bad_request",
    "invalid HTTP request: malformed, or a request line or header block over the server's "
    f"limit (keep URLs under {MAX_URL_BYTES:,} bytes)",
)


def _json_400(protocol: Any) -> None:
    protocol.transport.write(
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(_PARSER_REFUSAL)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + _PARSER_REFUSAL
    )
    protocol.transport.close()


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with its parser refusals in the API's JSON error shape."""

    def send_400_response(self, msg: str) -> None:
        self.logger.warning("refused an unparsable request: %s", msg)
        _json_400(self)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools comes with uvicorn[standard]; h11 is always there
    JsonErrorsHttpProtocol: type[Any] = JsonErrorsH11Protocol
else:

    class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, with its parser refusals (a URL over ~64 KB, a
        malformed request line) in the API's JSON error shape."""

        def send_400_response(self, msg: str) -> None:
            self.logger.warning("refused an unparsable request: %s", msg)
            _json_400(self)

    JsonErrorsHttpProtocol = JsonErrorsHttpToolsProtocol
"""Pass as ``uvicorn.Config(http=JsonErrorsHttpProtocol)``: what ``http="auto"`` picks,
with JSON refusals."""
