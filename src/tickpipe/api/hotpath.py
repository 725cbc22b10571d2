"""The hottest GET routes, dispatched before FastAPI's middleware stack and router.

Profiled under load (py-spy, 100 keep-alive clients), a cached real-time answer spent about
nine tenths of its time in FastAPI's layers: the exception, telemetry, exit-stack and
body-limit middlewares, the router's walk over every route, and the dependency solver,
each a coroutine per request and per message. The routes given to ``HotApp.hot_route``
read their own parameters and return a whole ``Response``, so they need none of that:
``HotApp`` matches their paths first and runs them with only what a request of theirs can
observe: ``Guard``'s refusals (long URLs, JSON 500s), the app's own exception handlers,
and the same metrics and access-log line as ``ObserveMiddleware``. Every other method and
path, and any ``root_path``, go through FastAPI unchanged; the routes stay registered
there too, so the OpenAPI document is as before.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from tickpipe.api.errors import MAX_URL_BYTES, internal_error, uri_too_long
from tickpipe.api.observe import NOTES, Observer

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


class _Run:
    """One hot route: ``Guard``'s checks, the endpoint with the app's exception handlers
    (the ones ``ExceptionMiddleware`` would apply), and the observation ``ObserveMiddleware``
    would make, in one call. The endpoint returns a whole ``Response``, so status, size and
    body are known without wrapping ``send`` (two coroutines per message saved)."""

    def __init__(self, app: FastAPI, endpoint: Endpoint, observer: Observer | None) -> None:
        self.app = app
        self.endpoint = endpoint
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started_wall = time.time_ns()
        started = time.perf_counter_ns()
        notes: dict[str, Any] = {}
        scope[NOTES] = notes
        status, body = 500, b""
        try:
            response = await self._respond(scope, receive)
            status, body = response.status_code, bytes(response.body)
            await response(scope, receive, send)
        finally:
            if self.observer is not None:
                duration = time.perf_counter_ns() - started
                self.observer.http(scope, status, started_wall, duration, body, len(body), notes)

    async def _respond(self, scope: Scope, receive: Receive) -> Response:
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > MAX_URL_BYTES:
            scope.pop("route", None)  # refused before routing, as by Guard
            return uri_too_long(target)
        request = Request(scope, receive)
        try:
            return await self.endpoint(request)
        except Exception as exc:
            handler = _handler_for(self.app, exc)
            if handler is not None:
                return await handler(request, exc)
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            return internal_error()


def _find(routes: list[BaseRoute], path: str) -> BaseRoute:
    """The registered route of ``path``, also inside included routers (FastAPI keeps
    those as one entry holding the original router)."""
    for route in routes:
        if getattr(route, "path", None) == path:
            return route
        inner = getattr(route, "original_router", None)
        if inner is not None and getattr(route, "path", None) is None:
            with contextlib.suppress(LookupError):
                return _find(inner.routes, path)
    raise LookupError(f"no registered route {path}")


def _handler_for(app: FastAPI, exc: Exception) -> Callable[..., Awaitable[Response]] | None:
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None  # Starlette leaves this one to the outermost layer: Guard answers
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler  # type: ignore[return-value]
    return None


class HotApp(FastAPI):
    """FastAPI whose hot routes skip its stack (see the module docstring)."""

    _exact: dict[str, tuple[ASGIApp, BaseRoute]]
    _prefixed: list[tuple[str, ASGIApp, BaseRoute, str]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._exact = {}
        self._prefixed = []

    def hot_route(self, path: str, endpoint: Endpoint, observer: Observer | None) -> None:
        """Serve GET ``path`` (exact, or ``/prefix/{param}`` for one path segment) through
        ``endpoint`` directly. The route must also be registered with FastAPI (docs).
        ``observer`` None: no request observation (as when the app has none)."""
        route = _find(self.router.routes, path)
        app = _Run(self, endpoint, observer)
        head, brace, rest = path.partition("{")
        if not brace:
            self._exact[path] = (app, route)
        else:
            self._prefixed.append((head, app, route, rest.rstrip("}")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            hit = self._exact.get(path)
            if hit is not None:
                scope["app"] = self
                scope["route"] = hit[1]
                scope["path_params"] = {}
                await hit[0](scope, receive, send)
                return
            for head, app, route, name in self._prefixed:
                if path.startswith(head):
                    value = path[len(head) :]
                    if value and "/" not in value:
                        scope["app"] = self
                        scope["route"] = route
                        scope["path_params"] = {name: value}
                        await app(scope, receive, send)
                        return
        await super().__call__(scope, receive, send)
