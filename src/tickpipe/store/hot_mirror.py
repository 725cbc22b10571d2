"""An API worker's copy of the hot streams it serves, kept current by Redis itself.

``--role api`` workers read what another process writes to Redis. Reading the streams on
every request cost round trips and an Arrow decode per entry (about a hundred requests/s
for two workers, measured by ``bench/role_api.py``); instead each
worker mirrors the (kind, symbol) streams its clients ask for, reading them through a
``TrackingConnection``: Redis pushes an invalidation when a stream it read changes
(appended, trimmed, deleted, evicted, flushed), the mirror's version moves at once, and the
next request reads only the entries added since (one XRANGE), or the stream again if it
is not the one the mirror holds any more. Versions are what ``MemoryHotStore`` gives the
real-time route: its answers are cached per version, so a request that finds nothing
changed costs no Redis call at all.

Contract (the same as ``RedisHotStore.latest``): ``latest(kind, symbol, limit)`` returns
exactly the newest ``limit`` events the stream holds, or fresher, and no answer is staler
than Redis by more than an invalidation push takes to arrive (the bus's delay); a version
read after such a push differs from every version given before it. While the tracking
connection is down (Redis restarting, or no answer to the heartbeat within
``REDIS_TIMEOUT_S``), ``version`` is None, so nothing is cached, and reads go to Redis
through the worker's pool (``503 hot_store_unavailable`` while it is unreachable).

The mirror keeps, per stream, the newest entries holding the largest ``limit`` asked, and
never more entries than the stream's capacity (``MAXLEN ~`` keeps at least that many), so
every entry it holds is one Redis holds too; a deeper ``limit`` than it holds is read from
Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import deque
from collections.abc import Sequence

import pyarrow as pa
from redis.exceptions import RedisError

from tickpipe.columnar import Grouped
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store import keys
from tickpipe.store.hot import deserialize
from tickpipe.store.hot_redis import RedisHotStore
from tickpipe.store.redis_conn import REDIS_TIMEOUT_S
from tickpipe.store.redis_tracking import TrackingConnection

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
"""a silent tracking connection is PINGed this often: a black-holed Redis is noticed
within ``HEARTBEAT_S + REDIS_TIMEOUT_S``"""
MAX_STREAMS = 4096
"""mirrors kept per worker; past this (clients naming ever new symbols) all are dropped
and read again on demand"""
NEW_ENTRIES_PAGE = 64
"""entries read after an invalidation; a longer tail is read as a fresh stream"""


class _Stream:
    """One mirrored stream: its newest entries (id, batch), oldest first."""

    __slots__ = (
        "complete",
        "dirty",
        "entries",
        "keep",
        "last_payload",
        "lock",
        "most",
        "rows",
        "schema",
        "version",
    )

    def __init__(self, version: int, schema: pa.Schema, most: int) -> None:
        self.entries: deque[tuple[bytes, pa.RecordBatch]] = deque()
        self.rows = 0
        self.version = version
        self.schema = schema
        self.most = most
        """entries Redis keeps for sure (``MAXLEN ~ capacity``): the mirror never holds more"""
        self.dirty = True
        """Redis may hold entries this mirror lacks (never read, or invalidated since)"""
        self.complete = False
        """the mirror holds every entry of the stream"""
        self.keep = 0
        """events kept: the largest limit asked"""
        self.last_payload = b""
        """the newest entry's Arrow bytes: a stream deleted and written again within the
        same millisecond can reuse its id, never (unless identical) its content"""
        self.lock = asyncio.Lock()

    @property
    def last_id(self) -> bytes | None:
        return self.entries[-1][0] if self.entries else None

    def take(self, limit: int) -> pa.Table | None:
        """The newest ``limit`` events, or None if this mirror cannot tell them."""
        if self.rows < limit and not self.complete:
            return None
        return _newest(self.entries, limit, self.schema)

    def replace(
        self, entries: list[tuple[bytes, pa.RecordBatch]], last_payload: bytes, complete: bool
    ) -> None:
        """The stream as just read whole (or its newest part: ``complete`` False)."""
        self.entries = deque(entries)
        self.rows = sum(batch.num_rows for _, batch in entries)
        self.last_payload = last_payload
        self.complete = complete
        self.trim()

    def add(self, raw: list[tuple[bytes, list[bytes]]]) -> None:
        """Entries as Redis returns them (id, [field, value, ...]), oldest first."""
        if not raw:
            return
        decoded = [(entry_id, _batch(fields, self.schema)) for entry_id, fields in raw]
        self.entries.extend(decoded)
        self.rows += sum(batch.num_rows for _, batch in decoded)
        self.last_payload = _payload(raw[-1][1])
        self.trim()

    def trim(self) -> None:
        """Keep the newest entries holding ``keep`` events, never more than ``most``."""
        entries = self.entries
        while entries and (
            len(entries) > self.most or self.rows - entries[0][1].num_rows >= self.keep
        ):
            self.rows -= entries.popleft()[1].num_rows
            self.complete = False


class MirroredHotStore:
    """``HotStore`` for ``--role api``: reads mirrored through tracking, the rest (latest
    quotes, symbols) from ``store``. Run ``track()`` for the store's lifetime."""

    name = "redis"

    def __init__(self, store: RedisHotStore, url: str, capacity: dict[str, int]) -> None:
        self._store = store
        self._url = url
        self._capacity = capacity
        self._conn: TrackingConnection | None = None
        self._streams: dict[tuple[Kind, str], _Stream] = {}
        self._by_key: dict[bytes, tuple[Kind, str]] = {}
        self._versions = itertools.count(1)
        self.invalidations = 0
        self.live = asyncio.Event()
        """set while the tracking connection is up (reads mirrored, answers cacheable)"""

    async def track(self) -> None:
        """Hold the tracking connection, PINGing it when quiet; raises ``ConnectionError``
        when it ends (the caller starts it again); until then reads go through the pool."""
        conn = await TrackingConnection.open(
            self._url, self._invalidated, f"tickpipe-api-{os.getpid()}", REDIS_TIMEOUT_S
        )
        self._conn = conn
        self.live.set()
        log.info("hot store: reading Redis through a tracking connection (mirrored)")
        try:
            while True:
                try:
                    async with asyncio.timeout(HEARTBEAT_S):  # not wait_for: it can eat a cancel
                        await conn.wait_closed()
                except TimeoutError:
                    await conn.call("PING", timeout_s=REDIS_TIMEOUT_S)
                else:
                    raise ConnectionError("Redis closed the tracking connection")
        finally:
            self.live.clear()
            self._conn = None
            self._forget()
            conn.close()

    async def sync(self) -> None:
        """Return once every change Redis made before this call has reached the mirror: the
        PING's reply comes behind the invalidations Redis queued before it."""
        conn = self._conn
        if conn is not None and not conn.closed:
            await conn.call("PING", timeout_s=REDIS_TIMEOUT_S)

    def version(self, kind: Kind, symbol: str) -> int | None:
        conn = self._conn
        if conn is None or conn.closed:  # no invalidations come: nothing may be cached
            return None
        return self._stream(kind, symbol).version

    async def latest(self, kind: Kind, symbol: str, limit: int) -> pa.Table:
        conn = self._conn
        if conn is None or limit <= 0:
            return await self._store.latest(kind, symbol, limit)
        stream = self._stream(kind, symbol)
        try:
            async with stream.lock:
                return await self._read(conn, kind, symbol, stream, limit)
        except (ConnectionError, TimeoutError, RedisError) as exc:
            log.debug("tracked read of %s %s failed (%s); read through the pool", kind, symbol, exc)
            return await self._store.latest(kind, symbol, limit)

    async def write(self, kind: Kind, grouped: Grouped) -> None:
        """Write through to Redis (workers never write; tests do), visible to the next read."""
        await self._store.write(kind, grouped)
        await self.sync()

    async def latest_quotes(self, symbols: list[str]) -> pa.Table:
        return await self._store.latest_quotes(symbols)

    async def symbols(self, kind: Kind) -> list[str]:
        return await self._store.symbols(kind)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        await self._store.close()

    def _stream(self, kind: Kind, symbol: str) -> _Stream:
        stream = self._streams.get((kind, symbol))
        if stream is None:
            if len(self._streams) >= MAX_STREAMS:
                self._forget()
            stream = _Stream(next(self._versions), SCHEMAS[kind], self._capacity[kind])
            self._streams[(kind, symbol)] = stream
            self._by_key[keys.stream_key(kind, symbol).encode()] = (kind, symbol)
        return stream

    def _invalidated(self, changed: list[bytes] | None) -> None:
        """Redis's push: these keys changed (None: any key may have). Runs as the bytes
        arrive, before any request that could read the mirror afterwards."""
        self.invalidations += 1
        if changed is None:
            self._forget()
            return
        for key in changed:
            name = self._by_key.get(key)
            stream = self._streams.get(name) if name is not None else None
            if stream is not None:
                stream.dirty = True
                stream.version = next(self._versions)

    def _forget(self) -> None:
        """Drop every mirror; the versions they gave are never given again."""
        self._streams.clear()
        self._by_key.clear()

    async def _read(
        self, conn: TrackingConnection, kind: Kind, symbol: str, stream: _Stream, limit: int
    ) -> pa.Table:
        stream.keep = max(stream.keep, limit)
        key = keys.stream_key(kind, symbol)
        current = not stream.dirty
        if stream.dirty and stream.last_id is not None:
            current = await self._read_new(conn, key, stream)
        if current:
            table = stream.take(limit)
            if table is not None:
                return table
        return await self._read_whole(conn, key, stream, limit)

    async def _read_new(self, conn: TrackingConnection, key: str, stream: _Stream) -> bool:
        """Add the entries since the mirror's last one, if that one is still there: False
        when it is not (the stream was trimmed past it, or deleted and written again)."""
        last = stream.last_id
        assert last is not None
        stream.dirty = False  # an invalidation arriving during the read sets it again
        entries = await conn.call(
            "XRANGE", key, last, "+", "COUNT", NEW_ENTRIES_PAGE, timeout_s=REDIS_TIMEOUT_S
        )
        if not entries or len(entries) == NEW_ENTRIES_PAGE:
            return False
        if entries[0][0] != last or _payload(entries[0][1]) != stream.last_payload:
            return False
        stream.add(entries[1:])
        return True

    async def _read_whole(
        self, conn: TrackingConnection, key: str, stream: _Stream, limit: int
    ) -> pa.Table:
        """The newest entries holding ``limit`` events (fewer if the stream is shorter),
        newest first in growing pages; the mirror keeps what it may of them."""
        stream.dirty = False
        taken: list[tuple[bytes, pa.RecordBatch]] = []
        newest = b""
        rows = 0
        high = "+"
        page = _first_page(stream, limit)
        complete = False
        while rows < limit:
            entries = await conn.call(
                "XREVRANGE", key, high, "-", "COUNT", page, timeout_s=REDIS_TIMEOUT_S
            )
            if entries and not taken:
                newest = _payload(entries[0][1])
            decoded = [(entry_id, _batch(fields, stream.schema)) for entry_id, fields in entries]
            taken += decoded
            rows += sum(batch.num_rows for _, batch in decoded)
            if len(entries) < page:
                complete = True
                break
            high = "(" + entries[-1][0].decode()
            page *= 4
        taken.reverse()
        stream.replace(taken, newest, complete)
        return _newest(taken, limit, stream.schema)


def _first_page(stream: _Stream, limit: int) -> int:
    """Entries to ask for first: enough for ``limit`` at the stream's last seen density."""
    if stream.entries:
        per_entry = max(stream.rows // len(stream.entries), 1)
        return max(limit // per_entry + 2, 4)
    return 16


def _field(fields: list[bytes], name: bytes) -> bytes:
    """A field of a stream entry ([field, value, ...]) as written by ``RedisHotStore.write``."""
    return fields[fields.index(name) + 1]


def _payload(fields: list[bytes]) -> bytes:
    return _field(fields, b"arrow")


def _batch(fields: list[bytes], schema: pa.Schema) -> pa.RecordBatch:
    return deserialize(_payload(fields), schema)


def _newest(
    entries: Sequence[tuple[bytes, pa.RecordBatch]], limit: int, schema: pa.Schema
) -> pa.Table:
    taken: list[pa.RecordBatch] = []
    rows = 0
    for _, batch in reversed(entries):
        taken.append(batch)
        rows += batch.num_rows
        if rows >= limit:
            break
    taken.reverse()
    table = pa.Table.from_batches(taken, schema=schema)
    return table.slice(max(table.num_rows - limit, 0))
