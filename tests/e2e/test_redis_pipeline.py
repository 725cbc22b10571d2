"""With TICKPIPE_REDIS_URL set, hot streams and pub/sub carry what the pipeline accepts."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.pipeline import Pipeline
from tickpipe.store import keys


async def test_streams_hash_and_channels_fill_from_the_simulator(
    tmp_path: Path, redis_url: str
) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        redis_url=redis_url,  # type: ignore[call-arg]
        simulator_seed=5,
        simulator_rate=5000,
        simulator_batch_ms=20,
    )
    # every call of the test's own client ends too, so a failure is an error, never a hang
    listener = aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    await listener.flushdb()
    pubsub = listener.pubsub()
    await pubsub.subscribe(settings.tick_channel)
    await pubsub.get_message(timeout=1)
    pipeline = Pipeline(settings)
    quotes = pipeline.bus.subscribe(kinds=frozenset({Kind.QUOTE}))
    stop = asyncio.Event()
    run = asyncio.create_task(pipeline.run(stop))
    try:
        async with asyncio.timeout(20):
            message = None
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            await quotes.get()
        events = orjson.loads(message["data"])
        assert events and {e["type"] for e in events} <= {"trade", "quote"}
        assert pipeline.hot.name == "redis"
        assert await listener.xlen(keys.stream_key(Kind.QUOTE, "SPY")) > 0
        assert await listener.hexists(keys.latest_quote_key(), "SPY")
        latest = await pipeline.hot.latest(Kind.TRADE, "SPY", 5)
        assert 0 < latest.num_rows <= 5
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        await listener.aclose()
