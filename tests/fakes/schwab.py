"""A local fake Schwab on 127.0.0.1: OAuth, userPreference and chains over real HTTP
(Starlette + uvicorn), and the streamer over a real websocket (the ``websockets`` server).

It speaks what the fact sheet documents and real captures show:

- ``GET /v1/oauth/authorize`` logs the user in at once and redirects to the callback with
  ``?code=<code containing %40>&session=...&state=...``; ``POST /v1/oauth/token`` checks
  HTTP Basic app credentials (401 ``invalid_client``), a form-encoded body, the code (once,
  within 30 s, same ``redirect_uri``) and the PKCE verifier against the S256 challenge;
  the refresh grant refuses an unknown refresh token with Schwab's nested 400 body.
- ``GET /trader/v1/userPreference`` and ``GET /marketdata/v1/chains`` want ``Bearer``
  access tokens (401 ``Client not authorized`` otherwise). Chains come from recorded JSON,
  narrowed by ``strikeCount``; ``chain_max_strikes`` answers 502 ``TooBigBody`` above it and
  ``chain_429`` queues 429s (with ``Retry-After`` when ``retry_after`` is set).
- The streamer wants ADMIN/LOGIN first (else code 20 and a close), refuses bad tokens or
  ``deny_login`` with code 3 and a close, kicks older connections of the user with code 12,
  answers SUBS/ADD (code 19 beyond ``symbol_limit``, 11 for unknown services) and sends the
  current full values of each new key (only the fields asked for), then whatever the test
  pushes: ``update`` sends level-one deltas, ``book`` snapshots, ``bar`` chart bars,
  ``send_raw`` anything; heartbeats every ``heartbeat_s``; ``drop()`` cuts every socket
  without a close frame.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import dataclasses
import hashlib
import itertools
import secrets
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

import orjson
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from websockets.asyncio.server import Server, ServerConnection, serve

from tickpipe.cli import _Server

from .threaded import serve_in_thread

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "schwab"
SPX_CHAIN = FIXTURES / "spx_chain.json"
APP_KEY = "fakeAppKey0123456789abcdefABCDEF"
APP_SECRET = "fakeSecret012345"
REFRESH_TOKEN = "fake-refresh-token-0"
CUSTOMER_ID = "5as801a4152776d0e435d18b82e866fc58a920f9c52c7a70de6c6f845cb50bf5"
CORREL_ID = "1dd1ad6d-0246-9f38-dc70-e5bfd2a5dff8"
META = ("delayed", "assetMainType", "assetSubType", "cusip")
T = TypeVar("T")


def ms_now() -> int:
    return time.time_ns() // 1_000_000


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _unauthorized() -> Response:
    body = {
        "errors": [
            {
                "id": "f00192c6",
                "status": 401,
                "title": "Unauthorized",
                "detail": "Client not authorized",
            }
        ]
    }
    return _json(401, body)


REFRESH_REFUSED = {
    "error": "unsupported_token_type",
    "error_description": '400 Bad Request: "{"error_description":"Exception while authenticating '
    "refresh token [tokenDigest=3f2a], Exception=Failed refresh token authentication "
    '[tokenDigest=3f2a]]","error":"refresh_token_authentication_error"}"',
}


@dataclasses.dataclass(frozen=True)
class Hit:
    """One REST request as the fake answered it."""

    path: str
    params: dict[str, str]
    status: int
    at: float = dataclasses.field(default_factory=time.monotonic)


@dataclasses.dataclass
class Conn:
    """One streamer connection as the fake sees it."""

    ws: ServerConnection
    logged_in: bool = False
    subscriptions: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    fields: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    received: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class FakeSchwab:
    def __init__(self, *, heartbeat_s: float = 1.0, chain: Path = SPX_CHAIN) -> None:
        self.app_key = APP_KEY
        self.app_secret = APP_SECRET
        self.refresh_tokens: set[str] = {REFRESH_TOKEN}
        self.access_tokens: dict[str, float] = {}
        """access token -> expiry (epoch s)"""
        self.rotate_refresh = False
        """issue a new refresh token on every refresh grant (Schwab: UNCONFIRMED)"""
        self.codes: dict[str, dict[str, Any]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.rest_hits: list[Hit] = []
        self.heartbeat_s = heartbeat_s
        self.deny_login = False
        self.symbol_limit: int | None = None
        self.chain_max_strikes: int | None = None
        self.chain_429 = 0
        self.retry_after: str | None = None
        self.chains: dict[str, dict[str, Any]] = {}
        if chain.exists():
            self.set_chain(orjson.loads(chain.read_bytes()))
        self.levelone: dict[tuple[str, str], dict[str, Any]] = {}
        self.books: dict[tuple[str, str], dict[str, Any]] = {}
        self.bars: dict[tuple[str, str], dict[str, Any]] = {}
        self.conns: list[Conn] = []
        self.logins = 0
        self.login_requests = 0
        self.login_events: collections.deque[float] = collections.deque(maxlen=100)
        self._counter = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws_server: Server | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0
        self.ws_port = 0
        self.app = Starlette(
            routes=[
                Route("/v1/oauth/authorize", self._authorize),
                Route("/v1/oauth/token", self._token, methods=["POST"]),
                Route("/trader/v1/userPreference", self._preferences),
                Route("/marketdata/v1/chains", self._chains),
            ]
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    def settings_env(self) -> dict[str, str]:
        """The environment a pipeline needs to use this fake."""
        return {
            "SCHWAB_ENABLED": "true",
            "SCHWAB_API_BASE_URL": self.base_url,
            "SCHWAB_APP_KEY": self.app_key,
            "SCHWAB_APP_SECRET": self.app_secret,
            "SCHWAB_REFRESH_TOKEN": REFRESH_TOKEN,
        }

    def set_chain(self, chain: dict[str, Any]) -> None:
        self.chains[str(chain["symbol"])] = chain

    # ---- OAuth ------------------------------------------------------------------------

    def _issue(self) -> dict[str, Any]:
        access = f"fake-access-{next(self._counter)}-{secrets.token_hex(4)}"
        self.access_tokens[access] = time.time() + 1800
        return {
            "expires_in": 1800,
            "token_type": "Bearer",
            "scope": "api",
            "access_token": access,
            "id_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.e30.fake",
        }

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.app_key or not q.get("redirect_uri"):
            return Response("<html>Access Denied</html>", 403, media_type="text/html")
        code = f"C0.b2F1dGgyLmJkYy5zY2h3YWIuY29t.{secrets.token_urlsafe(12)}@"
        self.codes[code] = {
            "challenge": q.get("code_challenge"),
            "method": q.get("code_challenge_method"),
            "redirect_uri": q["redirect_uri"],
            "at": time.monotonic(),
        }
        query = {"code": code, "session": secrets.token_hex(8)}
        if "state" in q:
            query["state"] = q["state"]
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode(query, quote_via=quote)}", 302)

    async def _token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{self.app_key}:{self.app_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return _json(
                401,
                {"error": "invalid_client", "error_description": "Client authentication failed"},
            )
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return _json(
                400, {"error": "invalid_request", "error_description": "form body expected"}
            )
        form = dict(parse_qsl((await request.body()).decode()))
        self.token_requests.append(form)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            info = self.codes.pop(form.get("code", ""), None)
            if info is None or time.monotonic() - info["at"] > 30:
                return _json(
                    400, {"error": "invalid_grant", "error_description": "code expired or used"}
                )
            if form.get("redirect_uri") != info["redirect_uri"]:
                return _json(
                    400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
                )
            if info["challenge"] is not None:
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != info["challenge"]:
                    return _json(
                        400,
                        {"error": "invalid_grant", "error_description": "PKCE verification failed"},
                    )
            refresh = f"fake-refresh-{secrets.token_urlsafe(16)}"
            self.refresh_tokens.add(refresh)
            return _json(200, {**self._issue(), "refresh_token": refresh})
        if grant == "refresh_token":
            refresh = form.get("refresh_token", "")
            if refresh not in self.refresh_tokens:
                return _json(400, REFRESH_REFUSED)
            if self.rotate_refresh:
                self.refresh_tokens.discard(refresh)
                refresh = f"fake-refresh-{secrets.token_urlsafe(16)}"
                self.refresh_tokens.add(refresh)
            return _json(200, {**self._issue(), "refresh_token": refresh})
        return _json(400, {"error": "unsupported_grant_type"})

    def _bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ")
        return header.startswith("Bearer ") and self.access_tokens.get(token, 0) > time.time()

    # ---- REST -------------------------------------------------------------------------

    async def _preferences(self, request: Request) -> Response:
        if not self._bearer_ok(request):
            self.rest_hits.append(Hit(request.url.path, {}, 401))
            return _unauthorized()
        self.rest_hits.append(Hit(request.url.path, {}, 200))
        info = {
            "streamerSocketUrl": self.ws_url,
            "schwabClientCustomerId": CUSTOMER_ID,
            "schwabClientCorrelId": CORREL_ID,
            "schwabClientChannel": "N9",
            "schwabClientFunctionId": "APIAPP",
        }
        offers = [{"level2Permissions": True, "mktDataPermission": "NP"}]
        return _json(200, {"accounts": [], "streamerInfo": [info], "offers": offers})

    async def _chains(self, request: Request) -> Response:
        params = dict(request.query_params)
        if not self._bearer_ok(request):
            self.rest_hits.append(Hit(request.url.path, params, 401))
            return _unauthorized()
        if self.chain_429 > 0:
            self.chain_429 -= 1
            self.rest_hits.append(Hit(request.url.path, params, 429))
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            body = {"errors": [{"status": "429", "title": "Too Many Requests"}]}
            return _json(429, body, headers)
        chain = self.chains.get(params.get("symbol", ""))
        if chain is None:
            self.rest_hits.append(Hit(request.url.path, params, 404))
            return _json(
                404, {"errors": [{"id": "f00192c6", "status": "404", "title": "Not Found"}]}
            )
        count = int(params["strikeCount"]) if "strikeCount" in params else None
        body = narrowed(chain, count)
        strikes = len(_strikes(body))
        if self.chain_max_strikes is not None and strikes > self.chain_max_strikes:
            self.rest_hits.append(Hit(request.url.path, params, 502))
            fault = {
                "faultstring": "Body buffer overflow",
                "detail": {"errorcode": "protocol.http.TooBigBody"},
            }
            return _json(502, {"fault": fault})
        self.rest_hits.append(Hit(request.url.path, params, 200))
        return _json(200, body)

    # ---- streamer ---------------------------------------------------------------------

    async def _ws(self, ws: ServerConnection) -> None:
        conn = Conn(ws)
        self.conns.append(conn)
        beat: asyncio.Task[None] | None = None
        try:
            async for text in ws:
                message = orjson.loads(text)
                for request in message.get("requests", []):
                    conn.received.append(request)
                    if not conn.logged_in and request.get("command") != "LOGIN":
                        await self._respond(conn, request, 20, "Stream connection not found")
                        await ws.close()
                        return
                    if request.get("command") == "LOGIN":
                        if not await self._login(conn, request):
                            return
                        beat = asyncio.create_task(self._heartbeats(conn))
                    else:
                        await self._command(conn, request)
        except websockets.ConnectionClosed:
            pass
        finally:
            if beat is not None:
                beat.cancel()
            with contextlib.suppress(ValueError):
                self.conns.remove(conn)

    async def _respond(self, conn: Conn, request: dict[str, Any], code: int, msg: str) -> None:
        response = {
            "service": request.get("service"),
            "command": request.get("command"),
            "requestid": request.get("requestid"),
            "SchwabClientCorrelId": CORREL_ID,
            "timestamp": ms_now(),
            "content": {"code": code, "msg": msg},
        }
        await conn.ws.send(orjson.dumps({"response": [response]}).decode())

    async def _login(self, conn: Conn, request: dict[str, Any]) -> bool:
        self.login_requests += 1
        token = request.get("parameters", {}).get("Authorization", "")
        valid = (
            not self.deny_login
            and self.access_tokens.get(token, 0) > time.time()
            and request.get("SchwabClientCustomerId") == CUSTOMER_ID
            and request.get("SchwabClientCorrelId") == CORREL_ID
        )
        if not valid:
            await self._respond(conn, request, 3, "Login Denied.: token is invalid or has expired.")
            await conn.ws.close()
            return False
        for other in [c for c in self.conns if c is not conn and c.logged_in]:
            await self.notify_code(12, "Close connection: max connections reached", [other])
        conn.logged_in = True
        self.logins += 1
        self.login_events.append(time.monotonic())
        await self._respond(conn, request, 0, "server=fake-1;status=NP")
        return True

    async def _heartbeats(self, conn: Conn) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await conn.ws.send(
                    orjson.dumps({"notify": [{"heartbeat": str(ms_now())}]}).decode()
                )
                await asyncio.sleep(self.heartbeat_s)

    async def _command(self, conn: Conn, request: dict[str, Any]) -> None:
        service, command = request.get("service", ""), request.get("command", "")
        params = request.get("parameters", {})
        keys = [k for k in str(params.get("keys", "")).split(",") if k]
        if service not in KNOWN_SERVICES:
            await self._respond(conn, request, 11, "Service not available or temporary down.")
            return
        if command not in ("SUBS", "ADD"):
            await self._respond(conn, request, 21, "Bad command formatting")
            return
        current = set() if command == "SUBS" else conn.subscriptions.get(service, set())
        total = sum(len(v) for s, v in conn.subscriptions.items() if s != service)
        if self.symbol_limit is not None and total + len(current | set(keys)) > self.symbol_limit:
            await self._respond(conn, request, 19, "Reached symbol limit")
            return
        fresh = [k for k in keys if k not in current]
        conn.subscriptions[service] = current | set(keys)
        conn.fields[service] = set(str(params.get("fields", "")).split(","))
        await self._respond(conn, request, 0, f"{command} command succeeded")
        content = []
        for key in fresh:
            if (service, key) in self.levelone:
                content.append(self._filtered(conn, service, key, self.levelone[(service, key)]))
            elif (service, key) in self.books:
                content.append(self.books[(service, key)])
            elif (service, key) in self.bars:
                content.append(self.bars[(service, key)])
        if content:
            await self._data(conn, service, content)

    def _filtered(
        self, conn: Conn, service: str, key: str, values: dict[str, Any]
    ) -> dict[str, Any]:
        wanted = conn.fields.get(service, set())
        out: dict[str, Any] = {"key": key}
        out.update({k: v for k, v in values.items() if k in wanted or k in META})
        return out

    async def _data(self, conn: Conn, service: str, content: list[dict[str, Any]]) -> None:
        frame = {
            "data": [
                {"service": service, "timestamp": ms_now(), "command": "SUBS", "content": content}
            ]
        }
        with contextlib.suppress(websockets.ConnectionClosed):
            await conn.ws.send(orjson.dumps(frame).decode())

    def _subscribers(self, service: str, key: str) -> list[Conn]:
        return [c for c in self.conns if c.logged_in and key in c.subscriptions.get(service, ())]

    # ---- what tests push ----------------------------------------------------------------

    async def update(self, service: str, key: str, fields: dict[str, Any]) -> int:
        """Merge ``fields`` into the key's values and send them as a delta; returns how many
        connections got it (none before anyone subscribed: the values wait for the
        snapshot)."""
        self.levelone.setdefault((service, key), {}).update(fields)
        targets = self._subscribers(service, key)
        for conn in targets:
            delta = {
                k: v for k, v in fields.items() if k in conn.fields.get(service, ()) or k in META
            }
            await self._data(conn, service, [{"key": key, **delta}])
        return len(targets)

    async def book(
        self,
        service: str,
        key: str,
        bids: list[tuple[float, int, int]],
        asks: list[tuple[float, int, int]],
        time_ms: int | None = None,
    ) -> int:
        def side(levels: list[tuple[float, int, int]]) -> list[dict[str, Any]]:
            return [
                {"0": p, "1": s, "2": n, "3": [{"0": "NSDQ", "1": s, "2": 49786299}]}
                for p, s, n in levels
            ]

        item = {"1": time_ms or ms_now(), "2": side(bids), "3": side(asks), "key": key}
        self.books[(service, key)] = item
        targets = self._subscribers(service, key)
        for conn in targets:
            await self._data(conn, service, [item])
        return len(targets)

    async def bar(self, service: str, key: str, fields: dict[str, Any]) -> int:
        item = {**fields, "key": key}
        self.bars[(service, key)] = item
        targets = self._subscribers(service, key)
        for conn in targets:
            await self._data(conn, service, [item])
        return len(targets)

    async def send_raw(self, text: str) -> int:
        targets = [c for c in self.conns if c.logged_in]
        for conn in targets:
            await conn.ws.send(text)
        return len(targets)

    async def notify_code(self, code: int, msg: str, conns: list[Conn] | None = None) -> None:
        """An admin notice; codes that sever the connection (3, 12, 30) close it after."""
        notice = {
            "notify": [
                {"service": "ADMIN", "timestamp": ms_now(), "content": {"code": code, "msg": msg}}
            ]
        }
        for conn in list(self.conns if conns is None else conns):
            with contextlib.suppress(websockets.ConnectionClosed):
                await conn.ws.send(orjson.dumps(notice).decode())
                if code in (3, 12, 30):
                    await conn.ws.close()

    async def drop(self) -> int:
        """Cut every streamer socket without a close frame (a network failure)."""
        conns, self.conns = self.conns, []
        for conn in conns:
            conn.logged_in = False  # nothing more is sent to it
            conn.ws.transport.abort()
        return len(conns)

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ws_server = await serve(self._ws, "127.0.0.1", 0)
        self.ws_port = next(iter(self._ws_server.sockets)).getsockname()[1]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            lifespan="off",
            access_log=False,
            log_level="warning",
            ws="none",
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"

    async def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)

    async def __aenter__(self) -> FakeSchwab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run one of the push methods from another thread (``in_thread`` mode)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[FakeSchwab]:
        """Serve from a thread of its own (for tests that block, e.g. on a pipeline process)."""
        with serve_in_thread(self.start, self.stop, "fake-schwab"):
            yield self


KNOWN_SERVICES = frozenset(
    {
        "LEVELONE_EQUITIES",
        "LEVELONE_OPTIONS",
        "LEVELONE_FUTURES",
        "LEVELONE_FUTURES_OPTIONS",
        "LEVELONE_FOREX",
        "NYSE_BOOK",
        "NASDAQ_BOOK",
        "OPTIONS_BOOK",
        "CHART_EQUITY",
        "CHART_FUTURES",
        "SCREENER_EQUITY",
        "SCREENER_OPTION",
        "ACCT_ACTIVITY",
    }
)


def _strikes(chain: dict[str, Any]) -> set[float]:
    out: set[float] = set()
    for side in ("callExpDateMap", "putExpDateMap"):
        for strikes in chain.get(side, {}).values():
            out.update(float(k) for k in strikes)
    return out


def narrowed(chain: dict[str, Any], strike_count: int | None) -> dict[str, Any]:
    """The chain limited to ``strike_count`` strikes above and below the underlying price
    (per side and expiration), as Schwab's ``strikeCount`` does."""
    if strike_count is None:
        return chain
    spot = float(chain.get("underlyingPrice", 0))
    out = copy.deepcopy(chain)
    for side in ("callExpDateMap", "putExpDateMap"):
        for exp, strikes in out.get(side, {}).items():
            ordered = sorted(strikes, key=float)
            below = [k for k in ordered if float(k) < spot][-strike_count:]
            above = [k for k in ordered if float(k) >= spot][:strike_count]
            out[side][exp] = {k: strikes[k] for k in below + above}
    return out


def rebased(chain: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The recorded chain moved in time so that its latest quote is ``now_ms``: epoch-ms
    fields shift by the same amount, dates (keys, OCC symbols, expirations) by whole days."""
    import datetime as dt

    latest = max(
        c["quoteTimeInLong"]
        for side in ("callExpDateMap", "putExpDateMap")
        for strikes in chain[side].values()
        for contracts in strikes.values()
        for c in contracts
    )
    shift_ms = now_ms - latest
    days = dt.timedelta(days=round(shift_ms / 86_400_000))
    out = copy.deepcopy(chain)
    for side in ("callExpDateMap", "putExpDateMap"):
        moved = {}
        for exp, strikes in out[side].items():
            day, _, dte = exp.partition(":")
            new_day = dt.date.fromisoformat(day) + days
            for contracts in strikes.values():
                for c in contracts:
                    for field in ("quoteTimeInLong", "tradeTimeInLong", "lastTradingDay"):
                        c[field] += shift_ms
                    c["symbol"] = c["symbol"][:6] + f"{new_day:%y%m%d}" + c["symbol"][12:]
                    c["expirationDate"] = f"{new_day.isoformat()}" + c["expirationDate"][10:]
            moved[f"{new_day.isoformat()}:{dte}"] = strikes
        out[side] = moved
    return out


@contextlib.asynccontextmanager
async def running(**options: Any) -> AsyncIterator[FakeSchwab]:
    async with FakeSchwab(**options) as fake:
        yield fake
