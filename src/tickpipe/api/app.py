"""``create_app(settings, pipeline)``: the FastAPI application; routes stay thin."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tickpipe import __version__
from tickpipe.api.responses import OrjsonResponse
from tickpipe.config import Settings
from tickpipe.pipeline import Pipeline


def create_app(settings: Settings, pipeline: Pipeline) -> FastAPI:
    app = FastAPI(
        title="tickpipe",
        version=__version__,
        default_response_class=OrjsonResponse,
        docs_url="/docs",
    )
    app.state.settings = settings
    app.state.pipeline = pipeline

    @app.get("/api/v1/health", tags=["status"])
    async def health() -> dict[str, Any]:
        """Liveness: answers as soon as the server runs; ``ready`` once recovery is done."""
        return {"status": "ok", "ready": pipeline.ready.is_set()}

    @app.get("/api/v1/status", tags=["status"])
    async def status() -> dict[str, Any]:
        """Services, sources, counters. Public, and holds no market data."""
        return pipeline.status()

    return app
