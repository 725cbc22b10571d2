"""During a Redis outage the GEX engine, which writes its results every 250 ms, says so once
and then at most every 30 s with the count (issue 20, finding 3: it logged every 250 ms),
and says once when Redis takes its writes again."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tickpipe.clock import FakeClock
from tickpipe.config import Settings
from tickpipe.gex.engine import Cached, GexEngine
from tickpipe.gex.exposure import BASES, CATEGORIES


class FlakyRedis:
    """Enough of redis.asyncio for the engine's writes: a pipeline that fails while down."""

    def __init__(self) -> None:
        self.down = True
        self.writes = 0

    def pipeline(self, transaction: bool = True) -> FlakyRedis:
        return self

    def set(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def execute(self) -> None:
        if self.down:
            raise aioredis.ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        self.writes += 1


async def test_a_redis_outage_is_logged_once_per_30_s_with_its_count(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    redis = FlakyRedis()
    engine = GexEngine(settings, clock, redis=redis)  # type: ignore[arg-type]
    for cat in CATEGORIES:
        for basis in BASES:
            engine.cache[("SPY", cat, basis)] = Cached(1, b"{}", 0, 0)
    with caplog.at_level(logging.INFO, logger="tickpipe.gex.engine"):
        for _ in range(4 * 60):  # one minute of writes every 250 ms, all failing
            await engine._publish("SPY")
            clock.advance(0.25)
        redis.down = False
        await engine._publish("SPY")
        await engine._publish("SPY")
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "GEX cache to Redis failed 1 time(s) (Error 111 connecting to 127.0.0.1:6379); "
        "said at most every 30 s",
        "GEX cache to Redis failed 120 time(s) (Error 111 connecting to 127.0.0.1:6379); "
        "said at most every 30 s",
        "GEX cache to Redis works again after 240 failures",
    ]
    assert redis.writes == 2
