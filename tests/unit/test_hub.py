"""The hub: durable first, then best-effort sinks that can fail or stall without harm."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tickpipe.clock import FakeClock
from tickpipe.columnar import Grouped
from tickpipe.config import Settings
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.hub import SINK_DELIVERIES, Hub, Sink
from tickpipe.quality.stage import QualityStage
from tickpipe.store.bus import Bus
from tickpipe.store.hot_memory import MemoryHotStore
from tickpipe.store.journal import Journal


def delivery(stage: QualityStage, seq: int, now: int) -> object:
    trade = Trade(now, now, "SPY", 100.0, 1, "feed", seq)
    return stage.process("feed", {Kind.TRADE: to_batch(Kind.TRADE, [trade])})


async def test_a_failing_listener_is_counted_and_the_others_still_get_every_event(
    settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal", clock, segment_seconds=60, segment_bytes=1 << 30)
    hot = MemoryHotStore(settings.hot_capacities())
    hub = Hub(journal, hot, Bus(settings))
    seen: list[int] = []

    async def broken(kind: Kind, grouped: Grouped) -> None:
        raise ValueError("listener bug")

    async def stalled(kind: Kind, grouped: Grouped) -> None:
        await asyncio.Event().wait()

    async def healthy(kind: Kind, grouped: Grouped) -> None:
        seen.extend(grouped.batch.column("seq").to_pylist())

    hub.add_listener("broken", broken)
    hub.add_listener("stalled", stalled)
    hub.add_listener("healthy", healthy)
    stage = QualityStage(settings, clock)
    worker = asyncio.create_task(hub.run())
    for seq in range(1, 6001):
        await hub.submit(delivery(stage, seq, clock.now_ns()))  # type: ignore[arg-type]
    await asyncio.wait_for(hub._queue.join(), 10)
    await asyncio.wait_for(
        asyncio.gather(*(s.join() for s in hub.sinks if s.name != "stalled")), 10
    )
    assert seen == list(range(1, 6001))
    assert journal.rows_written == 6000 and hub.accepted["trade"] == 6000
    sinks = {s.name: s.stats().model_dump() for s in hub.sinks}
    assert sinks["broken"]["errors"] == 6000 and sinks["broken"]["last_error"] == (
        "ValueError: listener bug"
    )
    stalled_sink = sinks["stalled"]
    assert stalled_sink["queued"] <= SINK_DELIVERIES
    # every delivery is queued, dropped, or was taken: the one it hangs on now, and one per
    # SINK_TIMEOUT_S it gave up on (a slow machine makes this test outlast one)
    taken = 1 + stalled_sink["errors"]
    assert stalled_sink["dropped"] + stalled_sink["queued"] + taken == 6000
    assert (await hot.latest(Kind.TRADE, "SPY", 1)).column("seq").to_pylist() == [6000]
    await hub.close()
    await asyncio.wait_for(worker, 30)


async def test_a_sink_whose_library_swallows_the_cancel_still_stops(
    settings: Settings, clock: FakeClock
) -> None:
    """redis-py on Python 3.11 loses about one cancel in ten (asyncio.wait_for returns
    instead of raising): a sink drain in such a call must still end when the hub stops
    it, or the pipeline's shutdown waits for it forever."""
    entered = asyncio.Event()

    async def swallows(kind: Kind, grouped: Grouped) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # what the library's wait_for race does to its caller

    sink = Sink("swallows", swallows)
    drain = asyncio.create_task(sink.drain())
    result = delivery(QualityStage(settings, clock), 1, clock.now_ns())
    kind, grouped = next(iter(result.accepted.items()))  # type: ignore[attr-defined]
    sink.offer(kind, grouped)
    await asyncio.wait_for(entered.wait(), 10)
    drain.cancel()
    done, _ = await asyncio.wait([drain], timeout=5)
    assert done, "the drain went on after its cancel was swallowed"
