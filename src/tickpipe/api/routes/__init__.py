"""Route modules; each is thin and calls the query layer."""

from __future__ import annotations

from fastapi import Request

from tickpipe.api.context import ApiContext


async def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx
