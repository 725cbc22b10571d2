"""A Redis that stops answering must not stop the durable path: the lake keeps filling."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlparse

from tickpipe.config import Settings
from tickpipe.pipeline import Pipeline

from ..netfakes.proxy import BlackHoleProxy


async def wait_until(predicate: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_a_black_holed_redis_costs_the_hot_path_not_the_lake(
    tmp_path: Path, redis_url: str
) -> None:
    target = urlparse(redis_url)
    # one budget for the whole test, well inside pytest's: a wait that never ends fails here
    # with the traceback of where it waited
    async with (
        asyncio.timeout(150),
        BlackHoleProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy,
    ):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=tmp_path / "data",
            redis_url=f"redis://127.0.0.1:{proxy.port}/15",
            simulator_seed=3,
            simulator_rate=3000,
            simulator_batch_ms=20,
            journal_segment_seconds=0.5,
        )
        pipeline = Pipeline(settings)
        stop = asyncio.Event()
        run = asyncio.create_task(pipeline.run(stop))
        try:
            await wait_until(lambda: pipeline.status()["sinks"]["hot_store"]["delivered"] > 5, 20)
            proxy.blackholed = True
            accepted = pipeline.status()["accepted_total"]
            flushed = pipeline.lake.rows_written
            await wait_until(
                lambda: (
                    pipeline.status()["sinks"]["hot_store"]["errors"] > 0
                    and pipeline.status()["sinks"]["bus"]["errors"] > 0
                ),
                30,
            )
            await wait_until(
                lambda: (
                    pipeline.status()["accepted_total"] > accepted + 10_000
                    and pipeline.lake.rows_written > flushed + 10_000
                ),
                30,
            )
            status = pipeline.status()
            assert not status["sinks"]["hot_store"]["healthy"]
            assert "Timeout" in status["sinks"]["hot_store"]["last_error"]
            simulator = next(s for s in status["sources"] if s["name"] == "simulator")
            assert simulator["status"] == "running"
            proxy.blackholed = False
            errors = status["sinks"]["hot_store"]["errors"]
            await wait_until(lambda: pipeline.status()["sinks"]["hot_store"]["healthy"], 30)
            assert pipeline.status()["sinks"]["hot_store"]["errors"] >= errors
        finally:
            stop.set()
            await asyncio.wait_for(run, 40)
