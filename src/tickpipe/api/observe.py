"""Request observation: API latency histograms per route template and the access log.

A pure ASGI middleware (no ``BaseHTTPMiddleware``, which copies every body through a
task): per request it reads two clocks, updates ``ApiMetrics`` and appends one tuple to
the access log's bounded queue. Everything else (key names, row counts, JSON encoding,
the file write and its rotation) happens in one background thread that drains the queue
every ``DRAIN_INTERVAL_S``, so the log costs the request path a ``deque.append``.

An access log line (JSON)::

    {"time": "2026-12-01T06:59:16.555880Z", "key": "backtester", "method": "GET",
     "route": "/api/v1/ticks/realtime", "path": "/api/v1/ticks/realtime", "status": 200,
     "duration_ms": 0.412, "bytes": 2291, "rows": 8, "cache": "hit"}

``key`` is the key's name (never the token; null when the request carried none or a
rejected one). ``rows`` comes from the route (``note``) or, for a ``{"data": [...]}``
body, from counting its records; ``cache`` from the route (``note``), else null. The
query string is never logged (a browser WebSocket carries its key there).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import logging.handlers
import sys
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import FastAPI
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tickpipe import logsafe
from tickpipe.api.auth import bearer_token
from tickpipe.api.context import ApiContext
from tickpipe.metrics import ApiMetrics
from tickpipe.store.keystore import KeyStore, split_key

log = logging.getLogger(__name__)

NOTES = "tickpipe.observe"
"""scope key of the per-request dict that routes fill through ``note``"""
UNMATCHED = "<unmatched>"
"""route label of requests no route matched (keeps the label set bounded)"""
QUEUE_LINES = 100_000
QUEUE_BODY_BYTES = 64 * 1024 * 1024
"""bodies held for row counting, at most; past it lines are kept without ``rows``"""
COUNT_BODY_MAX = 4 * 1024 * 1024
DRAIN_INTERVAL_S = 0.25
ERROR_LOG_EVERY_S = 30.0
"""a failing write (a full disk) is logged at most this often, with the lines lost since"""
MAX_PATH = 200
KEY_REFRESH_S = 1.0
KEY_CACHE = 1024

_Entry = tuple[
    int,
    str,
    str,
    str,
    int,
    int,
    list[tuple[bytes, bytes]],
    bytes,
    bytes | None,
    int,
    dict[str, Any],
]
"""(time ns, method, route, path, status, duration ns, headers, query, body, bytes, notes)"""


def note(
    conn: HTTPConnection,
    *,
    rows: int | None = None,
    cache: str | None = None,
    status: int | None = None,
) -> None:
    """Tell the access log what this request returned: ``rows`` and ``cache`` ("hit" or
    "miss"); for a WebSocket, ``status`` when the handshake's own (101, or 403 for one
    closed before it was accepted) would mislead: a refusal accepted only to carry its
    JSON reason to browsers is logged with the reason's status. A no-op outside the
    middleware (unit tests calling routes directly)."""
    notes = conn.scope.get(NOTES)
    if notes is None:
        return
    if rows is not None:
        notes["rows"] = rows
    if cache is not None:
        notes["cache"] = cache
    if status is not None:
        notes["status"] = status


def count_rows(body: bytes) -> int | None:
    """Records in a ``{"data": [{...}, ...]}`` body without parsing it: records are flat
    objects, and ``},{"`` cannot occur inside a JSON string (its quote would be escaped),
    so each occurrence separates two records. None for any other body."""
    if body.startswith(b'{"data":[]'):
        return 0
    if body.startswith(b'{"data":[{'):
        return body.count(b'},{"') + 1
    return None


class AccessLog:
    """JSON lines to a rotating file or stdout, written by the process's log thread.

    The queue is bounded (``QUEUE_LINES``): when the writer falls that far behind, new
    lines are dropped and counted (``dropped``) rather than growing memory or slowing
    requests. A write that fails (a full disk) loses its lines, counted in ``errors`` and
    ``dropped``, and is logged in one line at most every ``ERROR_LOG_EVERY_S``; the next
    write that succeeds says how many failed."""

    def __init__(
        self,
        mode: str,
        path: Path | None = None,
        *,
        max_bytes: int = 50 * 1024 * 1024,
        backups: int = 5,
        keys: KeyStore | None = None,
        queue_lines: int = QUEUE_LINES,
    ) -> None:
        if mode not in ("file", "stdout", "off"):
            raise ValueError(f"access log mode must be file, stdout or off; got {mode!r}")
        if mode == "file" and path is None:
            raise ValueError("a file access log needs a path")
        self.mode = mode
        self.path = path
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._queue: deque[_Entry] = deque()
        self._limit = queue_lines
        self._body_bytes = 0
        self._keys = keys
        self._names: dict[str, str] = {}
        self._ids: dict[bytes, str] = {}
        """credential (header or query) -> key id, so a line parses no token twice"""
        self._names_checked = 0.0
        self._drain_lock = threading.Lock()
        self._failures = logsafe.Throttle(ERROR_LOG_EVERY_S)
        self._lost = 0
        self._handler: logging.handlers.RotatingFileHandler | None = None
        if mode == "file" and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = _RaisingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
            )
            self._handler.setFormatter(logging.Formatter("%(message)s"))
        if mode != "off":
            _writer.add(self)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def pending(self) -> int:
        return len(self._queue)

    def record(self, entry: _Entry) -> None:
        """Queue one line (request path: an append, or a counted drop)."""
        if len(self._queue) >= self._limit:
            self.dropped += 1
            return
        body = entry[8]
        if body is not None:
            if self._body_bytes + len(body) > QUEUE_BODY_BYTES:
                entry = (*entry[:8], None, *entry[9:])
            else:
                self._body_bytes += len(body)
        self._queue.append(entry)

    def flush(self) -> int:
        """Write every queued line now; returns how many. Called by the log thread, at
        exit, and by tests."""
        with self._drain_lock:
            entries: list[_Entry] = []
            queue = self._queue
            while queue:
                entries.append(queue.popleft())
            if not entries:
                return 0
            self._body_bytes = max(self._body_bytes - sum(len(e[8] or b"") for e in entries), 0)
            lines = [self._line(e) for e in entries]
            try:
                self._write("\n".join(lines))
            except Exception as exc:  # a full disk must not kill the thread or the API
                self._failed(exc, len(lines))
                return 0
            self.written += len(lines)
            if failed := self._failures.recover():
                log.info(
                    "access log %s written again after %d failed writes (%d lines lost)",
                    self.path or "stdout",
                    failed,
                    self._lost,
                )
                self._lost = 0
            return len(lines)

    def _failed(self, exc: Exception, lines: int) -> None:
        self.errors += 1
        self.dropped += lines
        self._lost += lines
        if count := self._failures.hit():
            log.warning(
                "access log %s cannot be written (%s): %d failed writes, %d lines lost so "
                "far; said at most every %.0f s",
                self.path or "stdout",
                exc,
                count,
                self._lost,
                ERROR_LOG_EVERY_S,
            )

    def _write(self, text: str) -> None:
        if self._handler is not None:
            record = logging.LogRecord("tickpipe.access", logging.INFO, "", 0, text, None, None)
            try:
                self._handler.handle(record)
            except BaseException:
                with contextlib.suppress(OSError):  # the rest of the batch cannot flush either
                    self._handler.close()
                raise
            self._handler.close()  # reopened on the next batch: no descriptor held between
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def _line(self, entry: _Entry) -> str:
        when, method, route, path, status, duration, headers, query, body, size, notes = entry
        rows = notes.get("rows")
        if rows is None and body is not None and len(body) <= COUNT_BODY_MAX:
            rows = count_rows(body)
        line = {
            "time": _iso(when),
            "key": None if status == 401 else self._key_name(headers, query),
            "method": method,
            "route": route,
            "path": _clean_path(path),
            "status": status,
            "duration_ms": round(duration / 1e6, 3),
            "bytes": size,
            "rows": rows,
            "cache": notes.get("cache"),
        }
        return orjson.dumps(line).decode()

    def _key_name(self, headers: list[tuple[bytes, bytes]], query: bytes) -> str | None:
        """The name of the key a request presented: its id is in the token, the name in
        the key store (read here, in the log thread, never on the request path)."""
        if self._keys is None:
            return None
        authorization = next((v for k, v in headers if k == b"authorization"), None)
        credential = authorization or query
        key_id = self._ids.get(credential) if credential else None
        if key_id is None:
            token = bearer_token(authorization.decode("latin-1") if authorization else None)
            if token is None and query:
                found = parse_qs(query.decode("latin-1")).get("token")
                token = found[0] if found else None
            parts = split_key(token) if token else None
            if parts is None:
                return None
            key_id = parts[0]
            if len(self._ids) >= KEY_CACHE:
                self._ids.clear()
            self._ids[credential] = key_id
        name = self._names.get(key_id)
        if name is None and time.monotonic() - self._names_checked > KEY_REFRESH_S:
            self._names_checked = time.monotonic()
            self._names = {k.id: k.name for k in self._keys.list()}
            name = self._names.get(key_id)
        return name

    def close(self) -> None:
        self.flush()
        _writer.discard(self)


class _RaisingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file whose failures reach the caller (``AccessLog.flush`` counts and
    throttles them) instead of ``logging``'s "--- Logging error ---" dump of the whole
    batch to stderr on every failed write."""

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # called inside emit's ``except``: re-raise what failed


def _clean_path(path: str) -> str:
    """The only free text of a line: cut, and redacted should a key be pasted into it
    (the line's other fields are names and numbers, so the whole batch needs no regex)."""
    path = path[:MAX_PATH]
    return logsafe.redact(path) if "tp_" in path or "=" in path else path


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return f"{_second(seconds)}.{rest // 1000:06d}Z"


class _Writer:
    """One daemon thread per process drains every live access log; started on first use,
    flushed at exit. Logs are held weakly, so an app that goes away takes its log along."""

    def __init__(self) -> None:
        self._logs: weakref.WeakSet[AccessLog] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, access_log: AccessLog) -> None:
        with self._lock:
            self._logs.add(access_log)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
                self._thread.start()
                atexit.register(self.flush_all)

    def discard(self, access_log: AccessLog) -> None:
        with self._lock:
            self._logs.discard(access_log)

    def flush_all(self) -> None:
        with self._lock:
            logs = list(self._logs)
        for access_log in logs:
            access_log.flush()

    def _run(self) -> None:
        while True:
            time.sleep(DRAIN_INTERVAL_S)
            self.flush_all()


_writer = _Writer()


class Observer:
    """What one app observes: its request metrics and its access log."""

    def __init__(self, metrics: ApiMetrics, access_log: AccessLog) -> None:
        self.metrics = metrics
        self.access_log = access_log

    def http(
        self,
        scope: Scope,
        status: int,
        started_wall: int,
        duration: int,
        body: bytes | None,
        size: int,
        notes: dict[str, Any],
    ) -> None:
        """Record one HTTP request (``ObserveMiddleware``, and the hot routes that know
        their response without watching ``send``)."""
        route = scope.get("route")
        template = getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED
        method = scope["method"]
        self.metrics.observe(template, method, status, duration)
        if self.access_log.enabled:
            self.access_log.record(
                (
                    started_wall,
                    method,
                    template,
                    scope["path"],
                    status,
                    duration,
                    scope["headers"],
                    scope.get("query_string", b""),
                    body,
                    size,
                    notes,
                )
            )


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer
        self.metrics = observer.metrics
        self.log = observer.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        started_wall = time.time_ns()
        started = time.perf_counter_ns()
        notes: dict[str, Any] = {}
        scope[NOTES] = notes
        status = 500 if kind == "http" else 403
        size = 0
        messages = 0
        body: bytes | None = None
        single = True

        async def observed_send(message: Message) -> None:
            nonlocal status, size, messages, body, single
            what = message["type"]
            if what == "http.response.start":
                status = message["status"]
            elif what == "http.response.body":
                chunk = message.get("body", b"")
                size += len(chunk)
                if body is None and single:
                    body = chunk
                elif chunk:
                    body, single = None, False
            elif what == "websocket.accept":
                status = 101
            elif what == "websocket.send":
                messages += 1
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            duration = time.perf_counter_ns() - started
            if kind == "http":
                self.observer.http(
                    scope, status, started_wall, duration, body if single else None, size, notes
                )
            else:
                route = scope.get("route")
                template = getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED
                self.metrics.websocket(template)
                notes.setdefault("rows", messages)
                status = notes.pop("status", status)
                if self.log.enabled:
                    self.log.record(
                        (
                            started_wall,
                            "WS",
                            template,
                            scope["path"],
                            status,
                            duration,
                            scope["headers"],
                            scope.get("query_string", b""),
                            None,
                            size,
                            notes,
                        )
                    )


def access_log_for(ctx: ApiContext) -> AccessLog:
    settings = ctx.settings
    return AccessLog(
        settings.access_log,
        settings.data_dir / "logs" / "access.log",
        max_bytes=settings.access_log_max_bytes,
        backups=settings.access_log_backups,
        keys=ctx.keys,
    )


def install(app: FastAPI, ctx: ApiContext) -> None:
    """Wrap the app with request observation; ``app.state.observer`` holds what it sees."""
    observer = Observer(ApiMetrics(), access_log_for(ctx))
    app.state.observer = observer
    app.add_middleware(ObserveMiddleware, observer=observer)
