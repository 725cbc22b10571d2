"""One DXLink websocket connection: handshake, feed channel, subscriptions, keepalives.

The exchange (tastytrade's own web platform, abridged)::

    > {"type":"SETUP","channel":0,"version":"0.1-DXF-JS/0.3.0","keepaliveTimeout":60,
       "acceptKeepaliveTimeout":60}
    < {"type":"SETUP","channel":0,"keepaliveTimeout":60,"acceptKeepaliveTimeout":60,...}
    < {"type":"AUTH_STATE","channel":0,"state":"UNAUTHORIZED"}
    > {"type":"AUTH","channel":0,"token":"<api-quote-token>"}
    < {"type":"AUTH_STATE","channel":0,"state":"AUTHORIZED","userId":"..."}
    > {"type":"CHANNEL_REQUEST","channel":3,"service":"FEED","parameters":{"contract":"AUTO"}}
    < {"type":"CHANNEL_OPENED","channel":3,"service":"FEED",...}
    > {"type":"FEED_SETUP","channel":3,"acceptDataFormat":"COMPACT","acceptEventFields":{...}}
    < {"type":"FEED_CONFIG","channel":3,"dataFormat":"COMPACT","eventFields":{...}}
    > {"type":"FEED_SUBSCRIPTION","channel":3,"reset":true,"add":[{"type":"Quote","symbol":"SPY"}]}
    < {"type":"FEED_DATA","channel":3,"data":["Quote",[...]]}

Keepalives go out at a third of the shortest timeout either side announced (the server's
may be far below 30 s); a server silent for longer than the timeout we announced
(``TASTYTRADE_KEEPALIVE_TIMEOUT_S``) is a dead connection: it is closed and the attempt
fails, for the supervisor to reconnect. Server ERROR messages are informational: logged
with their text, counted and shown in /status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tickpipe.clock import Clock
from tickpipe.errors import TransportError, first_cause
from tickpipe.sources.base import SourceContext

log = logging.getLogger(__name__)

VERSION = "0.1-tickpipe/0.1"
CHANNEL = 3
ACTION_TIMEOUT_S = 10.0
KEEPALIVE_MAX_INTERVAL_S = 30.0
KEEPALIVE = orjson.dumps({"type": "KEEPALIVE", "channel": 0}).decode()
MAX_ERRORS_SHOWN = 5
MAX_PENDING_FRAMES = 512
"""frames received and not yet decoded; past this the backlog stays on the socket"""

OnMessage = Callable[[dict[str, Any], str | bytes], Awaitable[None]]


class AuthRefused(TransportError):
    """DXLink answered our AUTH with UNAUTHORIZED (or closed the socket)."""


class Link:
    """The protocol state of one connection; ``on_feed`` gets FEED_DATA, raw frame kept."""

    def __init__(
        self,
        ws: ClientConnection,
        ctx: SourceContext,
        clock: Clock,
        *,
        keepalive_timeout_s: float,
        on_feed: OnMessage,
        on_config: Callable[[dict[str, Any]], None],
        whole: Callable[[Any], bool] = lambda data: False,
    ) -> None:
        self.ws = ws
        self._whole = whole
        """whether a FEED_DATA's data is whole events only (else it is decoded alone, so a
        quarantined frame keeps its own raw text)"""
        self._ctx = ctx
        self._clock = clock
        self._timeout = keepalive_timeout_s
        self._on_feed = on_feed
        self._on_config = on_config
        self.server_timeouts: list[float] = []
        self.server_setup = False
        self.auth_states: list[str] = []
        self.channel_open = False
        self.last_received = clock.monotonic()
        self.errors: list[dict[str, Any]] = []
        self.closing: str | None = None
        """why we closed the connection ourselves, if we did"""

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def handshake(self, token: str) -> None:
        """SETUP, then AUTH unless the server says we are authorized already."""
        await self.send(
            {
                "type": "SETUP",
                "channel": 0,
                "version": VERSION,
                "keepaliveTimeout": self._timeout,
                "acceptKeepaliveTimeout": self._timeout,
            }
        )
        await self._until(lambda: self.server_setup and bool(self.auth_states), "SETUP")
        if self.auth_states[-1] == "AUTHORIZED":
            return
        seen = len(self.auth_states)
        await self.send({"type": "AUTH", "channel": 0, "token": token})
        try:
            await self._until(lambda: len(self.auth_states) > seen, "AUTH_STATE")
        except ConnectionClosed as exc:
            raise AuthRefused("DXLink closed the connection after AUTH") from exc
        if self.auth_states[-1] != "AUTHORIZED":
            raise AuthRefused("DXLink refused the quote token (AUTH_STATE UNAUTHORIZED)")

    async def reauthorize(self, token: str) -> None:
        """A fresh quote token on the live connection, before the old one expires."""
        await self.send({"type": "AUTH", "channel": 0, "token": token})

    async def open_feed(self, fields: dict[str, list[str]], aggregation_s: float) -> None:
        await self.send(
            {
                "type": "CHANNEL_REQUEST",
                "channel": CHANNEL,
                "service": "FEED",
                "parameters": {"contract": "AUTO"},
            }
        )
        await self._until(lambda: self.channel_open, "CHANNEL_OPENED")
        await self.send(
            {
                "type": "FEED_SETUP",
                "channel": CHANNEL,
                "acceptAggregationPeriod": aggregation_s,
                "acceptDataFormat": "COMPACT",
                "acceptEventFields": fields,
            }
        )

    async def subscribe(self, items: list[dict[str, str]], batch: int) -> None:
        """Everything in messages of at most ``batch`` items, the first one resetting
        whatever the server may still hold for this channel."""
        for start in range(0, max(len(items), 1), batch):
            message: dict[str, Any] = {
                "type": "FEED_SUBSCRIPTION",
                "channel": CHANNEL,
                "add": items[start : start + batch],
            }
            if start == 0:
                message["reset"] = True
            await self.send(message)

    @property
    def keepalive_interval(self) -> float:
        shortest = min([self._timeout, *self.server_timeouts])
        return min(KEEPALIVE_MAX_INTERVAL_S, shortest / 3)

    async def keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            await self.ws.send(KEEPALIVE)
            self._ctx.info(dxlink_last_keepalive_sent_ns=self._clock.now_ns())

    async def watch_silence(self) -> None:
        """Close the connection when the server says nothing for our announced timeout."""
        while True:
            quiet = self._clock.monotonic() - self.last_received
            if quiet >= self._timeout:
                self.closing = (
                    f"DXLink server silent for {quiet:.1f} s "
                    f"(TASTYTRADE_KEEPALIVE_TIMEOUT_S={self._timeout:g})"
                )
                await self.ws.close(code=1000, reason="keepalive timeout")
                raise TransportError(self.closing, source="tastytrade")
            await asyncio.sleep(max(self._timeout - quiet, 0.05))

    async def read_forever(self) -> None:
        """Receive and decode until the connection ends. Receiving runs in a task of its
        own, so every frame that arrived together (a burst at the open, or whatever came
        in while the last batch was decoded) is decoded together: consecutive FEED_DATA
        frames are merged into one ``on_feed`` call, which pays the decoder's fixed cost
        (~120 µs a call) once instead of once per frame. At most ``MAX_PENDING_FRAMES``
        wait here; past that the reader stops reading and the backlog stays on the socket,
        where ``sources/backlog.py`` sees it."""
        pending: list[str | bytes] = []
        arrived = asyncio.Event()
        room = asyncio.Event()
        room.set()

        async def receive() -> None:
            async for frame in self.ws:
                pending.append(frame)
                arrived.set()
                if len(pending) >= MAX_PENDING_FRAMES:
                    room.clear()
                    await room.wait()
            raise TransportError(self.closing or _closed_text(self.ws), source="tastytrade")

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(receive(), name="dxlink-receive")
                while True:
                    await arrived.wait()
                    arrived.clear()
                    frames = pending[:]
                    pending.clear()
                    room.set()
                    await self._dispatch_all(frames)
        except BaseExceptionGroup as failed:
            raise first_cause(failed) from None

    async def _dispatch_all(self, frames: list[str | bytes]) -> None:
        """Frames in order; consecutive FEED_DATA of whole events on one channel become one
        call. A malformed message, or one the decoder must see alone to quarantine it with
        its own raw text, ends the run and is handled on its own."""
        run: list[tuple[dict[str, Any], str | bytes]] = []
        for frame in frames:
            message = _parse(frame)
            if isinstance(message, str):
                await self._feed_run(run)
                run = []
                self._mark_alive()
                await self._ctx.reject(frame, message)
                continue
            joins = message["type"] == "FEED_DATA" and self._whole(message.get("data"))
            if joins and (not run or run[-1][0].get("channel") == message.get("channel")):
                run.append((message, frame))
                continue
            await self._feed_run(run)
            run = []
            if joins:
                run.append((message, frame))
            else:
                await self._handle(message, frame)
        await self._feed_run(run)

    async def _feed_run(self, run: list[tuple[dict[str, Any], str | bytes]]) -> None:
        if not run:
            return
        self._mark_alive()
        if len(run) == 1:
            await self._on_feed(*run[0])
            return
        data: list[Any] = []
        for message, _ in run:
            _extend(data, message["data"])
        merged = {**run[0][0], "data": data}
        raw = b"\n".join(f if isinstance(f, bytes) else f.encode() for _, f in run)
        await self._on_feed(merged, raw)

    async def _until(self, done: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(ACTION_TIMEOUT_S):
                while not done():
                    await self._dispatch(await self.ws.recv())
        except TimeoutError:
            raise TransportError(
                f"DXLink sent no {what} within {ACTION_TIMEOUT_S:g} s", source="tastytrade"
            ) from None

    async def _dispatch(self, frame: str | bytes) -> None:
        parsed = _parse(frame)
        if isinstance(parsed, str):
            self._mark_alive()
            await self._ctx.reject(frame, parsed)
        else:
            await self._handle(parsed, frame)

    def _mark_alive(self) -> None:
        self.last_received = self._clock.monotonic()
        self._ctx.alive()

    async def _handle(self, message: dict[str, Any], frame: str | bytes) -> None:
        self._mark_alive()
        kind = message["type"]
        if kind == "FEED_DATA":
            await self._on_feed(message, frame)
        elif kind == "KEEPALIVE":
            self._ctx.info(dxlink_last_keepalive_received_ns=self._clock.now_ns())
        elif kind == "FEED_CONFIG":
            self._on_config(message)
        elif kind == "SETUP":
            self._setup(message)
        elif kind == "AUTH_STATE":
            state = str(message.get("state", ""))
            self.auth_states.append(state)
            self._ctx.info(dxlink_auth=state)
            if state == "UNAUTHORIZED" and "AUTHORIZED" in self.auth_states[:-1]:
                raise AuthRefused("DXLink withdrew authorization (quote token expired?)")
        elif kind == "CHANNEL_OPENED":
            self.channel_open = True
            self._ctx.info(dxlink_channel=message.get("channel"), dxlink_state="channel open")
        elif kind == "CHANNEL_CLOSED":
            raise TransportError(f"DXLink closed channel {message.get('channel')}")
        elif kind == "ERROR":
            self._error(message)
        else:
            self._ctx.count("unknown_message")
            log.info("DXLink message of unknown type %r ignored", kind[:40])

    def _setup(self, message: dict[str, Any]) -> None:
        self.server_setup = True
        self.server_timeouts = [
            float(value)
            for key in ("keepaliveTimeout", "acceptKeepaliveTimeout")
            if isinstance(value := message.get(key), int | float) and value > 0
        ]
        self._ctx.info(
            dxlink_server_version=str(message.get("version", "")),
            dxlink_keepalive_interval_s=round(self.keepalive_interval, 3),
        )

    def _error(self, message: dict[str, Any]) -> None:
        error = {
            "error": str(message.get("error", "UNKNOWN")),
            "message": str(message.get("message", ""))[:500],
            "at_ns": self._clock.now_ns(),
        }
        log.warning("DXLink ERROR %s: %s", error["error"], error["message"])
        self._ctx.count("server_errors")
        self.errors = [*self.errors, error][-MAX_ERRORS_SHOWN:]
        self._ctx.info(dxlink_errors=self.errors)


def _parse(frame: str | bytes) -> dict[str, Any] | str:
    """The frame as a message, or the reason it is not one."""
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        return f"DXLink frame is not JSON: {exc}"
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "DXLink frame is not an object with a type"
    return message


def _extend(data: list[Any], more: list[Any]) -> None:
    """Append one COMPACT message's data; a run of the type just before is joined to it
    (``["Quote", [...]]`` + ``["Quote", [...]]`` is one run of quotes)."""
    for i in range(0, len(more), 2):
        kind, values = more[i], more[i + 1]
        if len(data) >= 2 and data[-2] == kind:
            data[-1] = data[-1] + values
        else:
            data += [kind, values]


def _closed_text(ws: ClientConnection) -> str:
    received = ws.close_code
    reason = ws.close_reason or ""
    if received == 1009:
        return "DXLink closed the connection: subscription message too long (1009)"
    return f"DXLink closed the connection ({received} {reason})".strip()
