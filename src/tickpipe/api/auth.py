"""One dependency per scope: bearer key, constant-time check, per-key token-bucket limit.

Missing or unknown key -> 401; a key without the scope -> 403; over its rate -> 429 with
``Retry-After``. The limit is per API process (documented): N processes allow N x rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.types import Scope

from tickpipe.api.errors import ApiError
from tickpipe.store.keystore import RATE_LIMIT_MAX, RATE_LIMIT_MIN, ApiKey, KeyStore


class ApiContextLike(Protocol):
    """What key checks need of the API context (``api.context`` imports this module)."""

    @property
    def keys(self) -> KeyStore: ...

    @property
    def limiter(self) -> RateLimiter: ...


class RateLimiter:
    """Token buckets keyed by API-key id; capacity one second's worth of requests, and at
    least one request (a key limited to 0.1/s may send one every 10 s).

    The rate is clamped into the key store's range, so a row written before that range was
    enforced (5e-324, inf) still yields a finite wait, never an overflow."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: ApiKey, now: float | None = None) -> float:
        """0 if allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        rate = key.rate_limit
        if not RATE_LIMIT_MIN <= rate <= RATE_LIMIT_MAX:  # also false for NaN
            rate = RATE_LIMIT_MAX if rate > RATE_LIMIT_MAX else RATE_LIMIT_MIN
        capacity = max(rate, 1.0)
        tokens, last = self._buckets.get(key.id, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens >= 1:
            self._buckets[key.id] = (tokens - 1, now)
            return 0.0
        self._buckets[key.id] = (tokens, now)
        return (1 - tokens) / rate


def bearer_token(authorization: str | None, query_token: str | None = None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return query_token


def authorize(keys: KeyStore, limiter: RateLimiter, token: str | None, scope: str) -> ApiKey:
    if not token:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    key = keys.verify(token)
    if key is None:
        raise ApiError(
            401, "unauthorized", "invalid or revoked API key", {"WWW-Authenticate": "Bearer"}
        )
    if scope not in key.scopes:
        raise ApiError(403, "forbidden", f"this key lacks the '{scope}' scope")
    wait = limiter.take(key)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {key.rate_limit:g} requests/s exceeded",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return key


def request_token(conn: HTTPConnection, *, query_token: bool = False) -> str | None:
    """The key an HTTP request or WebSocket presents; ``query_token`` also accepts
    ``?token=`` (browsers cannot set WebSocket headers)."""
    return bearer_token(
        conn.headers.get("authorization"), conn.query_params.get("token") if query_token else None
    )


def authorize_request(conn: HTTPConnection, scope: str, *, query_token: bool = False) -> ApiKey:
    """Check the key of an HTTP request or WebSocket against the app's key store."""
    ctx = conn.app.state.ctx
    token = request_token(conn, query_token=query_token)
    key: ApiKey = authorize(ctx.keys, ctx.limiter, token, scope)
    return key


def authorize_scope(ctx: ApiContextLike, scope: Scope, name: str) -> ApiKey:
    """``authorize_request`` for the hot routes: the header read from the ASGI scope
    directly (the first ``authorization`` header, as Starlette's ``Headers.get``)."""
    header = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            header = value.decode("latin-1")
            break
    return authorize(ctx.keys, ctx.limiter, bearer_token(header), name)


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="an API key: `tickpipe keys create --name NAME --scopes read`",
)
"""Declared so the OpenAPI document carries the scheme and each route's security (Swagger's
Authorize then works); the key itself is checked by ``authorize_request``."""


def require(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """The FastAPI dependency form of ``authorize_request``."""

    async def dependency(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
    ) -> ApiKey:
        return authorize_request(request, scope)

    return dependency


def authorize_websocket(websocket: WebSocket, scope: str) -> ApiKey:
    return authorize_request(websocket, scope, query_token=True)
