"""The hub: durable first, then best-effort sinks that can fail or stall without harm."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tickpipe.clock import FakeClock
from tickpipe.columnar import Grouped
from tickpipe.config import Settings
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.hub import SINK_DELIVERIES, Hub
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
