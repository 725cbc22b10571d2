"""The supervisor restarts failed sources with capped, jittered backoff and reports state."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pyarrow as pa
import pytest

from tickpipe.clock import FakeClock
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.sources.base import Batches, SourceStatus
from tickpipe.sources.supervisor import Supervisor


def one_trade(seq: int) -> Batches:
    return {Kind.TRADE: to_batch(Kind.TRADE, [Trade(seq, seq, "SPY", 1.0, 1, "f", seq)])}


class FlakySource:
    """Delivers ``per_attempt`` batches, then fails; ``attempts`` counts connections."""

    def __init__(self, name: str, failures: int, per_attempt: int = 1) -> None:
        self.name = name
        self.failures = failures
        self.per_attempt = per_attempt
        self.attempts = 0

    async def stream(self) -> AsyncIterator[Batches]:
        self.attempts += 1
        for i in range(self.per_attempt):
            yield one_trade(self.attempts * 100 + i)
        if self.attempts <= self.failures:
            raise ConnectionError(f"feed dropped (attempt {self.attempts})")


class HangingSource:
    name = "hang"

    def __init__(self) -> None:
        self.attempts = 0
        self.delivered: asyncio.Queue[int] = asyncio.Queue()
        self.release = asyncio.Event()

    async def stream(self) -> AsyncIterator[Batches]:
        self.attempts += 1
        yield one_trade(self.attempts)
        self.delivered.put_nowait(self.attempts)
        await self.release.wait()


def supervisor(sources: list[object], got: list[pa.RecordBatch], **kw: float) -> Supervisor:
    async def ingest(name: str, batches: Batches) -> None:
        got.extend(batches.values())

    opts = {"backoff_initial_s": 0.001, "backoff_max_s": 0.004, "idle_timeout_s": 5.0} | kw
    return Supervisor(sources, ingest, FakeClock(), rng=random.Random(1), **opts)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    sup = Supervisor(
        [],
        lambda n, b: asyncio.sleep(0),
        FakeClock(),
        backoff_initial_s=0.5,
        backoff_max_s=30,
        idle_timeout_s=1,
        rng=random.Random(3),
    )  # type: ignore[arg-type]
    delays = [sup.backoff_delay(n) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        base = min(30, 0.5 * 2 ** (n - 1))
        assert base * 0.5 <= d <= base
    assert len({round(d / min(30, 0.5 * 2 ** (n - 1)), 6) for n, d in enumerate(delays, 1)}) > 1


async def test_a_failing_source_is_restarted_and_finishes() -> None:
    got: list[pa.RecordBatch] = []
    flaky = FlakySource("flaky", failures=3)
    sup = supervisor([flaky], got)
    await asyncio.wait_for(sup.run(), 5)
    state = sup.states["flaky"]
    assert flaky.attempts == 4
    assert state.restarts == 3 and state.status is SourceStatus.FINISHED
    assert state.last_error == "ConnectionError: feed dropped (attempt 3)"
    assert state.events == 4 and len(got) == 4


async def test_an_idle_feed_is_cut_by_the_watchdog() -> None:
    got: list[pa.RecordBatch] = []
    hang = HangingSource()
    sup = supervisor([hang], got, idle_timeout_s=0.05)
    task = asyncio.create_task(sup.run())
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 1
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 2
    assert "no data for" in str(sup.states["hang"].last_error)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sup.states["hang"].status is SourceStatus.STOPPED


async def test_restart_reconnects_at_once() -> None:
    got: list[pa.RecordBatch] = []
    hang = HangingSource()
    sup = supervisor([hang], got, idle_timeout_s=60)
    task = asyncio.create_task(sup.run())
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 1
    assert sup.restart("hang") and not sup.restart("nope")
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 2
    assert sup.states["hang"].restarts == 1 and sup.states["hang"].last_error is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
