"""Authenticated GETs against Schwab's REST API, through the process's one token bucket.

``Authorization: Bearer <access token>`` on every call. A 401 marks the access token as
refused (the next call refreshes it) and ends the attempt; a 401 right after a refresh
means the app lacks the API product, which no retry fixes. A 429 holds the bucket back
(``Retry-After`` when sent, else a doubling delay) and is raised as ``RateLimited``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from tickpipe.errors import ConfigError, TransportError
from tickpipe.sources.schwab.auth import TIMEOUT, TokenManager
from tickpipe.sources.schwab.ratelimit import TokenBucket


class RateLimited(TransportError):
    """Schwab answered 429; every Schwab call of the process now waits ``delay_s``."""

    def __init__(self, message: str, delay_s: float) -> None:
        super().__init__(message, source="schwab")
        self.delay_s = delay_s


@dataclasses.dataclass(frozen=True)
class StreamerInfo:
    """``streamerInfo[0]`` of ``GET /trader/v1/userPreference``."""

    url: str
    customer_id: str
    correl_id: str
    channel: str
    function_id: str


class SchwabRest:
    def __init__(
        self, http: httpx.AsyncClient, base_url: str, tokens: TokenManager, limiter: TokenBucket
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._tokens = tokens
        self._limiter = limiter

    async def get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        access = await self._tokens.access_token()
        await self._limiter.acquire()
        try:
            response = await self._http.get(
                self._base + path,
                params=params,
                headers={"Authorization": f"Bearer {access}", "Accept": "application/json"},
                timeout=TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"GET {path} failed: {exc!r}", source="schwab") from exc
        if response.status_code == 401:
            if self._tokens.invalidate(access) >= 2:
                raise ConfigError(
                    f"Schwab refused two freshly refreshed access tokens for {path} (401 "
                    f"{_detail(response)}): the app at developer.schwab.com needs the "
                    "'Accounts and Trading Production' and 'Market Data Production' products"
                )
            raise TransportError(f"GET {path}: access token refused (401)", source="schwab")
        self._tokens.accepted()
        if response.status_code == 429:
            delay = self._limiter.throttle(_retry_after(response))
            raise RateLimited(f"GET {path}: rate limited (429), waiting {delay:g}s", delay)
        self._limiter.succeeded()
        return response

    async def streamer_info(self) -> StreamerInfo:
        response = await self.get("/trader/v1/userPreference")
        if response.status_code != 200:
            raise TransportError(
                f"GET /trader/v1/userPreference answered HTTP {response.status_code}",
                source="schwab",
            )
        try:
            info = response.json()["streamerInfo"][0]
            return StreamerInfo(
                url=str(info["streamerSocketUrl"]),
                customer_id=str(info["schwabClientCustomerId"]),
                correl_id=str(info["schwabClientCorrelId"]),
                channel=str(info["schwabClientChannel"]),
                function_id=str(info["schwabClientFunctionId"]),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ConfigError(
                "Schwab's userPreference has no streamerInfo: the app needs the 'Accounts and "
                "Trading Production' product to stream"
            ) from exc


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _detail(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or [{}]
        return str(errors[0].get("detail") or errors[0].get("title") or "Unauthorized")
    except (ValueError, AttributeError, IndexError, TypeError):
        return "Unauthorized"
