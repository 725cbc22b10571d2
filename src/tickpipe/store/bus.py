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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque

import orjson
import polars as pl
import pyarrow as pa
import redis.asyncio as aioredis

from tickpipe.columnar import Grouped
from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.store import keys
from tickpipe.store.hot_redis import RedisOutage

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
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        self._subs.discard(sub)

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
