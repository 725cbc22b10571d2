"""Ingest throughput: simulator -> quality -> hub -> journal (fsync) -> lake, end to end.

Prints events/s for the whole chain (until the last event is in Parquet), the simulator
alone as the baseline in the same process (the ratio says what the pipeline costs), and
the lake's bytes per event by kind. Runs in memory mode, then in Redis mode when
redis-server is installed.

    python bench/ingest.py [--events 5000000] [--batch 65536]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import redis_server

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.pipeline import Pipeline
from tickpipe.sources.simulator import Simulator
from tickpipe.store import layout


def bench_settings(data: Path, events: int, batch: int, redis_url: str | None) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data,
        redis_url=redis_url,
        simulator_seed=1,
        simulator_realtime=False,
        simulator_rate=1_000_000,
        simulator_batch_size=batch,
        simulator_max_events=events,
        simulator_start_ns=SystemClock().now_ns() - 3600 * NS_PER_SECOND,
        journal_segment_seconds=0.5,
    )


def baseline(settings: Settings) -> float:
    sim = Simulator(settings, SystemClock())
    n = settings.simulator_batch_size
    started = time.perf_counter()
    while sim.emitted < settings.simulator_max_events:
        sim.step(n, int(n / settings.simulator_rate * NS_PER_SECOND))
    return sim.emitted / (time.perf_counter() - started)


async def run_pipeline(settings: Settings) -> tuple[float, int]:
    pipeline = Pipeline(settings)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(pipeline.run(stop))
    await pipeline.sources_done.wait()
    stop.set()
    await task  # the final flush: every accepted event is in Parquet when this returns
    elapsed = time.perf_counter() - started
    return pipeline.supervisor.states["simulator"].events / elapsed, sum(
        pipeline.hub.accepted.values()
    )


def lake_report(data: Path) -> str:
    lines = []
    for kind in ("trade", "quote", "book", "option"):
        files = layout.lake_files(data / "lake", kind)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        size = sum(f.stat().st_size for f in files)
        if rows:
            lines.append(
                f"    {kind:<7} {rows:>9,} rows  {size / rows:5.2f} bytes/event  ({len(files)} files)"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--batch", type=int, default=65_536)
    args = parser.parse_args()
    with redis_server() as url:
        for mode, redis_url in (("memory", None), ("redis", url)):
            if mode == "redis" and redis_url is None:
                print("redis: skipped (redis-server not installed)")
                continue
            data = Path(tempfile.mkdtemp(prefix=f"tickpipe-bench-{mode}-"))
            settings = bench_settings(data, args.events, args.batch, redis_url)
            base = baseline(settings)
            rate, accepted = asyncio.run(run_pipeline(settings))
            print(
                f"{mode}: {rate:,.0f} events/s end to end ({accepted:,} accepted of {args.events:,}); "
                f"simulator alone {base:,.0f} events/s; pipeline/baseline = {rate / base:.2f}"
            )
            print(lake_report(data))


if __name__ == "__main__":
    main()
