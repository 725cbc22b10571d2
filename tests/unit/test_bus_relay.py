"""The relay of an API worker (real redis-server): no local reader, no subscription; a
channel is subscribed while a reader wants one of its kinds; only messages holding a
wanted event are decoded; every field of every kind arrives as it was published."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pyarrow as pa
import pytest
import redis.asyncio as aioredis

from tickpipe.clock import FakeClock
from tickpipe.columnar import group_by_symbol
from tickpipe.config import Settings
from tickpipe.events import GexLevels, Kind, OptionQuote, Trade, to_batch
from tickpipe.sources.simulator import Simulator
from tickpipe.store.bus import Bus, RedisRelay, Subscription, _orjson_chunks, _polars_chunks

pytestmark = pytest.mark.redis
CHANNELS = ("ticks", "level2", "options", "gex")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def worker(
    settings: Settings, redis_url: str, redis: aioredis.Redis
) -> AsyncIterator[tuple[Bus, RedisRelay]]:
    """A worker's bus and its relay, running."""
    client = aioredis.Redis.from_url(redis_url, client_name="relay-under-test")
    bus = Bus(settings)
    relay = RedisRelay(settings, client, bus)
    task = asyncio.create_task(relay.run())
    yield bus, relay
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 5) -> None:
    """Poll Redis until ``check`` holds: the server's own state offers nothing to await."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def numsub(redis: aioredis.Redis) -> dict[str, int]:
    pairs = await redis.pubsub_numsub(*CHANNELS)
    return {name.decode(): count for name, count in pairs}


async def subscribed_clients(redis: aioredis.Redis) -> list[dict[str, str]]:
    return [c for c in await redis.client_list() if c["sub"] != "0" or c["psub"] != "0"]


async def publish(
    redis: aioredis.Redis, settings: Settings, kind: Kind, batch: pa.RecordBatch
) -> None:
    """What the ingest process's bus does with a delivery."""
    await Bus(settings, redis).publish(kind, group_by_symbol(batch))


async def received(sub: Subscription) -> pa.RecordBatch:
    _, batch = await asyncio.wait_for(sub.get(), 5)
    return batch


def trades(symbol: str, first: int, n: int) -> pa.RecordBatch:
    return to_batch(
        Kind.TRADE,
        [
            Trade(s, s + 1, symbol, 600 + s / 100, 2.5, "t", s, "Q", None, "B", 3)
            for s in range(first, first + n)
        ],
    )


async def test_no_reader_no_subscription_and_the_last_reader_unsubscribes(
    worker: tuple[Bus, RedisRelay], redis: aioredis.Redis
) -> None:
    bus, _ = worker
    assert await numsub(redis) == dict.fromkeys(CHANNELS, 0)
    assert await subscribed_clients(redis) == []
    spy = bus.subscribe(frozenset({Kind.TRADE}), frozenset({"SPY"}))
    qqq = bus.subscribe(frozenset({Kind.QUOTE}), frozenset({"QQQ"}))
    await eventually(lambda: _has(redis, {"ticks": 1, "level2": 0, "options": 0, "gex": 0}))
    assert len(await subscribed_clients(redis)) == 1  # one pub/sub connection per worker
    book = bus.subscribe(frozenset({Kind.BOOK}), frozenset({"/ES"}))
    await eventually(lambda: _has(redis, {"ticks": 1, "level2": 1, "options": 0, "gex": 0}))
    bus.unsubscribe(spy)
    bus.unsubscribe(book)
    await eventually(lambda: _has(redis, {"ticks": 1, "level2": 0, "options": 0, "gex": 0}))
    bus.unsubscribe(qqq)
    await eventually(lambda: _has(redis, dict.fromkeys(CHANNELS, 0)))
    await eventually(lambda: _no_subscribers(redis))


async def _has(redis: aioredis.Redis, expected: dict[str, int]) -> bool:
    return await numsub(redis) == expected


async def _no_subscribers(redis: aioredis.Redis) -> bool:
    return await subscribed_clients(redis) == []


async def test_only_messages_with_a_wanted_event_are_decoded(
    worker: tuple[Bus, RedisRelay], redis: aioredis.Redis, settings: Settings
) -> None:
    bus, relay = worker
    spy = bus.subscribe(frozenset({Kind.TRADE}), frozenset({"SPY"}))
    await eventually(lambda: _has(redis, {"ticks": 1, "level2": 0, "options": 0, "gex": 0}))
    await publish(redis, settings, Kind.TRADE, trades("QQQ", 1, 3))  # no wanted symbol
    quotes = Simulator(settings, FakeClock(start_ns=1_795_000_000 * 10**9)).step(400, 10**9)
    await publish(redis, settings, Kind.QUOTE, quotes[Kind.QUOTE])  # no wanted type
    await publish(
        redis, settings, Kind.TRADE, pa.concat_batches([trades("QQQ", 4, 2), trades("SPY", 1, 2)])
    )
    batch = await received(spy)
    assert batch.column("symbol").to_pylist() == ["SPY", "SPY"]
    assert relay.decoded == 1
    assert spy.depth == 0


async def test_every_kind_arrives_as_published(
    worker: tuple[Bus, RedisRelay], redis: aioredis.Redis, settings: Settings
) -> None:
    """Prices, sizes, nulls, option expiries (dates) and GEX ladders (lists), through both
    encoders of the publishing side (orjson for small ticks, polars for large)."""
    bus, _ = worker
    sim = Simulator(settings, FakeClock(start_ns=1_795_000_000 * 10**9)).step(3000, 10**9)
    sent: dict[Kind, pa.RecordBatch] = {k: b for k, b in sim.items() if k is not Kind.OPTION}
    sent[Kind.TRADE] = trades("SPY", 1, 5)
    sent[Kind.OPTION] = to_batch(
        Kind.OPTION,
        [
            OptionQuote(
                5,
                6,
                "SPY   261218C00600000",
                "SPY",
                dt.date(2026, 12, 18),
                600.0,
                "C",
                1.25,
                1.3,
                1.27,
                10.0,
                1200.0,
                0.18,
                0.52,
                0.011,
                "t",
                1,
            ),
        ],
    )
    sent[Kind.GEX] = to_batch(
        Kind.GEX,
        [
            GexLevels(
                7,
                8,
                "SPY",
                601.5,
                598.0,
                610.0,
                None,
                -1.5e9,
                [590.0, 600.0, 610.0],
                [-2.5e8, 1.0e8, 3.25e8],
                "gex",
                4,
                "full",
                None,
                None,
                None,
                None,
                1.5e7,
                -2e6,
            ),
        ],
    )
    subs = {
        kind: bus.subscribe(frozenset({kind}), frozenset(batch.column("symbol").to_pylist()), 4096)
        for kind, batch in sent.items()
    }
    await eventually(lambda: _has(redis, dict.fromkeys(CHANNELS, 1)))
    for kind, batch in sent.items():
        await publish(redis, settings, kind, batch)
        rows: list[dict[str, object]] = []
        while len(rows) < batch.num_rows:
            rows += (await received(subs[kind])).to_pylist()
        expected = group_by_symbol(batch).batch.to_pylist()
        assert sorted(rows, key=_key) == sorted(expected, key=_key), kind


def _key(row: dict[str, object]) -> tuple[str, int]:
    return (str(row["symbol"]), int(row["seq"]))  # type: ignore[call-overload]


@pytest.mark.parametrize("encoder", [_orjson_chunks, _polars_chunks])
async def test_the_prefilter_finds_every_wanted_event_whichever_encoder_wrote_it(
    settings: Settings, encoder: Callable[[Kind, pa.RecordBatch, int], list[bytes]]
) -> None:
    """The relay skips a message unread unless its bytes name a wanted type and symbol, so
    both encoders must write them exactly as the relay looks for them."""
    bus = Bus(settings)
    relay = RedisRelay(settings, aioredis.Redis(), bus)  # never connects: fed by hand
    sim = Simulator(settings, FakeClock(start_ns=1_795_000_000 * 10**9)).step(3000, 10**9)
    for kind, batch in sim.items():
        symbols = sorted(set(batch.column("symbol").to_pylist()))
        sub = bus.subscribe(frozenset({kind}), frozenset(symbols[::2]), 1_000_000)
        want = sum(1 for s in batch.column("symbol").to_pylist() if s in set(symbols[::2]))
        for message in encoder(kind, batch, 500):
            await relay.relay(
                settings.tick_channel.encode()
                if kind in (Kind.TRADE, Kind.QUOTE)
                else _channel(settings, kind),
                message,
            )
        got = 0
        while sub.depth:
            got += (await sub.get())[1].num_rows
        assert got == want, kind
        bus.unsubscribe(sub)


def _channel(settings: Settings, kind: Kind) -> bytes:
    return {Kind.BOOK: settings.level2_channel, Kind.OPTION: settings.option_channel}[kind].encode()
