"""tastytrade REST: the OAuth session, the DXLink quote token, chains and futures lookups.

The token lifecycle lives here and only here. ``POST /oauth/token`` (refresh-token grant)
gives a ~15-minute access token, refreshed on use a minute before it expires; ``GET
/api-quote-tokens`` gives the 24-hour DXLink token and the websocket URL (``dxlink-url``:
never hard-coded), re-fetched at three quarters of its life. Both caches outlive a
connection attempt, so a reconnect costs no REST call while the tokens are good.

Errors: a refused refresh token or client secret is a ``ConfigError`` that names the
setting (the supervisor stops the source, no retry storm); network failures, 429 and 5xx
are ``TransportError`` (the supervisor backs off and retries). Tokens never reach a log
line or an error message. Every request carries the ``User-Agent`` tastytrade requires
(a request without one gets 401).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

import httpx
from pydantic import SecretStr

from tickpipe import __version__
from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.errors import ConfigError, TransportError

log = logging.getLogger(__name__)

USER_AGENT = f"tickpipe/{__version__}"
HEADERS = {"User-Agent": USER_AGENT, "Accept": "application/json"}
ACCESS_DEFAULT_S = 900.0
QUOTE_TOKEN_DEFAULT_S = 86_400.0
SOURCE = "tastytrade"


@dataclasses.dataclass(frozen=True)
class QuoteToken:
    token: str = dataclasses.field(repr=False)
    url: str
    level: str
    refresh_at_ns: int
    expires_at_ns: int


@dataclasses.dataclass(frozen=True)
class ChainContract:
    streamer_symbol: str
    days_to_expiration: int


class Session:
    """Token caches; each call takes the attempt's ``httpx.AsyncClient`` (see ``client``)."""

    def __init__(
        self, base_url: str, client_secret: SecretStr, refresh_token: SecretStr, clock: Clock
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = client_secret
        self._refresh = refresh_token
        self._clock = clock
        self._access: tuple[str, int] | None = None
        self._quote: QuoteToken | None = None
        self.refreshes = 0
        self.quote_fetches = 0

    def client(self, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers=HEADERS, timeout=15.0, transport=transport
        )

    @property
    def quote(self) -> QuoteToken | None:
        return self._quote

    def forget_quote_token(self) -> None:
        """DXLink refused it: fetch a new one next time."""
        self._quote = None

    async def access_token(self, http: httpx.AsyncClient) -> str:
        now = self._clock.now_ns()
        if self._access is not None and now < self._access[1]:
            return self._access[0]
        body = {
            "grant_type": "refresh_token",
            "client_secret": self._secret.get_secret_value(),
            "refresh_token": self._refresh.get_secret_value(),
        }
        response = await _send(http, "POST", "/oauth/token", json=body)
        if response.status_code in (400, 401, 403):
            raise ConfigError(_refused(response))
        data = _json(_checked(response, "/oauth/token"), "/oauth/token")
        data = data.get("data", data) if isinstance(data.get("data"), dict) else data
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise TransportError("tastytrade /oauth/token answered without an access_token")
        life = _seconds(data.get("expires_in"), ACCESS_DEFAULT_S)
        margin = min(60.0, life / 4)
        self._access = (token, now + int((life - margin) * NS_PER_SECOND))
        self.refreshes += 1
        log.info("tastytrade access token refreshed (valid %.0f s)", life)
        return token

    async def quote_token(self, http: httpx.AsyncClient) -> QuoteToken:
        """The cached DXLink token, or a new one once the cached one is past its refresh time."""
        now = self._clock.now_ns()
        if self._quote is not None and now < self._quote.refresh_at_ns:
            return self._quote
        data = await self.get(http, "/api-quote-tokens", what="TASTYTRADE_REFRESH_TOKEN")
        token, url = data.get("token"), data.get("dxlink-url") or data.get("websocket-url")
        if not isinstance(token, str) or not isinstance(url, str):
            raise TransportError("tastytrade /api-quote-tokens answered without token/dxlink-url")
        expires = _instant_ns(data.get("expires-at"))
        if expires is None or expires <= now:
            expires = now + int(QUOTE_TOKEN_DEFAULT_S * NS_PER_SECOND)
        refresh_at = now + (expires - now) * 3 // 4
        self._quote = QuoteToken(token, url, str(data.get("level", "")), refresh_at, expires)
        self.quote_fetches += 1
        return self._quote

    async def get(
        self, http: httpx.AsyncClient, path: str, *, what: str, params: Any = None
    ) -> dict[str, Any]:
        """``data`` of an authenticated GET; one fresh access token on a 401."""
        for attempt in (1, 2):
            token = await self.access_token(http)
            headers = {"Authorization": f"Bearer {token}"}
            response = await _send(http, "GET", path, headers=headers, params=params)
            if response.status_code == 401 and attempt == 1:
                self._access = None
                continue
            if response.status_code in (401, 403, 404):
                raise ConfigError(_not_allowed(response, path, what))
            body = _json(_checked(response, path), path)
            data = body.get("data")
            if not isinstance(data, dict):
                raise TransportError(f"tastytrade {path} answered without a data object")
            return data
        raise AssertionError("unreachable")

    async def option_chain(
        self, http: httpx.AsyncClient, underlying: str, max_days: int
    ) -> list[ChainContract]:
        """Streamer symbols of every contract expiring within ``max_days`` (all roots: SPX
        lists SPX and SPXW)."""
        path = f"/option-chains/{underlying.replace('/', '%2F')}/nested"
        data = await self.get(http, path, what="TASTYTRADE_CHAIN_SYMBOLS")
        out = []
        for chain in data.get("items") or []:
            for expiration in chain.get("expirations") or []:
                days = int(expiration.get("days-to-expiration", 0))
                if days > max_days:
                    continue
                for strike in expiration.get("strikes") or []:
                    for key in ("call-streamer-symbol", "put-streamer-symbol"):
                        symbol = strike.get(key)
                        if isinstance(symbol, str) and symbol:
                            out.append(ChainContract(symbol, days))
        return out

    async def futures(self, http: httpx.AsyncClient, product_code: str) -> list[dict[str, Any]]:
        data = await self.get(
            http,
            "/instruments/futures",
            what="TASTYTRADE_SYMBOLS",
            params={"product-code[]": product_code},
        )
        items = data.get("items") or []
        return [item for item in items if isinstance(item, dict)]


async def _send(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return await http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise TransportError(f"tastytrade {path}: {type(exc).__name__}", source=SOURCE) from exc


def _checked(response: httpx.Response, path: str) -> httpx.Response:
    """429, 5xx and other refusals not about credentials: back off and try again."""
    if response.status_code >= 400:
        raise TransportError(
            f"tastytrade {path} answered HTTP {response.status_code} ({_error_text(response)})",
            source=SOURCE,
        )
    return response


def _json(response: httpx.Response, path: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise TransportError(f"tastytrade {path} answered something that is not JSON") from None
    if not isinstance(body, dict):
        raise TransportError(f"tastytrade {path} answered JSON that is not an object")
    return body


def _error_text(response: httpx.Response) -> str:
    """The error code and message tastytrade sent (OAuth or its own envelope)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    error = body.get("error")
    if isinstance(error, dict):
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    if isinstance(error, str):
        detail = body.get("error_description") or body.get("message") or ""
        return f"{error}: {detail}".strip(": ")
    return f"HTTP {response.status_code}"


def _refused(response: httpx.Response) -> str:
    text = _error_text(response)
    lower = text.lower()
    if "invalid_client" in lower or ("client" in lower and "secret" in lower):
        setting = "TASTYTRADE_CLIENT_SECRET"
        fix = "copy the client secret of your OAuth application again"
    else:
        setting = "TASTYTRADE_REFRESH_TOKEN"
        fix = "create a new grant (OAuth Applications > Manage > Create Grant) and set it"
    return f"tastytrade refused the login ({text}): check {setting}: {fix}"


def _not_allowed(response: httpx.Response, path: str, what: str) -> str:
    text = _error_text(response)
    if path == "/api-quote-tokens":
        return (
            f"tastytrade refused a streaming token ({text}): the account behind {what} must "
            "be a fully onboarded tastytrade customer with market data access"
        )
    return f"tastytrade {path} answered {text}: check {what}"


def _seconds(value: Any, default: float) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default
    return seconds if seconds > 0 else default


def _instant_ns(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return int(instant.timestamp() * NS_PER_SECOND)
