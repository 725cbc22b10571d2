"""The monitoring dashboard: ``/status.html`` and its assets, served from the package.

No build step, no CDN: every file the page loads is in ``tickpipe/web/`` and served
here with a strict Content-Security-Policy (same origin only). The page reads public
``/api/v1/status`` and ``/api/v1/dashboard/services`` without a key; with a key (kept in
the browser's local storage) it samples data, shows quality records and GEX, and
restarts or stops feeds (admin scope).
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from tickpipe.api.auth import require
from tickpipe.api.context import ApiContext
from tickpipe.api.errors import ApiError
from tickpipe.api.routes import context
from tickpipe.api.routes.metrics import probe
from tickpipe.events import Kind
from tickpipe.store.keystore import ApiKey

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(context)]
PAGE = "status.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
HEADERS = {
    "Cache-Control": "no-cache",  # revalidate by ETag: a new version shows on reload
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@functools.cache
def assets() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, ETag, content type) of every file in the package's web folder."""
    found: dict[str, tuple[bytes, str, str]] = {}
    for item in resources.files("tickpipe").joinpath("web").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if not item.is_file() or suffix not in CONTENT_TYPES:
            continue
        data = item.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        found[item.name] = (data, etag, CONTENT_TYPES[suffix])
    return found


def _serve(request: Request, name: str) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise ApiError(404, "not_found", f"no dashboard file named {name!r}")
    data, etag, media_type = asset
    headers = {**HEADERS, "ETag": etag}
    if name == PAGE:
        headers["Content-Security-Policy"] = CSP
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/status.html", status_code=307)


@router.get("/status.html", include_in_schema=False)
async def page(request: Request) -> Response:
    return _serve(request, PAGE)


@router.get("/web/{name}", include_in_schema=False)
async def asset(request: Request, name: str) -> Response:
    return _serve(request, name)


@router.get("/api/v1/dashboard/services", tags=["status"], summary="What /status does not hold")
async def services(request: Request, ctx: Ctx) -> dict[str, Any]:
    """Measured now: the hot store's round trip, the journal backlog and flush lag; and this
    API process's request totals and recent latency percentiles. Public, no market data."""
    observer = getattr(request.app.state, "observer", None)
    facts = await probe(ctx)
    if observer is not None:
        facts["api"] = observer.metrics.summary()
        log = observer.access_log
        facts["access_log"] = {
            "mode": log.mode,
            "written": log.written,
            "dropped": log.dropped,
            "errors": log.errors,
        }
    return facts


@router.get("/api/v1/dashboard/symbols", tags=["status"], summary="Symbols with recent data")
async def symbols(ctx: Ctx, _: Annotated[ApiKey, Depends(require("read"))]) -> dict[str, Any]:
    """Symbols the hot store holds trades or quotes for, for the page's symbol picker."""
    hot = ctx.query.hot
    held = set(await hot.symbols(Kind.TRADE)) | set(await hot.symbols(Kind.QUOTE))
    return {"symbols": sorted(held)}


@router.post(
    "/api/v1/admin/sources/{name}/stop", tags=["admin"], summary="Stop one feed until restarted"
)
async def stop_source(
    ctx: Ctx, _: Annotated[ApiKey, Depends(require("admin"))], name: str
) -> dict[str, Any]:
    if not ctx.stop_source(name):
        raise ApiError(404, "not_found", f"no source named {name!r} in this process")
    return {"stopping": name}
