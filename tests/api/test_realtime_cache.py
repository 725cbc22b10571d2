"""Real-time answers are cached per hot-store version: a repeated request gets the same
answer, and a new event is in the very next answer after the hot store took it, in
``--role all`` (memory hot store) and in a ``--role api`` worker (its mirror of Redis,
written by another client, as by the ingest process)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pyarrow as pa
import pytest
import redis.asyncio as aioredis

from tickpipe.api.app import create_app
from tickpipe.api.readonly import api_context
from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.columnar import group_by_symbol
from tickpipe.config import Settings
from tickpipe.events import Kind, Quote, Trade, to_batch
from tickpipe.store.hot_mirror import MirroredHotStore
from tickpipe.store.hot_redis import RedisHotStore

from .conftest import Api

QUERY = "/api/v1/ticks/realtime?symbols=SPY,QQQ&limit=3"
T0 = SystemClock().now_ns() - 10 * NS_PER_SECOND  # recent: the quality stage takes them


def trades(symbol: str, first: int, n: int) -> pa.RecordBatch:
    return to_batch(
        Kind.TRADE,
        [Trade(T0 + s, T0 + s, symbol, 600 + s / 100, 1, "t", s) for s in range(first, first + n)],
    )


def quote(symbol: str, seq: int) -> pa.RecordBatch:
    return to_batch(Kind.QUOTE, [Quote(T0 + seq, T0 + seq, symbol, 599.5, 3, 600.5, 4, "t", seq)])


def events(body: bytes) -> list[tuple[str, str, int]]:
    return [(e["type"], e["symbol"], e["seq"]) for e in orjson.loads(body)["data"]]


async def test_role_all_answers_change_with_the_hot_store(api: Api) -> None:
    await api.feed({Kind.TRADE: trades("SPY", 1, 4), Kind.QUOTE: quote("QQQ", 1)})
    first = await api.client.get(QUERY, headers=api.auth())
    assert events(first.content) == [
        ("trade", "SPY", 2),
        ("trade", "SPY", 3),
        ("trade", "SPY", 4),
        ("quote", "QQQ", 1),
    ]
    again = await api.client.get(QUERY, headers=api.auth())
    assert orjson.loads(again.content)["data"] == orjson.loads(first.content)["data"]
    await api.feed({Kind.TRADE: trades("SPY", 5, 1)})
    after = await api.client.get(QUERY, headers=api.auth())
    assert events(after.content)[:3] == [
        ("trade", "SPY", 3),
        ("trade", "SPY", 4),
        ("trade", "SPY", 5),
    ]
    await api.feed({Kind.QUOTE: quote("QQQ", 2)})
    last = await api.client.get(QUERY, headers=api.auth())
    assert events(last.content)[-2:] == [("quote", "QQQ", 1), ("quote", "QQQ", 2)]


@pytest.fixture
async def worker(
    settings: Settings, redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, MirroredHotStore, str]]:
    """A ``--role api`` worker's app with its background jobs (tracking, relay, status)."""
    flusher = aioredis.Redis.from_url(redis_url)
    await flusher.flushdb()
    await flusher.aclose()
    settings = settings.model_copy(update={"redis_url": redis_url})
    ctx = api_context(settings)
    hot = ctx.query.hot
    assert isinstance(hot, MirroredHotStore)
    jobs = [asyncio.create_task(job()) for job in ctx.background]
    await asyncio.wait_for(hot.live.wait(), 5)
    token, _ = ctx.keys.create("reader", ["read"], 1000)
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, hot, token
    for job in jobs:
        job.cancel()
    for job in jobs:
        with contextlib.suppress(asyncio.CancelledError):
            await job
    await hot.close()


@pytest.fixture
async def ingest(redis_url: str) -> AsyncIterator[RedisHotStore]:
    """The ingest process's side: another client writing the hot store."""
    store = RedisHotStore(aioredis.Redis.from_url(redis_url), 1000)
    yield store
    await store.close()


async def test_role_api_answers_change_with_what_the_ingest_writes_to_redis(
    worker: tuple[httpx.AsyncClient, MirroredHotStore, str], ingest: RedisHotStore
) -> None:
    client, hot, token = worker
    headers = {"Authorization": f"Bearer {token}"}

    async def ingested(kind: Kind, batch: pa.RecordBatch) -> None:
        await ingest.write(kind, group_by_symbol(batch))
        await hot.sync()  # Redis's invalidation for that write has reached the worker

    await ingested(Kind.TRADE, trades("SPY", 1, 4))
    await ingested(Kind.QUOTE, quote("QQQ", 1))
    first = await client.get(QUERY, headers=headers)
    assert events(first.content) == [
        ("trade", "SPY", 2),
        ("trade", "SPY", 3),
        ("trade", "SPY", 4),
        ("quote", "QQQ", 1),
    ]
    again = await client.get(QUERY, headers=headers)
    assert orjson.loads(again.content)["data"] == orjson.loads(first.content)["data"]
    await ingested(Kind.TRADE, trades("SPY", 5, 1))
    after = await client.get(QUERY, headers=headers)
    assert events(after.content)[:3] == [
        ("trade", "SPY", 3),
        ("trade", "SPY", 4),
        ("trade", "SPY", 5),
    ]
    await ingested(Kind.QUOTE, quote("QQQ", 2))
    last = await client.get(QUERY, headers=headers)
    assert events(last.content)[-2:] == [("quote", "QQQ", 1), ("quote", "QQQ", 2)]
    await ingest._redis.flushdb()
    await hot.sync()
    assert orjson.loads((await client.get(QUERY, headers=headers)).content)["data"] == []


async def test_concurrent_requests_after_a_change_read_each_part_once(
    worker: tuple[httpx.AsyncClient, MirroredHotStore, str], ingest: RedisHotStore
) -> None:
    """Requests that arrive while the first one waits for Redis share its read and its
    encoding instead of each doing both again."""
    client, hot, token = worker
    headers = {"Authorization": f"Bearer {token}"}
    await ingest.write(Kind.TRADE, group_by_symbol(trades("SPY", 1, 3)))
    await ingest.write(Kind.QUOTE, group_by_symbol(quote("QQQ", 1)))
    await hot.sync()
    reads: list[tuple[Kind, str, int]] = []
    read = hot.latest

    async def counted(kind: Kind, symbol: str, limit: int) -> pa.Table:
        reads.append((kind, symbol, limit))
        return await read(kind, symbol, limit)

    hot.latest = counted  # type: ignore[method-assign]
    answers = await asyncio.gather(*(client.get(QUERY, headers=headers) for _ in range(20)))
    assert {events(a.content)[-1] for a in answers} == {("quote", "QQQ", 1)}
    assert sorted(reads) == sorted(
        (k, s, 3) for k in (Kind.TRADE, Kind.QUOTE) for s in ("SPY", "QQQ")
    )
