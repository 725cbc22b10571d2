"""Running the demo again on the same data continues the stream instead of repeating it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.pipeline import Pipeline


async def run_once(settings: Settings) -> Pipeline:
    pipeline = Pipeline(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await asyncio.wait_for(pipeline.sources_done.wait(), 60)
    await pipeline.hub.drained()
    stop.set()
    await asyncio.wait_for(task, 60)
    return pipeline


def finite_run(tmp_path: Path, events: int, bad_share: float) -> Settings:
    """A simulator run of ``events`` as fast as possible, ten minutes in the past."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        simulator_realtime=False,
        simulator_rate=20_000,
        simulator_batch_size=2_000,
        simulator_max_events=events,
        simulator_bad_share=bad_share,
        simulator_start_ns=SystemClock().now_ns() - 600 * NS_PER_SECOND,
    )


async def test_a_second_run_is_not_a_flood_of_duplicates(tmp_path: Path) -> None:
    settings = finite_run(tmp_path, 20_000, bad_share=0)
    first = await run_once(settings)
    assert sum(first.quality.rejected.values()) == 0
    again = await run_once(settings.model_copy(update={"simulator_seed": 99}))
    assert sum(again.hub.accepted.values()) >= 19_000
    assert dict(again.quality.rejected) == {}


async def test_a_second_ingest_process_on_the_same_data_refuses(tmp_path: Path) -> None:
    import pytest

    from tickpipe.errors import ConfigError

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", simulator="false")  # type: ignore[call-arg]
    first = Pipeline(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await first.ready.wait()
    with pytest.raises(ConfigError, match="in use by tickpipe process"):
        await Pipeline(settings).recover()
    stop.set()
    await task
    third, done = Pipeline(settings), asyncio.Event()
    done.set()
    await third.run(done)  # starts: the first released the lock on its way out
    assert third.ready.is_set()


async def test_the_catalog_file_has_views_over_the_lake(tmp_path: Path) -> None:
    import duckdb

    settings = finite_run(tmp_path, 10_000, bad_share=0.01)
    pipeline = await run_once(settings)
    con = duckdb.connect(str(settings.catalog_path), read_only=True)
    try:
        (trades,) = con.sql("SELECT count(*), min(time) IS NOT NULL FROM trade").fetchall()
        assert trades == (pipeline.hub.accepted["trade"], True)
        rules = dict(con.sql("SELECT rule, count(*) FROM quarantine GROUP BY rule").fetchall())
        assert sum(rules.values()) == pipeline.hub.quarantined > 0
        ((rollup_rows,),) = con.sql("SELECT count(*) FROM bars_1s").fetchall()
        assert rollup_rows > 0
    finally:
        con.close()
