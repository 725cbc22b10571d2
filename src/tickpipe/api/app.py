"""``create_app(ctx)``: the FastAPI application. Routes stay thin; errors are JSON."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from tickpipe import __version__
from tickpipe.api import errors, observe
from tickpipe.api.context import ApiContext
from tickpipe.api.responses import OrjsonResponse, degraded_reasons, install_openapi
from tickpipe.api.routes import admin, dashboard, gex, metrics, quality, stream, ticks
from tickpipe.status import Status

DESCRIPTION = """
Real-time and historical market data for models and backtests.

Every data route needs `Authorization: Bearer <key>` (create one with
`tickpipe keys create --name NAME --scopes read,stream`). Errors are
`{"error": {"code": "...", "message": "..."}}`. Timestamps are int64 nanoseconds since the
Unix epoch (UTC), with an ISO-8601 `time` beside them.
"""


def create_app(ctx: ApiContext) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(job()) for job in ctx.background]
            yield
            for task in tasks:
                task.cancel()

    app = FastAPI(
        lifespan=lifespan,
        title="tickpipe",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=OrjsonResponse,
        docs_url="/docs",
    )
    app.state.ctx = ctx
    errors.install(app)
    observe.install(app, ctx)

    @app.get("/api/v1/health", tags=["status"])
    async def health() -> dict[str, Any]:
        """Liveness: answers as soon as the server runs; ``ready`` once recovery is done.
        ``status`` is ``degraded`` with one sentence per ``reasons`` while something is
        failing (journal refusing writes, lake flush, Redis, a feed); else ``ok``."""
        try:
            reasons = degraded_reasons(ctx.status())
        except Exception as exc:  # the verdict must not take liveness down with it
            reasons = [f"status unavailable: {type(exc).__name__}"]
        return {"status": "degraded" if reasons else "ok", "ready": ctx.ready(), "reasons": reasons}

    @app.get("/api/v1/status", tags=["status"], response_model=Status)
    async def status() -> dict[str, Any]:
        """Services, sources, counters. Public, and holds no market data."""
        return ctx.status()

    for module in (ticks, quality, stream, gex, admin, metrics, dashboard):
        app.include_router(module.router)
    install_openapi(app)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``--role api --workers N``: each worker reads settings from the env."""
    from tickpipe.api.readonly import api_context
    from tickpipe.config import load_settings
    from tickpipe.logsafe import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)  # each worker is a fresh process: redaction too
    return create_app(api_context(settings))
