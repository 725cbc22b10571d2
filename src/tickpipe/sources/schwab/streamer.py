"""The Schwab streamer as a tickpipe source (name ``schwab``).

One attempt: refresh the access token if needed -> ``GET /trader/v1/userPreference`` for the
socket URL and client ids -> websocket -> ADMIN/LOGIN (bare access token), waiting for code
0 -> SUBS/ADD per service in batches, one command at a time (parallel commands fail with
codes 22-25) -> read until the connection ends. The supervisor reconnects; a new attempt logs
in and subscribes everything again, and the context records the outage as a gap. Login
response (real capture)::

    {"response":[{"service":"ADMIN","command":"LOGIN","requestid":"1",
      "SchwabClientCorrelId":"60b4c643-...","timestamp":1755118704102,
      "content":{"code":0,"msg":"server=s3081dc7-2;status=NP"}}]}

Codes that end an attempt: 3 login denied (twice in a row with a fresh token: a settings
problem, the source stops), 12 another connection of the same user took over (three times
in a row soon after login: stop rather than fight the other client), 30 stop streaming.
Codes 11, 19 and 21-25 (a service unavailable, the symbol limit, a failed command) leave
the stream up and show on /status.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import logging

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError, ParseError, TransportError
from tickpipe.sources import backlog
from tickpipe.sources.base import SourceContext
from tickpipe.sources.registry import default_policy
from tickpipe.sources.schwab.auth import TIMEOUT, TokenManager
from tickpipe.sources.schwab.decoded import Response
from tickpipe.sources.schwab.fields import RESPONSE_NAMES, SERVICES, ResponseCode
from tickpipe.sources.schwab.parse import StreamParser
from tickpipe.sources.schwab.ratelimit import TokenBucket
from tickpipe.sources.schwab.rest import SchwabRest, StreamerInfo
from tickpipe.sources.schwab.subscriptions import Plan

log = logging.getLogger(__name__)

SOURCE = "schwab"
COMMAND_TIMEOUT_S = 15.0
KICKED_WINDOW_S = 60.0
"""a code 12 this soon after login counts towards giving up (another client keeps winning)"""
KICKED_LIMIT = 3
TOKEN_RETRY_S = 60.0
REFUSED_RETRY_S = 600.0
"""after a refused refresh token (it will not heal in a minute) rather than an outage"""
IDLE_TIMEOUT_S = 120.0
"""Schwab's heartbeat interval is unpublished; websocket pings catch a dead socket sooner"""


def iso_ns(ns: int) -> str:
    return (
        dt.datetime.fromtimestamp(ns / NS_PER_SECOND, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class _Session:
    """One websocket's command channel: numbered requests, one outstanding at a time."""

    def __init__(self, ws: ClientConnection, info: StreamerInfo) -> None:
        self._ws = ws
        self.info = info
        self._lock = asyncio.Lock()
        self._next = 0
        self._pending: dict[str, asyncio.Future[Response]] = {}

    async def command(self, service: str, command: str, parameters: dict[str, str]) -> Response:
        async with self._lock:
            self._next += 1
            rid = str(self._next)
            future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self._pending[rid] = future
            request = {
                "requests": [
                    {
                        "service": service,
                        "command": command,
                        "requestid": rid,
                        "SchwabClientCustomerId": self.info.customer_id,
                        "SchwabClientCorrelId": self.info.correl_id,
                        "parameters": parameters,
                    }
                ]
            }
            try:
                await self._ws.send(orjson.dumps(request).decode())
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    return await future
            except TimeoutError:
                raise TransportError(
                    f"no answer to {service} {command} within {COMMAND_TIMEOUT_S:g}s",
                    source=SOURCE,
                ) from None
            finally:
                self._pending.pop(rid, None)

    def deliver(self, response: Response) -> bool:
        """Hand a response to the command waiting for it; False if nobody waits."""
        future = self._pending.get(response.requestid)
        if future is None or future.done():
            return False
        future.set_result(response)
        return True


class SchwabStreamer:
    name = SOURCE

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        tokens: TokenManager,
        limiter: TokenBucket,
        plan: Plan,
    ) -> None:
        base = default_policy(settings)
        idle = max(base.idle_timeout_s or 0.0, IDLE_TIMEOUT_S)
        self.policy = dataclasses.replace(base, idle_timeout_s=idle)
        self._settings = settings
        self._clock = clock
        self._tokens = tokens
        self._limiter = limiter
        self.plan = plan
        self.parser = StreamParser(equity_size_multiplier=settings.schwab_equity_size_multiplier)
        self.connections = 0
        self._login_ns = 0
        self._kicked = 0
        self._denials = 0
        self._errors: collections.deque[str] = collections.deque(maxlen=10)

    async def run(self, ctx: SourceContext) -> None:
        self.parser.resume(ctx.sequences)
        ctx.phase("authenticating")
        access = await self._tokens.access_token()
        self._tokens.warn_if_expiring()
        ctx.info(**self._tokens.facts())
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            rest = SchwabRest(http, self._settings.schwab_api_base_url, self._tokens, self._limiter)
            info = await rest.streamer_info()
        ctx.phase("connecting")
        try:
            async with websockets.connect(
                info.url, open_timeout=10, max_size=2**24, ping_interval=20, ping_timeout=30
            ) as ws:
                self.connections += 1
                ctx.info(connections=self.connections, reconnects=self.connections - 1)
                self.parser.new_connection()
                session = _Session(ws, info)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._read(ws, session, ctx), name="schwab-read")
                    tasks.create_task(backlog.watch(ctx, ws), name="schwab-backlog")
                    await self._login(session, access, ctx)
                    tasks.create_task(self._keep_tokens(ctx), name="schwab-tokens")
                    await self._subscribe(session, ctx)
                    ctx.phase("streaming")
        except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            raise TransportError(f"cannot open {info.url}: {exc!r}", source=SOURCE) from exc

    async def _login(self, session: _Session, access: str, ctx: SourceContext) -> None:
        ctx.phase("logging in")
        response = await session.command(
            "ADMIN",
            "LOGIN",
            {
                "Authorization": access,
                "SchwabClientChannel": session.info.channel,
                "SchwabClientFunctionId": session.info.function_id,
            },
        )
        if response.code == ResponseCode.LOGIN_DENIED:
            self._denied(access, response)
        if response.code != ResponseCode.SUCCESS:
            raise TransportError(f"login failed: {_describe(response)}", source=SOURCE)
        self._denials = 0
        self._login_ns = self._clock.now_ns()
        facts = dict(part.split("=", 1) for part in response.msg.split(";") if "=" in part)
        ctx.info(
            login_time=iso_ns(self._login_ns),
            server=facts.get("server"),
            entitlement=facts.get("status"),
        )

    def _denied(self, access: str, response: Response) -> None:
        """Denied: the next attempt logs in with a new token; denied again, it is not the
        token's age but the app or the account, which no retry fixes."""
        self._tokens.invalidate(access)
        self._denials += 1
        if self._denials >= 2:
            raise ConfigError(
                f"Schwab denied the streamer login with a freshly refreshed token "
                f"({response.msg!r}): check that the app at developer.schwab.com is "
                "'Ready For Use' with market data, then run `tickpipe schwab oauth` again"
            )
        raise TransportError(f"login denied: {response.msg}", source=SOURCE)

    async def _subscribe(self, session: _Session, ctx: SourceContext) -> None:
        ctx.phase("subscribing")
        done: dict[str, int] = {}
        failed: list[str] = []
        for service, command, keys in self.plan.requests():
            response = await session.command(
                service,
                command,
                {"keys": ",".join(keys), "fields": SERVICES[service].subscribe_fields},
            )
            if response.code in ResponseCode.SUCCEEDED:
                done[service] = done.get(service, 0) + len(keys)
                continue
            problem = f"{service} {command} of {len(keys)} keys: {_describe(response)}"
            failed.append(problem)
            self._error(problem, ctx)
            ctx.count("subscription_errors")
        ctx.info(subscriptions=done, subscription_errors=failed, subscribed_at=iso_ns(self._now()))

    async def _read(self, ws: ClientConnection, session: _Session, ctx: SourceContext) -> None:
        parser = self.parser
        try:
            async for frame in ws:
                recv_ns = self._clock.now_ns()
                try:
                    decoded = parser.parse(frame, recv_ns)
                except ParseError as exc:
                    await ctx.reject(frame, str(exc))
                    continue
                for bad in decoded.rejects:
                    await ctx.reject(bad.raw, bad.reason, kind=bad.kind, symbol=bad.symbol)
                if decoded.unknown_fields:
                    ctx.count("unknown_fields", decoded.unknown_fields)
                if decoded.heartbeats:
                    delayed = sum(parser.delayed.values())
                    ctx.info(last_heartbeat=iso_ns(recv_ns), delayed_symbols=delayed)
                for response in decoded.responses:
                    if not session.deliver(response):
                        self._notice(response, ctx)
                if decoded.batches:
                    await ctx.emit(decoded.batches)
                else:
                    ctx.alive()
        except websockets.ConnectionClosed as exc:
            raise TransportError(f"the streamer connection closed: {exc}", source=SOURCE) from exc
        raise TransportError("the streamer closed the connection", source=SOURCE)

    def _notice(self, response: Response, ctx: SourceContext) -> None:
        """A code nobody asked for: an admin notice, or a late answer."""
        code = response.code
        if code in ResponseCode.SUCCEEDED:
            return
        self._error(_describe(response), ctx)
        ctx.count(f"code_{code}")
        if code == ResponseCode.CLOSE_CONNECTION:
            soon = self._now() - self._login_ns < KICKED_WINDOW_S * NS_PER_SECOND
            self._kicked = self._kicked + 1 if soon else 1
            if self._kicked >= KICKED_LIMIT:
                raise ConfigError(
                    "another streamer connection for this Schwab user keeps taking over "
                    "(code 12: one connection per user): stop the other client, then restart "
                    "the source (POST /api/v1/admin/sources/schwab/restart)"
                )
            raise TransportError(f"Schwab closed the stream: {_describe(response)}", source=SOURCE)
        if code in (ResponseCode.STOP_STREAMING, ResponseCode.STREAM_CONN_NOT_FOUND):
            raise TransportError(f"Schwab stopped the stream: {_describe(response)}", source=SOURCE)
        if code == ResponseCode.LOGIN_DENIED:
            raise TransportError(f"login denied: {response.msg}", source=SOURCE)

    async def _keep_tokens(self, ctx: SourceContext) -> None:
        """Refresh the access token before it expires, so the next reconnect (and the chain
        poller) have one; a failure here is shown but leaves the open stream alone."""
        while True:
            await asyncio.sleep(max(5.0, self._tokens.seconds_until_refresh()))
            try:
                await self._tokens.access_token()
            except (ConfigError, TransportError) as exc:
                self._error(f"token refresh: {exc}", ctx)
                refused = isinstance(exc, ConfigError)
                await asyncio.sleep(REFUSED_RETRY_S if refused else TOKEN_RETRY_S)
            self._tokens.warn_if_expiring()
            ctx.info(**self._tokens.facts())

    def _error(self, text: str, ctx: SourceContext) -> None:
        stamped = f"{iso_ns(self._now())} {text}"
        self._errors.append(stamped)
        log.warning("schwab: %s", text)
        ctx.info(last_stream_error=stamped, stream_errors=list(self._errors))

    def _now(self) -> int:
        return self._clock.now_ns()


def _describe(response: Response) -> str:
    name = RESPONSE_NAMES.get(response.code, "UNKNOWN")
    return f"code {response.code} {name} ({response.msg})"
