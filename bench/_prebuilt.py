"""Pre-built live-sized deliveries: the pipeline's cost per frame, with no producer cost.

All events are made up front as one quote batch (5 symbols round-robin, each a small
random walk, seq rising per symbol, ts_event in the last minute so no timestamp rule
fires) and cut into zero-copy slices of ``size`` events: the source only calls
``ctx.emit`` on each. The same source into an intake that does nothing is the baseline:
what emitting alone costs in this process.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.events import SCHEMAS, Kind
from tickpipe.pipeline import Pipeline
from tickpipe.sources.base import Delivery, SourceContext, SourcePolicy, SourceState
from tickpipe.sources.context import LiveContext

SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT")


def quotes(n: int, seed: int = 1) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    k = len(SYMBOLS)
    symbol = np.array(SYMBOLS, dtype=object)[np.arange(n) % k]
    base = np.array([600.0, 500.0, 220.0, 230.0, 420.0])[np.arange(n) % k]
    walk = np.cumsum(rng.normal(0, 0.0002, n))  # shared walk, ~2 bp a step
    mid = np.round(base * (1 + walk), 2)
    now = SystemClock().now_ns()
    ts = now - 50 * NS_PER_SECOND + np.arange(n, dtype=np.int64) * (40 * NS_PER_SECOND // max(n, 1))
    return pa.RecordBatch.from_pydict(
        {
            "ts_event": ts,
            "ts_recv": ts + 1_000_000,
            "symbol": symbol.tolist(),
            "bid": mid - 0.01,
            "bid_size": np.full(n, 3.0),
            "ask": mid + 0.01,
            "ask_size": np.full(n, 4.0),
            "source": ["bench"] * n,
            "seq": (np.arange(n) // k + 1).astype(np.int64),
        },
        schema=SCHEMAS[Kind.QUOTE],
    )


def deliveries(total: int, size: int) -> list[dict[Kind, pa.RecordBatch]]:
    batch = quotes(total)
    return [{Kind.QUOTE: batch.slice(i, size)} for i in range(0, total - size + 1, size)]


class PrebuiltSource:
    """Emits its deliveries as fast as ``ctx.emit`` returns."""

    name = "bench"
    policy = SourcePolicy(idle_timeout_s=None)

    def __init__(self, items: list[dict[Kind, pa.RecordBatch]]) -> None:
        self.items = items
        self.started = 0.0
        self.finished = 0.0

    async def run(self, ctx: SourceContext) -> None:
        self.started = time.perf_counter()
        for item in self.items:
            await ctx.emit(item)
        self.finished = time.perf_counter()


class NoIntake:
    """An intake that takes everything and does nothing: the baseline."""

    def try_put(self, delivery: Delivery) -> bool:
        return True

    async def put(self, delivery: Delivery) -> None:
        return None


async def emit_alone(items: list[dict[Kind, pa.RecordBatch]]) -> float:
    """Events/s of the source into a no-op intake, through the same context."""
    source = PrebuiltSource(items)
    ctx = LiveContext(source.name, SourceState(source.name), SystemClock(), NoIntake())
    await source.run(ctx)
    events = sum(b.num_rows for d in items for b in d.values())
    return events / (source.finished - source.started)


async def through_pipeline(
    data: Path, items: list[dict[Kind, pa.RecordBatch]], redis_url: str | None, **extra: Any
) -> dict[str, float]:
    """Events/s from the first emit until the last event is accepted (fsync'd)."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data,
        redis_url=redis_url,
        **extra,
    )
    source = PrebuiltSource(items)
    pipeline = Pipeline(settings, sources=[source])
    events = sum(b.num_rows for d in items for b in d.values())
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    while sum(pipeline.hub.accepted.values()) + pipeline.hub.quarantined < events:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - source.started
    await pipeline.hub.fanned_out()
    visible_s = time.perf_counter() - source.started
    accepted = sum(pipeline.hub.accepted.values())
    intake = pipeline.intake
    dropped = {s.name: s.dropped for s in pipeline.hub.sinks if s.dropped}
    stop.set()
    await task
    return {
        "events_per_s": events / elapsed,
        "fanned_out_per_s": events / visible_s,
        "sink_drops": dropped,  # type: ignore[dict-item]
        "accepted": accepted,
        "quarantined": pipeline.hub.quarantined,
        "ticks": intake.ticks,
        "deliveries_per_tick": intake.deliveries / max(intake.ticks, 1),
        "journal_appends": pipeline.hub.journal_appends,
        "emit_s": source.finished - source.started,
        "elapsed_s": elapsed,
    }
