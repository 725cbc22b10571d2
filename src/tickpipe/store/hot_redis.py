"""Redis hot store: a Stream per (kind, symbol) with ``MAXLEN ~``, and a latest-quote hash.

Each stream entry holds one symbol's slice of one delivery as an Arrow IPC message
(fields ``n`` and ``arrow``), so a 10 k-event delivery is a handful of XADDs in one
pipeline rather than 10 k commands. ``MAXLEN ~ capacity`` counts entries, and every entry
holds at least one event, so at least ``capacity`` recent events stay.

Redis down (refused, reset, or no answer within ``TIMEOUT_S``) raises
``HotStoreUnavailable``: the API answers 503 ``hot_store_unavailable`` with
``Retry-After``, the hub counts a failed sink delivery; the log says so at most once per
``LOG_EVERY_S``. redis-py reconnects on the next command, so service resumes by itself
as soon as Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar, cast

import pyarrow as pa
import redis.asyncio as aioredis

from tickpipe.columnar import Grouped
from tickpipe.errors import StorageError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store import keys
from tickpipe.store.hot import deserialize, serialize

log = logging.getLogger(__name__)

T = TypeVar("T")
TIMEOUT_S = 5.0
"""a Redis call that takes longer is treated as Redis being down (a backstop: the client's
own socket timeouts usually answer first)"""
LOG_EVERY_S = 30.0


class HotStoreUnavailable(StorageError):
    """Redis cannot be reached; the API turns this into 503 ``hot_store_unavailable``."""


class RedisOutage:
    """Turns Redis failures into ``HotStoreUnavailable`` and logs them at most once per
    ``LOG_EVERY_S`` (an outage at 10 k requests/s must not write 10 k lines a second)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0
        self.down_since: float | None = None
        self._last_log = -LOG_EVERY_S

    async def call(self, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                result = await operation
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            raise self.failed(exc) from exc
        if self.down_since is not None:
            log.warning(
                "%s: Redis answers again after %.1fs", self.what, time.time() - self.down_since
            )
            self.down_since = None
        return result

    def failed(self, exc: BaseException) -> HotStoreUnavailable:
        self.failures += 1
        text = (
            f"Timeout: no answer within {TIMEOUT_S:g}s"
            if isinstance(exc, TimeoutError)
            else str(exc) or type(exc).__name__
        )
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = time.time()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.warning(
                "%s: Redis unavailable (%d failures so far): %s", self.what, self.failures, text
            )
        return HotStoreUnavailable(text)


class RedisHotStore:
    name = "redis"

    def __init__(self, client: aioredis.Redis, capacity: int | dict[str, int]) -> None:
        self._redis = client
        self._capacity = capacity if isinstance(capacity, dict) else dict.fromkeys(Kind, capacity)
        self._known: set[tuple[Kind, str]] = set()
        self.outage = RedisOutage("hot store")

    async def write(self, kind: Kind, grouped: Grouped) -> None:
        pipe = self._redis.pipeline(transaction=False)
        quotes: dict[str, bytes] = {}
        new_symbols = []
        for symbol, part in grouped.slices():
            pipe.xadd(
                keys.stream_key(kind, symbol),
                {"n": part.num_rows, "arrow": serialize(part)},
                maxlen=self._capacity[kind],
                approximate=True,
            )
            if (kind, symbol) not in self._known:
                new_symbols.append(symbol)
            if kind is Kind.QUOTE:
                quotes[symbol] = serialize(part.slice(part.num_rows - 1, 1))
        if new_symbols:
            pipe.sadd(keys.stream_symbols_key(kind), *new_symbols)
        if quotes:
            pipe.hset(keys.latest_quote_key(), mapping=quotes)  # type: ignore[arg-type]
        await self.outage.call(pipe.execute())
        self._known.update((kind, s) for s in new_symbols)

    async def latest(self, kind: Kind, symbol: str, limit: int) -> pa.Table:
        schema = SCHEMAS[kind]
        if limit <= 0:
            return schema.empty_table()
        key = keys.stream_key(kind, symbol)
        taken: list[pa.RecordBatch] = []
        rows = 0
        cursor: bytes | str = "+"
        page = 16
        while rows < limit:
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                await self.outage.call(self._redis.xrevrange(key, max=cursor, min="-", count=page)),
            )
            if not entries:
                break
            for entry_id, fields in entries:
                if cursor != "+" and entry_id == cursor:
                    continue
                batch = deserialize(fields[b"arrow"], schema)
                taken.append(batch)
                rows += batch.num_rows
                if rows >= limit:
                    break
            if len(entries) < page:
                break
            cursor = entries[-1][0]
            page *= 4
        table = pa.Table.from_batches(list(reversed(taken)), schema=schema)
        return table.slice(max(table.num_rows - limit, 0))

    async def latest_quotes(self, symbols: list[str]) -> pa.Table:
        schema = SCHEMAS[Kind.QUOTE]
        if not symbols:
            return schema.empty_table()
        values = cast(
            list[bytes | None],
            await self.outage.call(self._redis.hmget(keys.latest_quote_key(), symbols)),
        )
        rows = [deserialize(v, schema) for v in values if v is not None]
        return pa.Table.from_batches(rows, schema=schema)

    async def symbols(self, kind: Kind) -> list[str]:
        members = cast(
            set[bytes],
            await self.outage.call(self._redis.smembers(keys.stream_symbols_key(kind))),
        )
        return sorted(m.decode() for m in members)

    def version(self, kind: Kind, symbol: str) -> int | None:
        return None  # another process writes: only a round trip could tell

    async def close(self) -> None:
        await self._redis.aclose()
