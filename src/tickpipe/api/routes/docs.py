"""The API's documentation page, ``/docs`` (Swagger UI), served offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without the
internet (or behind a proxy that blocks it) ``/docs`` was a blank page (issue 20). Swagger
UI comes here from the ``fastapi-offline`` package's files and is served by this process:
nothing on the page is fetched from another host. It is Swagger UI 5 there; 4 (the
``swagger-ui-bundle`` package) refuses FastAPI's OpenAPI 3.1 document ("Unable to render
this definition"). ``/redoc`` leads to ``/docs``: ReDoc, even served from here, loads its
logo from its maker's CDN.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tickpipe.api.errors import ApiError

ASSETS = "/docs/assets"
FILES = {
    "swagger-ui-bundle.js": ("fastapi_offline", "static", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("fastapi_offline", "static", "text/css; charset=utf-8"),
    "favicon.svg": ("tickpipe", "web", "image/svg+xml"),
}
"""name -> (package, folder, content type) of every file the page loads: the favicon here
too, since an ingest process serves no dashboard"""
SWAGGER_PARAMETERS = {"validatorUrl": None, "persistAuthorization": True}
"""no badge from the online validator (another host); the key entered under Authorize
survives a reload"""


@functools.cache
def assets() -> dict[str, tuple[bytes, str]]:
    """name -> (content, ETag), read from the packages once, on first use."""
    found: dict[str, tuple[bytes, str]] = {}
    for name, (package, folder, _) in FILES.items():
        data = resources.files(package).joinpath(folder, name).read_bytes()
        found[name] = (data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
    return found


async def swagger(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")  # behind a proxy's prefix, as FastAPI's page
    return get_swagger_ui_html(
        openapi_url=root + (request.app.openapi_url or "/openapi.json"),
        title=f"{request.app.title} · API",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/favicon.svg",
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )


async def redoc(request: Request) -> RedirectResponse:
    return RedirectResponse(request.scope.get("root_path", "") + "/docs", status_code=307)


async def asset(request: Request, name: str) -> Response:
    found = assets().get(name)
    if found is None:
        raise ApiError(404, "not_found", f"no documentation file named {name!r}")
    data, etag = found
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=FILES[name][2], headers=headers)


ROUTES: dict[str, Callable[..., Awaitable[Response]]] = {
    "/docs": swagger,
    "/redoc": redoc,
    ASSETS + "/{name}": asset,
}
PATHS = frozenset(ROUTES)
"""the paths of this module's routes, for a process that keeps only some (``--role ingest``)"""


def install(app: FastAPI) -> None:
    """The routes on the app itself, not as an included router: a process that keeps
    routes by path (``--role ingest``) sees each of them by its path."""
    for path, endpoint in ROUTES.items():
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
