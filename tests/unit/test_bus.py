"""The bus: in-process readers get what they asked for; a slow one loses its oldest items,
counted; with Redis every event is published as JSON on its kind's channel."""

from __future__ import annotations

import asyncio

import orjson
import pyarrow as pa
import redis.asyncio as aioredis

from tickpipe.clock import FakeClock
from tickpipe.columnar import group_by_symbol
from tickpipe.config import Settings
from tickpipe.events import BookUpdate, Kind, Trade, to_batch
from tickpipe.store.bus import Bus


def trades(n: int, symbol: str = "SPY", seq0: int = 1) -> pa.RecordBatch:
    return to_batch(
        Kind.TRADE, [Trade(i, i, symbol, 1.0 + i, 1, "t", i) for i in range(seq0, seq0 + n)]
    )


async def test_subscribers_get_only_their_kinds_and_symbols(settings: Settings) -> None:
    bus = Bus(settings)
    spy = bus.subscribe(kinds=frozenset({Kind.TRADE}), symbols=frozenset({"SPY"}))
    quotes = bus.subscribe(kinds=frozenset({Kind.QUOTE}))
    await bus.publish(Kind.TRADE, group_by_symbol(pa.concat_batches([trades(3), trades(2, "QQQ")])))
    kind, batch = await asyncio.wait_for(spy.get(), 1)
    assert kind is Kind.TRADE and batch.column("symbol").to_pylist() == ["SPY"] * 3
    assert quotes.depth == 0


async def test_a_slow_reader_drops_oldest_and_counts_it(settings: Settings) -> None:
    bus = Bus(settings)
    slow = bus.subscribe(maxsize=2)
    for i in range(5):
        await bus.publish(Kind.TRADE, group_by_symbol(trades(10, seq0=i * 10 + 1)))
    assert slow.dropped == 30 and slow.depth == 2
    _, batch = await slow.get()
    assert batch.column("seq")[0].as_py() == 31


async def test_redis_channels_carry_json_events(settings: Settings, redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    listener = aioredis.Redis.from_url(redis_url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(settings.tick_channel, settings.level2_channel)
    for _ in range(2):
        await pubsub.get_message(timeout=1)  # subscribe confirmations
    small = settings.model_copy(update={"bus_chunk_events": 2})
    bus = Bus(small, client)
    await bus.publish(Kind.TRADE, group_by_symbol(trades(3)))
    book = to_batch(Kind.BOOK, [BookUpdate(5, 6, "/ES", "B", 0, 6000.25, 7, "t", 1, 3)])
    await bus.publish(Kind.BOOK, group_by_symbol(book))
    messages = []
    while len(messages) < 3:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        if msg is not None:
            messages.append((msg["channel"].decode(), orjson.loads(msg["data"])))
    assert [(ch, len(events)) for ch, events in messages] == [
        ("ticks", 2),
        ("ticks", 1),
        ("level2", 1),
    ]
    assert messages[0][1][0] == {
        "ts_event": 1,
        "ts_recv": 1,
        "symbol": "SPY",
        "price": 2.0,
        "size": 1.0,
        "source": "t",
        "seq": 1,
        "exchange": None,
        "conditions": None,
        "aggressor": None,
        "flags": None,
        "type": "trade",
    }
    assert messages[2][1][0]["side"] == "B" and messages[2][1][0]["type"] == "book"
    await pubsub.aclose()
    await listener.aclose()
    await client.aclose()


def test_small_and_large_ticks_encode_every_kind_to_the_same_json(settings: Settings) -> None:
    """A tick is encoded by orjson when small and by polars when large: a subscriber must
    not be able to tell which (dates, nulls, floats and strings alike)."""
    from tickpipe.sources.simulator import Simulator
    from tickpipe.store.bus import _orjson_chunks, _polars_chunks

    sim = Simulator(settings, FakeClock(start_ns=1_795_000_000 * 10**9))
    batches = sim.step(3000, 10**9)
    assert {Kind.TRADE, Kind.QUOTE, Kind.BOOK, Kind.OPTION} <= set(batches)
    for kind, batch in batches.items():
        small = [orjson.loads(m) for m in _orjson_chunks(kind, batch, 500)]
        large = [orjson.loads(m) for m in _polars_chunks(kind, batch, 500)]
        assert small == large, kind
        assert sum(len(m) for m in small) == batch.num_rows
