"""``create_app(ctx)``: the FastAPI application. Routes stay thin; errors are JSON."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from tickpipe import __version__
from tickpipe.api import errors, observe
from tickpipe.api.admission import Admission
from tickpipe.api.context import ApiContext
from tickpipe.api.hotpath import HotApp
from tickpipe.api.responses import OrjsonResponse, degraded_reasons, install_openapi
from tickpipe.api.revocation import KeyWatch
from tickpipe.api.routes import admin, dashboard, docs, gex, metrics, quality, stream, ticks
from tickpipe.status import Status

DESCRIPTION = """
Real-time and historical market data for models and backtests.

Every data route needs `Authorization: Bearer <key>` (create one with
`tickpipe keys create --name NAME --scopes read,stream`). Errors are
`{"error": {"code": "...", "message": "..."}}`. Timestamps are int64 nanoseconds since the
Unix epoch (UTC), with an ISO-8601 `time` beside them.
"""


HEALTH_VERDICT_TTL_S = 0.1
"""how long /health reuses its degraded verdict: building the pipeline's status costs
~50 us, more than the rest of the request; readiness is read on every request"""


class Health:
    """The liveness answer; the verdict from the status is recomputed at most every
    ``HEALTH_VERDICT_TTL_S``."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._reasons: list[str] = []
        self._until = 0.0

    def payload(self) -> dict[str, Any]:
        now = time.monotonic()
        if now >= self._until:
            try:
                self._reasons = degraded_reasons(self.ctx.status())
            except Exception as exc:  # the verdict must not take liveness down with it
                self._reasons = [f"status unavailable: {type(exc).__name__}"]
            self._until = now + HEALTH_VERDICT_TTL_S
        reasons = self._reasons
        return {
            "status": "degraded" if reasons else "ok",
            "ready": self.ctx.ready(),
            "reasons": reasons,
        }

    async def hot(self, request: Request) -> Response:
        return Response(orjson.dumps(self.payload()), media_type="application/json")


def create_app(ctx: ApiContext) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(job()) for job in ctx.background]
            yield
            for task in tasks:
                task.cancel()
        app.state.key_watch.close()

    app = HotApp(
        lifespan=lifespan,
        title="tickpipe",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=OrjsonResponse,
        docs_url=None,  # FastAPI's pages load from a CDN: routes/docs.py serves them offline
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.realtime = ticks.Realtime(ctx)
    app.state.admission = Admission.from_settings(ctx.settings)
    app.state.key_watch = KeyWatch(ctx.keys)
    errors.install(app)
    observe.install(app, ctx)

    health_answer = Health(ctx)

    @app.get("/api/v1/health", tags=["status"])
    async def health() -> dict[str, Any]:
        """Liveness: answers as soon as the server runs; ``ready`` once recovery is done.
        ``status`` is ``degraded`` with one sentence per ``reasons`` while something is
        failing (journal refusing writes, lake flush, Redis, a feed); else ``ok``. The
        verdict is at most 0.1 s old."""
        return health_answer.payload()

    @app.get("/api/v1/status", tags=["status"], response_model=Status)
    async def status() -> dict[str, Any]:
        """Services, sources, counters. Public, and holds no market data."""
        return ctx.status()

    for module in (ticks, quality, stream, gex, admin, metrics, dashboard):
        app.include_router(module.router)
    docs.install(app)
    install_openapi(app)
    observer = getattr(app.state, "observer", None)  # bench/dashboard_cost.py runs without
    app.hot_route("/api/v1/health", health_answer.hot, observer)
    app.hot_route("/api/v1/ticks/realtime", app.state.realtime, observer)
    app.hot_route("/api/v1/gex/{symbol}", gex.gex, observer)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``--role api --workers N``: each worker reads settings from the env."""
    from tickpipe.api.readonly import api_context
    from tickpipe.config import load_settings
    from tickpipe.logsafe import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)  # each worker is a fresh process: redaction too
    return create_app(api_context(settings))
