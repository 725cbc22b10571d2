"""An API worker's mirror of the Redis hot store (real redis-server): its answer is what
Redis holds after every change Redis can make (appends, a trim past the mirror, a delete,
a flush, a lost connection), its version moves when Redis says a stream changed, and a
read that finds nothing changed sends Redis nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pyarrow as pa
import pytest
import redis.asyncio as aioredis

from tickpipe.columnar import group_by_symbol
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.store import keys
from tickpipe.store.hot import serialize
from tickpipe.store.hot_mirror import MirroredHotStore
from tickpipe.store.hot_redis import RedisHotStore

pytestmark = pytest.mark.redis
CAPACITY = 20


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def writer(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[RedisHotStore]:
    """The ingest process's side: another client writing the same streams."""
    store = RedisHotStore(aioredis.Redis.from_url(redis_url), CAPACITY)
    yield store
    await store.close()


@pytest.fixture
async def mirror(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[MirroredHotStore]:
    store = RedisHotStore(aioredis.Redis.from_url(redis_url), CAPACITY)
    hot = MirroredHotStore(store, redis_url, dict.fromkeys(Kind, CAPACITY))
    tracking = asyncio.create_task(hot.track())
    await hot.live.wait()
    yield hot
    tracking.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await tracking
    await hot.close()


def trades(first: int, n: int, symbol: str = "SPY") -> pa.RecordBatch:
    return to_batch(
        Kind.TRADE, [Trade(s, s, symbol, 100 + s / 100, 1, "t", s) for s in range(first, first + n)]
    )


async def write(store: RedisHotStore, first: int, n: int, symbol: str = "SPY") -> None:
    await store.write(Kind.TRADE, group_by_symbol(trades(first, n, symbol)))


def seqs(table: pa.Table) -> list[int]:
    return list(table.column("seq").to_pylist())


async def stream_reads(redis: aioredis.Redis) -> int:
    """XRANGE and XREVRANGE calls Redis has served so far."""
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("xrange", "xrevrange"))


async def test_a_read_that_finds_nothing_changed_sends_redis_nothing(
    mirror: MirroredHotStore, writer: RedisHotStore, redis: aioredis.Redis
) -> None:
    for first in (1, 4, 7):
        await write(writer, first, 3)
    version = mirror.version(Kind.TRADE, "SPY")
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 5)) == [5, 6, 7, 8, 9]
    before = await stream_reads(redis)
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 4)) == [6, 7, 8, 9]
    assert mirror.version(Kind.TRADE, "SPY") == version
    assert await stream_reads(redis) == before


async def test_a_write_elsewhere_moves_the_version_and_is_in_the_next_read(
    mirror: MirroredHotStore, writer: RedisHotStore, redis: aioredis.Redis
) -> None:
    await write(writer, 1, 3)
    first = mirror.version(Kind.TRADE, "SPY")
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 10)) == [1, 2, 3]
    before = await stream_reads(redis)
    await write(writer, 4, 2)
    await mirror.sync()  # the invalidation Redis sent for that XADD has been applied
    assert mirror.version(Kind.TRADE, "SPY") not in (None, first)
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 10)) == [1, 2, 3, 4, 5]
    assert await stream_reads(redis) == before + 1  # only the new entry was read


async def test_every_answer_is_what_redis_holds_as_the_stream_grows_past_capacity(
    mirror: MirroredHotStore, writer: RedisHotStore
) -> None:
    """MAXLEN ~ trims whole nodes of entries: whatever Redis keeps, the mirror answers the
    same, for limits within what it keeps and beyond (read from Redis)."""
    seq = 1
    for round_ in range(30):
        for _ in range(round_ % 4 + 1):
            await write(writer, seq, round_ % 3 + 1)
            seq += round_ % 3 + 1
        await mirror.sync()
        for limit in (1, 7, 40, 10_000):
            expected = seqs(await writer.latest(Kind.TRADE, "SPY", limit))
            assert seqs(await mirror.latest(Kind.TRADE, "SPY", limit)) == expected, (round_, limit)


async def test_a_stream_trimmed_past_the_mirror_is_read_again(
    mirror: MirroredHotStore, writer: RedisHotStore
) -> None:
    await write(writer, 1, 1)
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 3)) == [1]
    for seq in range(2, 400):  # one entry each: Redis trims the first ones
        await write(writer, seq, 1)
    await mirror.sync()
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 3)) == [397, 398, 399]
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 10_000)) == seqs(
        await writer.latest(Kind.TRADE, "SPY", 10_000)
    )


async def test_a_deleted_and_rewritten_stream_is_not_mixed_with_the_old_one(
    mirror: MirroredHotStore, writer: RedisHotStore, redis: aioredis.Redis
) -> None:
    await write(writer, 1, 3)
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 10)) == [1, 2, 3]
    await redis.delete(keys.stream_key(Kind.TRADE, "SPY"))
    await write(writer, 1001, 2)
    await mirror.sync()
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 10)) == [1001, 1002]


async def test_a_stream_written_again_under_the_same_entry_id_is_read_again(
    mirror: MirroredHotStore, redis: aioredis.Redis
) -> None:
    """Deleted and written again within one millisecond, a stream's first entry gets the
    id the old last one had: the mirror must not take it for the entry it holds."""
    key = keys.stream_key(Kind.TRADE, "SPY")
    await redis.xadd(key, {"n": 3, "arrow": serialize(trades(1, 3))}, id="5-0")
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 10)) == [1, 2, 3]
    await redis.delete(key)
    await redis.xadd(key, {"n": 2, "arrow": serialize(trades(1001, 2))}, id="5-0")
    await mirror.sync()
    assert seqs(await mirror.latest(Kind.TRADE, "SPY", 10)) == [1001, 1002]


async def test_a_flush_empties_every_mirrored_stream(
    mirror: MirroredHotStore, writer: RedisHotStore, redis: aioredis.Redis
) -> None:
    await write(writer, 1, 3)
    await write(writer, 1, 2, "QQQ")
    versions = [mirror.version(Kind.TRADE, s) for s in ("SPY", "QQQ")]
    assert (await mirror.latest(Kind.TRADE, "QQQ", 10)).num_rows == 2
    assert (await mirror.latest(Kind.TRADE, "SPY", 10)).num_rows == 3
    await redis.flushdb()
    await mirror.sync()
    for symbol, before in zip(("SPY", "QQQ"), versions, strict=True):
        assert mirror.version(Kind.TRADE, symbol) not in (None, before)
        assert (await mirror.latest(Kind.TRADE, symbol, 10)).num_rows == 0


async def test_a_lost_tracking_connection_stops_caching_until_it_is_back(
    redis_url: str, writer: RedisHotStore, redis: aioredis.Redis
) -> None:
    hot = MirroredHotStore(
        RedisHotStore(aioredis.Redis.from_url(redis_url), CAPACITY),
        redis_url,
        dict.fromkeys(Kind, CAPACITY),
    )
    tracking = asyncio.create_task(hot.track())
    await hot.live.wait()
    await write(writer, 1, 3)
    before = hot.version(Kind.TRADE, "SPY")
    assert seqs(await hot.latest(Kind.TRADE, "SPY", 10)) == [1, 2, 3]
    name = f"tickpipe-api-{os.getpid()}"
    killed = [c["id"] for c in await redis.client_list() if c.get("name") == name]
    assert len(killed) == 1
    await redis.execute_command("CLIENT", "KILL", "ID", killed[0])
    with pytest.raises(ConnectionError):
        await tracking
    assert hot.version(Kind.TRADE, "SPY") is None  # no invalidations can come: no caching
    await write(writer, 4, 1)
    assert seqs(await hot.latest(Kind.TRADE, "SPY", 10)) == [1, 2, 3, 4]  # through the pool
    tracking = asyncio.create_task(hot.track())
    await hot.live.wait()
    assert hot.version(Kind.TRADE, "SPY") not in (None, before)
    assert seqs(await hot.latest(Kind.TRADE, "SPY", 10)) == [1, 2, 3, 4]
    tracking.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tracking
    await hot.close()


async def test_tracking_is_no_pubsub_subscription(
    mirror: MirroredHotStore, writer: RedisHotStore, redis: aioredis.Redis
) -> None:
    await write(writer, 1, 1)
    await mirror.latest(Kind.TRADE, "SPY", 1)
    mine = [c for c in await redis.client_list() if c.get("name") == f"tickpipe-api-{os.getpid()}"]
    assert len(mine) == 1
    assert "t" in mine[0]["flags"] and mine[0]["sub"] == "0" and mine[0]["psub"] == "0"
