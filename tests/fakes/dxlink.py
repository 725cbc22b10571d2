"""A local tastytrade + DXLink fake on 127.0.0.1: REST and the DXLink websocket, scripted by tests.

REST (a small HTTP/1.1 server): ``POST /oauth/token`` (refresh-token grant; 401 without a
``User-Agent``, ``invalid_client`` / ``invalid_grant`` for wrong credentials), ``GET
/api-quote-tokens`` (token, ``dxlink-url`` pointing at this fake, ``expires-at``), ``GET
/option-chains/{symbol}/nested`` and ``GET /instruments/futures``.

DXLink (``websockets``): enforces the handshake order (SETUP, AUTH, CHANNEL_REQUEST,
FEED_SETUP; anything early gets an ERROR and a closed socket) and the keepalive timeout it
announces (a client silent for longer gets ERROR TIMEOUT and a close); answers FEED_SETUP
with its own FEED_CONFIG field order (``event_fields``) or none at all; closes with 1009 on
a subscription message past ``max_subscription_items``; sends what it knows of a symbol
when it is subscribed (TimeAndSale as a snapshot, newest first, with snapshot flags) and
live events after ``publish``. ``drop``, ``error``, ``silence`` and ``send_raw`` script the
rest. Missing fields go out as null, doubles may be the strings ``"NaN"``/``"Infinity"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .threaded import serve_in_thread

SNAPSHOT_BEGIN, SNAPSHOT_END, REMOVE_EVENT = 0x04, 0x08, 0x02


@dataclasses.dataclass
class Connection:
    ws: ServerConnection
    received: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    subscriptions: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    subscription_messages: int = 0
    requested_fields: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    authorized: bool = False
    open_channels: set[int] = dataclasses.field(default_factory=set)
    feed_channel: int | None = None
    data_format: str = "COMPACT"
    keepalives: int = 0
    client_gaps: list[float] = dataclasses.field(default_factory=list)
    closed_by_server: str | None = None


class FakeTastytrade:
    def __init__(
        self,
        *,
        client_secret: str = "test-secret",
        refresh_token: str = "test-refresh",
        keepalive_timeout_s: float = 60.0,
        event_fields: dict[str, list[str]] | None = None,
        send_event_fields: bool = True,
        max_subscription_items: int | None = None,
        access_ttl_s: float = 900.0,
        quote_token_ttl_s: float = 86_400.0,
        chains: dict[str, list[tuple[dt.date, float]]] | None = None,
        futures: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.keepalive_timeout_s = keepalive_timeout_s
        self.event_fields = event_fields
        self.send_event_fields = send_event_fields
        self.max_subscription_items = max_subscription_items
        self.access_ttl_s = access_ttl_s
        self.quote_token_ttl_s = quote_token_ttl_s
        self.chains = chains or {}
        self.futures = futures or {}
        self.connections: list[Connection] = []
        self.rest_calls: list[tuple[str, str, dict[str, str]]] = []
        self.state: dict[str, dict[str, dict[str, Any]]] = {}
        """event type -> symbol -> latest event (Quote, Trade, Summary, Greeks)"""
        self.tape: dict[str, list[dict[str, Any]]] = {}
        self.quote_tokens: set[str] = set()
        self.silent = False
        self.refuse_tokens = 0
        """refuse this many more AUTH attempts whatever the token (-1: all of them)"""
        self._access: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._changed: asyncio.Condition | None = None
        self._ws_server: Server | None = None
        self._http: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.rest_url = ""
        self.ws_url = ""

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> FakeTastytrade:
        self.loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        self._ws_server = await serve(self._serve_ws, "127.0.0.1", 0, ping_interval=None)
        ws_port = next(iter(self._ws_server.sockets)).getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{ws_port}/realtime"
        self._http = await asyncio.start_server(self._serve_http, "127.0.0.1", 0)
        http_port = self._http.sockets[0].getsockname()[1]
        self.rest_url = f"http://127.0.0.1:{http_port}"
        return self

    async def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> FakeTastytrade:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[FakeTastytrade]:
        """Serve from a thread of its own (for tests that block, e.g. on a pipeline process)."""
        with serve_in_thread(self.start, self.stop, "fake-dxlink"):
            yield self

    def call(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the fake's loop (from another thread)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn)

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate`` holds; re-checked whenever the fake records something."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    def _notify(self) -> None:
        if self._changed is None:
            return

        async def notify() -> None:
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()

        self._spawn(notify())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- scripting -------------------------------------------------------------------

    @property
    def live(self) -> list[Connection]:
        return [
            c for c in self.connections if c.closed_by_server is None and c.ws.state is State.OPEN
        ]

    def publish(self, event_type: str, symbol: str, **fields: Any) -> dict[str, Any]:
        """Record one event and send it to every connection subscribed to it."""
        event = {"eventType": event_type, "eventSymbol": symbol, **fields}
        if event_type == "TimeAndSale":
            self.tape.setdefault(symbol, []).append(event)
        else:
            self.state.setdefault(event_type, {})[symbol] = event
        for conn in self.live:
            if (event_type, symbol) in conn.subscriptions:
                self._spawn(self._send_events(conn, [event]))
        return event

    def trade(self, symbol: str, price: float, size: float, time_ms: int, **extra: Any) -> None:
        """A print on the tape; its index follows dxFeed's (seconds << 32 | ms << 22 | n)."""
        n = len(self.tape.get(symbol, []))
        index = ((time_ms // 1000) << 32) | ((time_ms % 1000) << 22) | (n & 0x3FFFFF)
        self.publish(
            "TimeAndSale", symbol, time=time_ms, index=index, price=price, size=size,
            eventFlags=0, **extra,
        )  # fmt: skip

    async def drop(self) -> None:
        """Cut every connection as a network failure would (no close handshake)."""
        for conn in self.live:
            conn.closed_by_server = "dropped"
            conn.ws.transport.abort()
        self._notify()

    async def error(self, error: str, message: str) -> None:
        for conn in self.live:
            await self._send(
                conn, {"type": "ERROR", "channel": 0, "error": error, "message": message}
            )

    async def send_raw(self, text: str) -> None:
        for conn in self.live:
            await conn.ws.send(text)

    def full_format(self) -> None:
        """Switch live channels to FULL data mid-session (seen in real recordings)."""
        for conn in self.live:
            conn.data_format = "FULL"

    # -- DXLink ----------------------------------------------------------------------

    async def _serve_ws(self, ws: ServerConnection) -> None:
        conn = Connection(ws)
        self.connections.append(conn)
        self._notify()
        keepalive = asyncio.create_task(self._server_keepalives(conn))
        try:
            await self._converse(conn)
        except ConnectionClosed:
            pass
        finally:
            keepalive.cancel()
            self._notify()

    async def _converse(self, conn: Connection) -> None:
        last = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(self.keepalive_timeout_s):
                    frame = await conn.ws.recv()
            except TimeoutError:
                gap = time.monotonic() - last
                message = f"The timeout has been reached. The message was last received {gap:.1f} seconds ago."
                await self._refuse(conn, "TIMEOUT", message)
                return
            now = time.monotonic()
            conn.client_gaps.append(now - last)
            last = now
            message = orjson.loads(frame)
            conn.received.append(message)
            self._notify()
            if not await self._handle(conn, message):
                return

    async def _handle(self, conn: Connection, message: dict[str, Any]) -> bool:
        kind, channel = message.get("type"), message.get("channel", 0)
        if not conn.received[:-1] and kind != "SETUP":
            return await self._refuse(conn, "UNSUPPORTED_PROTOCOL", "SETUP must come first")
        if kind == "SETUP":
            timeout = self.keepalive_timeout_s
            await self._send(conn, {
                "type": "SETUP", "channel": 0, "keepaliveTimeout": timeout,
                "acceptKeepaliveTimeout": timeout, "version": "1.0-fake",
            })  # fmt: skip
            await self._send(conn, {"type": "AUTH_STATE", "channel": 0, "state": "UNAUTHORIZED"})
        elif kind == "AUTH":
            refused = self.refuse_tokens != 0
            if refused and self.refuse_tokens > 0:
                self.refuse_tokens -= 1
            if refused or message.get("token") not in self.quote_tokens:
                await self._send(
                    conn, {"type": "AUTH_STATE", "channel": 0, "state": "UNAUTHORIZED"}
                )
                return await self._refuse(conn, "UNAUTHORIZED", "invalid token")
            conn.authorized = True
            await self._send(
                conn, {"type": "AUTH_STATE", "channel": 0, "state": "AUTHORIZED", "userId": "u1"}
            )
        elif kind == "KEEPALIVE":
            conn.keepalives += 1
        elif not conn.authorized:
            return await self._refuse(conn, "UNAUTHORIZED", f"{kind} before AUTHORIZED")
        elif kind == "CHANNEL_REQUEST":
            if channel % 2 == 0 or message.get("service") != "FEED":
                return await self._refuse(conn, "BAD_ACTION", "odd FEED channels only")
            conn.open_channels.add(channel)
            await self._send(conn, {
                "type": "CHANNEL_OPENED", "channel": channel, "service": "FEED",
                "parameters": {"contract": "AUTO", "subFormat": "LIST"},
            })  # fmt: skip
        elif channel not in conn.open_channels:
            return await self._refuse(conn, "BAD_ACTION", f"{kind} on unopened channel {channel}")
        elif kind == "FEED_SETUP":
            conn.feed_channel = channel
            conn.requested_fields = dict(message.get("acceptEventFields") or {})
            config: dict[str, Any] = {
                "type": "FEED_CONFIG", "channel": channel, "dataFormat": "COMPACT",
                "aggregationPeriod": message.get("acceptAggregationPeriod", 0.1),
            }  # fmt: skip
            if self.send_event_fields:
                config["eventFields"] = {t: self._fields(conn, t) for t in conn.requested_fields}
            await self._send(conn, config)
        elif kind == "FEED_SUBSCRIPTION":
            return await self._subscribe(conn, message)
        else:
            return await self._refuse(conn, "BAD_ACTION", f"unexpected {kind}")
        return True

    async def _subscribe(self, conn: Connection, message: dict[str, Any]) -> bool:
        added = message.get("add") or []
        if self.max_subscription_items is not None and len(added) > self.max_subscription_items:
            conn.closed_by_server = "1009"
            await conn.ws.close(1009, "message too big")
            return False
        if conn.feed_channel is None:
            return await self._refuse(conn, "BAD_ACTION", "FEED_SUBSCRIPTION before FEED_SETUP")
        conn.subscription_messages += 1
        if message.get("reset"):
            conn.subscriptions.clear()
        for item in message.get("remove") or []:
            conn.subscriptions.discard((item["type"], item["symbol"]))
        snapshot: list[dict[str, Any]] = []
        for item in added:
            key = (item["type"], item["symbol"])
            conn.subscriptions.add(key)
            snapshot += self._snapshot(*key)
        self._notify()
        if snapshot:
            await self._send_events(conn, snapshot)
        return True

    def _snapshot(self, event_type: str, symbol: str) -> list[dict[str, Any]]:
        if event_type == "TimeAndSale":
            prints = [dict(e) for e in reversed(self.tape.get(symbol, []))]
            if not prints:
                return [{"eventType": event_type, "eventSymbol": symbol, "eventFlags": 14}]
            prints[0]["eventFlags"] = SNAPSHOT_BEGIN
            prints[-1]["eventFlags"] = prints[-1].get("eventFlags", 0) | SNAPSHOT_END
            return prints
        latest = self.state.get(event_type, {}).get(symbol)
        if latest is None:
            return []
        if event_type == "Greeks":
            return [{**latest, "eventFlags": SNAPSHOT_BEGIN | SNAPSHOT_END}]
        return [latest]

    def _fields(self, conn: Connection, event_type: str) -> list[str]:
        """The field order this server uses: its own when configured, else the client's."""
        if self.event_fields and event_type in self.event_fields:
            return self.event_fields[event_type]
        return list(conn.requested_fields.get(event_type, []))

    async def _send_events(self, conn: Connection, events: list[dict[str, Any]]) -> None:
        if conn.feed_channel is None:
            return
        if conn.data_format == "FULL":
            data: list[Any] = [_jsonable(e) for e in events]
        else:
            data = []
            for event in events:
                names = self._fields(conn, event["eventType"])
                values = [_jsonable_value(event.get(name)) for name in names]
                if data and data[-2] == event["eventType"]:
                    data[-1] += values
                else:
                    data += [event["eventType"], values]
        await self._send(conn, {"type": "FEED_DATA", "channel": conn.feed_channel, "data": data})

    async def _send(self, conn: Connection, message: dict[str, Any]) -> None:
        if self.silent:
            return
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(orjson.dumps(message).decode())

    async def _refuse(self, conn: Connection, error: str, message: str) -> bool:
        conn.closed_by_server = error
        await self._send(conn, {"type": "ERROR", "channel": 0, "error": error, "message": message})
        await conn.ws.close(1000, error)
        self._notify()
        return False

    async def _server_keepalives(self, conn: Connection) -> None:
        """Send KEEPALIVE when the client would otherwise hear nothing for too long."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(min(self.keepalive_timeout_s, 60) / 3)
                await self._send(conn, {"type": "KEEPALIVE", "channel": 0})

    # -- REST ------------------------------------------------------------------------

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            url = urlsplit(target)
            self.rest_calls.append((method, url.path, headers))
            status, payload = self._route(method, url.path, parse_qs(url.query), headers, body)
            data = orjson.dumps(payload)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._notify()

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, Any]:
        if not headers.get("user-agent"):
            return 401, {"error": {"code": "unauthorized", "message": "User-Agent is required"}}
        if method == "POST" and path == "/oauth/token":
            grant = orjson.loads(body or b"{}")
            if grant.get("client_secret") != self.client_secret:
                return 401, {"error": "invalid_client", "error_description": "bad client secret"}
            if (
                grant.get("grant_type") != "refresh_token"
                or grant.get("refresh_token") != self.refresh_token
            ):
                return 400, {"error": "invalid_grant", "error_description": "grant revoked"}
            token = f"access-{next(self._ids)}"
            self._access[token] = time.monotonic() + self.access_ttl_s
            return 200, {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.access_ttl_s,
            }
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        if self._access.get(bearer, 0) < time.monotonic():
            return 401, {"error": {"code": "token_invalid", "message": "access token expired"}}
        if method == "GET" and path == "/api-quote-tokens":
            token = f"quote-{next(self._ids)}"
            self.quote_tokens.add(token)
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.quote_token_ttl_s)
            return 200, {"data": {
                "token": token, "dxlink-url": self.ws_url, "level": "api",
                "expires-at": expires.isoformat().replace("+00:00", "Z"),
            }, "context": "/api-quote-tokens"}  # fmt: skip
        if method == "GET" and path.startswith("/option-chains/") and path.endswith("/nested"):
            return self._chain(path.split("/")[2])
        if method == "GET" and path == "/instruments/futures":
            code = (query.get("product-code[]") or [""])[0]
            return 200, {"data": {"items": self.futures.get(code, [])}}
        return 404, {"error": {"code": "not_found", "message": path}}

    def _chain(self, underlying: str) -> tuple[int, Any]:
        contracts = self.chains.get(underlying)
        if contracts is None:
            return 404, {"error": {"code": "not_found", "message": f"no chain for {underlying}"}}
        today = dt.date.today()
        by_expiry: dict[dt.date, list[float]] = {}
        for expiry, strike in contracts:
            by_expiry.setdefault(expiry, []).append(strike)
        expirations = [
            {
                "expiration-date": expiry.isoformat(),
                "days-to-expiration": (expiry - today).days,
                "expiration-type": "Regular",
                "settlement-type": "PM",
                "strikes": [
                    {
                        "strike-price": f"{strike:.1f}",
                        "call-streamer-symbol": streamer(underlying, expiry, "C", strike),
                        "put-streamer-symbol": streamer(underlying, expiry, "P", strike),
                    }
                    for strike in strikes
                ],
            }
            for expiry, strikes in sorted(by_expiry.items())
        ]
        item = {
            "underlying-symbol": underlying,
            "root-symbol": underlying,
            "expirations": expirations,
        }
        return 200, {"data": {"items": [item]}, "context": f"/option-chains/{underlying}/nested"}


def streamer(root: str, expiry: dt.date, right: str, strike: float) -> str:
    """tastytrade's option streamer symbol: ``.SPY251219C600``, ``.SPLG240315C24.5``."""
    text = f"{strike:.3f}".rstrip("0").rstrip(".")
    return f".{root}{expiry:%y%m%d}{right}{text}"


def _jsonable_value(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _jsonable(event: dict[str, Any]) -> dict[str, Any]:
    return {k: _jsonable_value(v) for k, v in event.items() if v is not None}
