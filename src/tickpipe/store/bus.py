"""The trading bus: every accepted event, to in-process subscribers and Redis pub/sub.

In-process subscribers each own a bounded queue; when one falls behind, its oldest items
are dropped and counted (a slow reader never slows the pipeline). With Redis, each
delivery is also published on the kind's channel (see ``keys.channel_for``) as JSON
arrays of at most ``bus_chunk_events`` events, each event carrying its ``type``.

``published`` counts events that reached every place they were meant for (Redis when it is
configured, else the in-process subscribers); a Redis failure is counted in
``publish_failures`` and logged at most once per ``LOG_EVERY_S``, never per delivery.
Per-symbol slices are cut once per delivery and shared by every subscriber, so readers
that encode them (the WebSocket route) can encode each slice once for all.

``RedisRelay`` is the other direction, for ``--role api`` workers, which publish nothing:
it subscribes to a kind's channel only while a local reader wants that kind, and decodes
only the messages that hold an event a reader wants.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
from collections import deque
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from tickpipe.columnar import Grouped, group_by_symbol
from tickpipe.config import Settings
from tickpipe.errors import first_cause
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store import keys
from tickpipe.store.hot_redis import RedisOutage
from tickpipe.store.redis_conn import raise_if_cancelled

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Subscription:
    """A bounded, drop-oldest queue of (kind, batch) for one reader."""

    kinds: frozenset[Kind]
    symbols: frozenset[str] | None
    maxsize: int
    dropped: int = 0
    closed: bool = False
    _items: deque[tuple[Kind, pa.RecordBatch]] = dataclasses.field(default_factory=deque)
    _ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def offer(self, kind: Kind, batch: pa.RecordBatch) -> None:
        if len(self._items) >= self.maxsize:
            _, old = self._items.popleft()
            self.dropped += old.num_rows
        self._items.append((kind, batch))
        self._ready.set()

    async def get(self) -> tuple[Kind, pa.RecordBatch]:
        while not self._items:
            if self.closed:
                raise asyncio.CancelledError("subscription closed")
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    async def get_all(self) -> list[tuple[Kind, pa.RecordBatch]]:
        """Everything queued, waiting for at least one item (a reader that sends what has
        piled up in one message catches up instead of falling further behind)."""
        while not self._items:
            if self.closed:
                raise asyncio.CancelledError("subscription closed")
            self._ready.clear()
            await self._ready.wait()
        items = list(self._items)
        self._items.clear()
        return items

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    @property
    def depth(self) -> int:
        return len(self._items)


Wanted = dict[Kind, frozenset[str] | None]


SMALL_BATCH_ROWS = 2048
"""up to this many events orjson encodes a tick faster than polars (whose fixed cost per
call is ~0.7 ms: 30 µs against 800 µs for one event, measured); past it both cost
~1.7 µs an event and polars keeps the GIL less"""


def to_json_chunks(kind: Kind, batch: pa.RecordBatch, chunk: int) -> list[bytes]:
    """JSON arrays of at most ``chunk`` events, each with a ``type`` field."""
    if batch.num_rows <= SMALL_BATCH_ROWS:
        return _orjson_chunks(kind, batch, chunk)
    return _polars_chunks(kind, batch, chunk)


def _orjson_chunks(kind: Kind, batch: pa.RecordBatch, chunk: int) -> list[bytes]:
    rows = batch.to_pylist()
    for row in rows:
        row["type"] = kind.value
    return [orjson.dumps(rows[i : i + chunk]) for i in range(0, len(rows), chunk)]


def _polars_chunks(kind: Kind, batch: pa.RecordBatch, chunk: int) -> list[bytes]:
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    lines = frame.with_columns(type=pl.lit(kind.value)).write_ndjson().encode().splitlines()
    return [b"[" + b",".join(lines[i : i + chunk]) + b"]" for i in range(0, len(lines), chunk)]


class Bus:
    def __init__(self, settings: Settings, redis: aioredis.Redis | None = None) -> None:
        self._settings = settings
        self._redis = redis
        self._subs: set[Subscription] = set()
        self._wanted: Wanted = {}
        self.wanted_changed = asyncio.Event()
        """set whenever what the subscribers want changes (see ``wanted``)"""
        self.published = 0
        """events delivered: to Redis pub/sub when configured, else to in-process readers"""
        self.outage = RedisOutage("bus")

    @property
    def name(self) -> str:
        return "redis" if self._redis is not None else "memory"

    def subscribe(
        self,
        kinds: frozenset[Kind] | None = None,
        symbols: frozenset[str] | None = None,
        maxsize: int = 1024,
    ) -> Subscription:
        sub = Subscription(kinds or frozenset(Kind), symbols, maxsize)
        self._subs.add(sub)
        self._want()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        self._subs.discard(sub)
        self._want()

    @property
    def wanted(self) -> Wanted:
        """Per kind some subscriber wants: the symbols they want (None: every symbol)."""
        return self._wanted

    def _want(self) -> None:
        wanted: dict[Kind, set[str] | None] = {}
        for sub in self._subs:
            for kind in sub.kinds:
                have = wanted.get(kind, set())
                if have is not None:
                    wanted[kind] = None if sub.symbols is None else have | sub.symbols
        fresh = {k: (None if v is None else frozenset(v)) for k, v in wanted.items()}
        if fresh != self._wanted:
            self._wanted = fresh
            self.wanted_changed.set()

    @property
    def subscribers(self) -> list[Subscription]:
        return list(self._subs)

    @property
    def publish_failures(self) -> int:
        return self.outage.failures

    async def publish(self, kind: Kind, grouped: Grouped) -> None:
        slices: list[tuple[str, pa.RecordBatch]] | None = None
        for sub in self._subs:
            if kind not in sub.kinds:
                continue
            if sub.symbols is None:
                sub.offer(kind, grouped.batch)
                continue
            if slices is None:
                slices = grouped.slices()  # once per delivery, shared by every reader
            for symbol, part in slices:
                if symbol in sub.symbols:
                    sub.offer(kind, part)
        if self._redis is not None:
            channel = keys.channel_for(kind, self._settings)
            pipe = self._redis.pipeline(transaction=False)
            for message in to_json_chunks(kind, grouped.batch, self._settings.bus_chunk_events):
                pipe.publish(channel, message)
            await self.outage.call(pipe.execute())  # raises HotStoreUnavailable, counted
        self.published += grouped.batch.num_rows


class RedisRelay:
    """Redis pub/sub to this process's ``Bus`` subscribers, only what they want.

    No reader, no subscription: the relay holds a pub/sub connection (from the client's
    pool) only while some local reader wants a kind, subscribes to a kind's channel when
    the first reader of it arrives and unsubscribes when the last one leaves. A message is
    decoded only if its raw JSON names a wanted type and, unless a reader wants every
    symbol, a wanted symbol (both encoders of ``to_json_chunks`` write ``"type":"trade"``
    and ``"symbol":"SPY"`` byte for byte as orjson does); only the wanted events become
    Arrow again.
    """

    def __init__(self, settings: Settings, client: aioredis.Redis, bus: Bus) -> None:
        self._client = client
        self._bus = bus
        self._channel_of = {kind: keys.channel_for(kind, settings) for kind in Kind}
        self._kinds_on: dict[bytes, list[Kind]] = {}
        for kind, channel in self._channel_of.items():
            self._kinds_on.setdefault(channel.encode(), []).append(kind)
        self._filter: tuple[Wanted, re.Pattern[bytes] | None] = ({}, None)
        self.decoded = 0
        """messages decoded (the others were skipped unread)"""

    async def run(self) -> None:
        """Relay for as long as the process runs; raises when Redis fails (the caller
        starts it again, and it subscribes to what is wanted then)."""
        while True:
            while not self._channels():
                self._bus.wanted_changed.clear()
                await self._bus.wanted_changed.wait()
            await self._relay_while_wanted()

    def _channels(self) -> frozenset[str]:
        return frozenset(self._channel_of[kind] for kind in self._bus.wanted)

    async def _relay_while_wanted(self) -> None:
        """One pub/sub connection, following what readers want, closed when none is left."""
        pubsub = self._client.pubsub()
        try:
            subscribed = await self._follow(pubsub, frozenset())
            async with asyncio.TaskGroup() as group:
                listener = group.create_task(self._listen(pubsub))
                while subscribed:
                    await self._bus.wanted_changed.wait()
                    subscribed = await self._follow(pubsub, subscribed)
                listener.cancel()
        except BaseExceptionGroup as failed:
            raise first_cause(failed) from None
        finally:
            await pubsub.aclose()

    async def _follow(self, pubsub: PubSub, subscribed: frozenset[str]) -> frozenset[str]:
        self._bus.wanted_changed.clear()
        wanted = self._channels()
        if wanted - subscribed:
            await pubsub.subscribe(*(wanted - subscribed))
        if subscribed - wanted:
            await pubsub.unsubscribe(*(subscribed - wanted))
        raise_if_cancelled()
        return wanted

    async def _listen(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            raise_if_cancelled()
            if message is not None and message.get("type") == "message":
                await self.relay(message["channel"], message["data"])

    async def relay(self, channel: bytes, data: bytes) -> None:
        """One pub/sub message to the readers that want some of its events."""
        wanted = self._bus.wanted
        kinds = [k for k in self._kinds_on.get(channel, ()) if k in wanted]
        if not any(b'"type":"%s"' % k.value.encode() in data for k in kinds):
            return
        symbols = self._symbol_filter(wanted)
        if symbols is not None and symbols.search(data) is None:
            return
        try:
            events = orjson.loads(data)
            self.decoded += 1
            for kind in kinds:
                rows = _wanted_rows(events, kind, wanted[kind])
                if rows:
                    await self._bus.publish(kind, group_by_symbol(from_json_rows(kind, rows)))
        except (ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            log.warning("unreadable bus message on %r skipped: %s: %.200r", channel, exc, data)

    def _symbol_filter(self, wanted: Wanted) -> re.Pattern[bytes] | None:
        """A pattern matching any wanted symbol as written in the JSON; None when some
        reader wants every symbol. Rebuilt when what is wanted changes."""
        if self._filter[0] is not wanted:
            names = set[str]()
            pattern: re.Pattern[bytes] | None = None
            if all(symbols is not None for symbols in wanted.values()):
                for symbols in wanted.values():
                    names |= symbols or set()
                needles = sorted(re.escape(b'"symbol":' + orjson.dumps(s)) for s in names)
                pattern = re.compile(b"|".join(needles))
            self._filter = (wanted, pattern)
        return self._filter[1]


def _wanted_rows(
    events: list[dict[str, Any]], kind: Kind, symbols: frozenset[str] | None
) -> list[dict[str, Any]]:
    value = kind.value
    if symbols is None:
        return [e for e in events if e["type"] == value]
    return [e for e in events if e["type"] == value and e["symbol"] in symbols]


def from_json_rows(kind: Kind, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Events as published (``to_json_chunks``) back to their Arrow schema; dates arrive
    as ISO strings, the ``type`` field is dropped."""
    schema = SCHEMAS[kind]
    dates = [f.name for f in schema if pa.types.is_date32(f.type)]
    for row in rows:
        for name in dates:
            if row[name] is not None:
                row[name] = dt.date.fromisoformat(row[name])
    return pa.RecordBatch.from_pylist(rows, schema=schema)
