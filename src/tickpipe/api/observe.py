"""Request observation: access log and API latency metrics (filled in by the dashboard issue)."""

from __future__ import annotations

from fastapi import FastAPI

from tickpipe.api.context import ApiContext


def install(app: FastAPI, ctx: ApiContext) -> None:
    """Wrap the app with request observation; nothing yet."""
