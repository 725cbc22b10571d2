"""One contract, every HotStore: memory, Redis (a real redis-server) and an API worker's
mirror of Redis behave the same."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pyarrow as pa
import pytest
import redis.asyncio as aioredis

from tickpipe.columnar import group_by_symbol
from tickpipe.events import Kind, Quote, Trade, from_batch, to_batch
from tickpipe.store.hot import HotStore
from tickpipe.store.hot_memory import MemoryHotStore
from tickpipe.store.hot_mirror import MirroredHotStore
from tickpipe.store.hot_redis import RedisHotStore

CAPACITY = 50


@pytest.fixture(params=["memory", "redis", "mirror"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[HotStore]:
    if request.param == "memory":
        yield MemoryHotStore(CAPACITY)
        return
    url = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    hot = RedisHotStore(client, CAPACITY)
    if request.param == "redis":
        yield hot
        await hot.close()
        return
    mirror = MirroredHotStore(hot, url, dict.fromkeys(Kind, CAPACITY))
    tracking = asyncio.create_task(mirror.track())
    await mirror.live.wait()
    yield mirror
    tracking.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tracking
    await mirror.close()


def trades(symbol: str, first_seq: int, n: int) -> pa.RecordBatch:
    return to_batch(
        Kind.TRADE,
        [Trade(s, s, symbol, 100 + s / 100, 1, "t", s) for s in range(first_seq, first_seq + n)],
    )


async def write(store: HotStore, kind: Kind, batch: pa.RecordBatch) -> None:
    await store.write(kind, group_by_symbol(batch))


async def test_latest_returns_the_newest_events_oldest_first(store: HotStore) -> None:
    for start in range(1, 31, 10):
        await write(
            store,
            Kind.TRADE,
            pa.concat_batches([trades("SPY", start, 10), trades("QQQ", start, 10)]),
        )
    latest = await store.latest(Kind.TRADE, "SPY", 15)
    assert latest.column("seq").to_pylist() == list(range(16, 31))
    assert set(latest.column("symbol").to_pylist()) == {"SPY"}
    assert from_batch(Kind.TRADE, latest)[0] == Trade(16, 16, "SPY", 100.16, 1, "t", 16)


async def test_capacity_bounds_what_is_kept_but_never_below_it(store: HotStore) -> None:
    total = 1200
    for start in range(1, total + 1, 4):
        await write(store, Kind.TRADE, trades("SPY", start, 4))
    latest = await store.latest(Kind.TRADE, "SPY", 10_000)
    seqs = latest.column("seq").to_pylist()
    assert CAPACITY <= len(seqs) < total / 2
    assert seqs == list(range(total + 1 - len(seqs), total + 1))


async def test_unknown_symbol_or_zero_limit_is_empty(store: HotStore) -> None:
    assert (await store.latest(Kind.TRADE, "NOPE", 10)).num_rows == 0
    await write(store, Kind.TRADE, trades("SPY", 1, 3))
    assert (await store.latest(Kind.TRADE, "SPY", 0)).num_rows == 0


async def test_latest_quote_per_symbol(store: HotStore) -> None:
    quotes = [
        Quote(i, i, sym, 10 + i, 1, 11 + i, 1, "t", i)
        for i in range(1, 5)
        for sym in ("SPY", "QQQ")
    ]
    await write(store, Kind.QUOTE, to_batch(Kind.QUOTE, quotes))
    latest = from_batch(Kind.QUOTE, await store.latest_quotes(["QQQ", "SPY", "NOPE"]))
    assert [(q.symbol, q.seq, q.bid) for q in latest] == [("QQQ", 4, 14), ("SPY", 4, 14)]


async def test_symbols_are_listed_per_kind(store: HotStore) -> None:
    await write(store, Kind.TRADE, pa.concat_batches([trades("SPY", 1, 2), trades("/ES", 1, 2)]))
    assert await store.symbols(Kind.TRADE) == ["/ES", "SPY"]
    assert await store.symbols(Kind.QUOTE) == []
