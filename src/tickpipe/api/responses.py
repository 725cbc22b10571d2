"""One JSON response class, the health verdict, and what the OpenAPI document adds to
FastAPI's: the bearer scheme, every error answer, and the download media types."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.responses import JSONResponse

from tickpipe.api.encode import MEDIA_TYPES
from tickpipe.api.errors import ERROR_STATUSES


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def degraded_reasons(status: dict[str, Any]) -> list[str]:
    """Why the pipeline is not fully working, read from its status (one sentence each):
    the journal refusing writes (disk full: sources paused), the lake flush failing, a
    fan-out sink failing (Redis down), a source failed or backing off. API processes
    (``--role api``) judge the ingest process's status they serve."""
    if "ingest" in status and status.get("role") == "api":  # an API process's own wrapper
        if not status["ingest"]:
            return ["no status from the ingest process (is it running, and Redis up?)"]
        status = status["ingest"]
    reasons = []
    services = status.get("services") or {}
    journal = services.get("journal") or {}
    if journal.get("blocked_since") is not None:
        reasons.append(
            f"journal refuses writes since {_iso(journal['blocked_since'])} "
            f"({journal.get('last_error')}): sources are paused until it can write again"
        )
    lake = services.get("lake") or {}
    if lake.get("blocked_since") is not None:
        reasons.append(
            f"lake flush failing since {_iso(lake['blocked_since'])} ({lake.get('last_error')}):"
            " the journal keeps the data meanwhile"
        )
    for name, sink in sorted((status.get("sinks") or {}).items()):
        if sink.get("healthy") is False:
            reasons.append(f"{name} failing: {sink.get('last_error')}")
    for source in status.get("sources") or []:
        if source.get("status") in ("failed", "backoff"):
            reasons.append(
                f"source {source.get('name')} {source.get('status')}: {source.get('last_error')}"
            )
    age = (status.get("api") or {}).get("ingest_status_age_s")
    if age is not None and age > 10:
        reasons.append(f"the ingest process's status is {age:.0f} s old")
    return reasons


def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="seconds")


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_PUBLIC_ERRORS = (414, 500)
PUBLIC = frozenset({"/api/v1/health", "/api/v1/status", "/api/v1/dashboard/services"})
"""API paths that need no key; every other /api/ path is documented with the bearer scheme
(secure by default: a route that checks its key itself needs no marker)."""
_DOWNLOAD_SCHEMAS = {
    "application/json": {"type": "object"},
    "text/csv": {"type": "string"},
    MEDIA_TYPES["arrow"]: {"type": "string", "format": "binary"},
    MEDIA_TYPES["parquet"]: {"type": "string", "format": "binary"},
}


def install_openapi(app: FastAPI) -> None:
    """FastAPI's document plus what it cannot infer: the bearer scheme (so Swagger's
    Authorize works) on every keyed operation, the JSON error of every status a route may
    answer (replacing FastAPI's own 422 shape, which the API never sends), and the media
    types of downloads."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key: `tickpipe keys create --name NAME --scopes read`",
        }
        components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        error_ref = {"$ref": "#/components/schemas/Error"}
        for path_name, path in schema.get("paths", {}).items():
            for op in path.values():
                scope = op.pop("x-tickpipe-scope", None)
                if scope is not None or (path_name.startswith("/api/") and path_name not in PUBLIC):
                    op.setdefault("security", [{"bearer": []}])
                keyed = bool(op.get("security"))
                responses = op.setdefault("responses", {})
                for status in ERROR_STATUSES if keyed else _PUBLIC_ERRORS:
                    responses[str(status)] = {
                        "description": ERROR_STATUSES[status],
                        "content": {"application/json": {"schema": error_ref}},
                    }
                if op.pop("x-tickpipe-download", False):
                    responses["200"]["content"] = {
                        media: {"schema": body} for media, body in _DOWNLOAD_SCHEMAS.items()
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
