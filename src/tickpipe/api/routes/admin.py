"""Admin: API keys and source restarts (scope ``admin``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from tickpipe.api.auth import require
from tickpipe.api.context import ApiContext
from tickpipe.api.errors import ApiError
from tickpipe.api.routes import context
from tickpipe.store.keystore import RATE_LIMIT_MAX, RATE_LIMIT_MIN, ApiKey

router = APIRouter(tags=["admin"], prefix="/api/v1/admin")
Admin = Annotated[ApiKey, Depends(require("admin"))]
Ctx = Annotated[ApiContext, Depends(context)]


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["backtester"])
    scopes: list[str] = Field(
        default=["read"], min_length=1, max_length=3, examples=[["read", "stream"]]
    )
    rate_limit: float | None = Field(
        default=None,
        ge=RATE_LIMIT_MIN,
        le=RATE_LIMIT_MAX,
        allow_inf_nan=False,
        description="requests/s; default from settings",
    )


@router.post("/keys", status_code=201, summary="Create a key; the token is shown once")
async def create_key(ctx: Ctx, _: Admin, body: NewKey) -> dict[str, Any]:
    rate = body.rate_limit or ctx.settings.api_default_rate_limit
    token, key = ctx.keys.create(body.name, body.scopes, rate)
    return {"key": token, **key.public()}


@router.get("/keys", summary="List keys (never their secrets)")
async def list_keys(ctx: Ctx, _: Admin) -> dict[str, Any]:
    return {"data": [k.public() for k in ctx.keys.list()]}


@router.delete("/keys/{name}", summary="Revoke a key; effective at once")
async def revoke_key(ctx: Ctx, _: Admin, name: str) -> dict[str, Any]:
    return ctx.keys.revoke(name).public()


@router.post("/sources/{name}/restart", summary="Restart one feed now")
async def restart_source(ctx: Ctx, _: Admin, name: str) -> dict[str, Any]:
    if not ctx.restart_source(name):
        raise ApiError(404, "not_found", f"no source named {name!r} in this process")
    return {"restarting": name}
