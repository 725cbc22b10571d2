"""The supervisor runs sources through their context: backoff, watchdog, restarts, cancels."""

from __future__ import annotations

import asyncio
import random

import pyarrow as pa
import pytest

from tickpipe.backfill import backfill_profile
from tickpipe.clock import FakeClock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError, ParseError
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.quality.stage import QualityStage
from tickpipe.sources.base import (
    Batches,
    Checkpoint,
    Delivery,
    Source,
    SourceContext,
    SourcePolicy,
    SourceState,
    SourceStatus,
)
from tickpipe.sources.context import LiveContext
from tickpipe.sources.supervisor import Supervisor
from tickpipe.ticker import check_tick

FAST = SourcePolicy(idle_timeout_s=5.0, backoff_initial_s=0.001, backoff_max_s=0.004)


def one_trade(seq: int) -> Batches:
    return {Kind.TRADE: to_batch(Kind.TRADE, [Trade(seq, seq, "SPY", 1.0, 1, "f", seq)])}


class Recorder:
    """An intake that checks each delivery as the pipeline's tick would, and keeps it."""

    def __init__(self) -> None:
        self.clock = FakeClock()  # frozen, like the supervisor's: an outage lasts 0 s
        self.quality = QualityStage(backfill_profile(Settings(_env_file=None)), self.clock)  # type: ignore[call-arg]
        self.batches: list[pa.RecordBatch] = []
        self.quarantine: list[pa.RecordBatch] = []
        self.gaps: list[pa.RecordBatch] = []
        self.checkpoints: list[Checkpoint] = []
        self.deliveries = 0

    def try_put(self, delivery: Delivery) -> bool:
        self.deliveries += 1
        for result in check_tick(self.quality, [delivery], self.clock.now_ns()):
            self.batches += [g.batch for g in result.accepted.values()]
            self.quarantine += [result.quarantine] if result.quarantine is not None else []
            self.gaps += [result.gaps] if result.gaps is not None else []
        self.checkpoints += [delivery.checkpoint] if delivery.checkpoint is not None else []
        return True

    async def put(self, delivery: Delivery) -> None:
        self.try_put(delivery)


def supervisor(
    sources: list[Source], intake: Recorder, clock: FakeClock | None = None
) -> Supervisor:
    clock = clock or FakeClock()

    def context(source: Source, state: SourceState) -> LiveContext:
        return LiveContext(source.name, state, clock, intake)

    return Supervisor(sources, context, clock, rng=random.Random(1))


class FlakySource:
    """Delivers ``per_attempt`` batches, then fails; ``attempts`` counts connections."""

    def __init__(self, name: str, failures: int, per_attempt: int = 1) -> None:
        self.name = name
        self.policy = FAST
        self.failures = failures
        self.per_attempt = per_attempt
        self.attempts = 0

    async def run(self, ctx: SourceContext) -> None:
        self.attempts += 1
        for i in range(self.per_attempt):
            await ctx.emit(one_trade(self.attempts * 100 + i))
        if self.attempts <= self.failures:
            raise ConnectionError(f"feed dropped (attempt {self.attempts})")


class HangingSource:
    """One delivery per attempt, then silence (optionally with heartbeats)."""

    name = "hang"

    def __init__(self, idle: float | None = 60.0, heartbeat_s: float | None = None) -> None:
        self.policy = SourcePolicy(
            idle_timeout_s=idle, backoff_initial_s=0.001, backoff_max_s=0.002
        )
        self.heartbeat_s = heartbeat_s
        self.attempts = 0
        self.delivered: asyncio.Queue[int] = asyncio.Queue()

    async def run(self, ctx: SourceContext) -> None:
        self.attempts += 1
        await ctx.emit(one_trade(self.attempts))
        self.delivered.put_nowait(self.attempts)
        while True:
            await asyncio.sleep(self.heartbeat_s or 3600)
            ctx.alive()


class BusySource:
    """Always ready: emits as fast as the intake takes it, never awaiting anything else."""

    name = "busy"
    policy = FAST

    def __init__(self) -> None:
        self.emitted = 0

    async def run(self, ctx: SourceContext) -> None:
        while True:
            await ctx.emit(one_trade(self.emitted + 1))
            self.emitted += 1


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    source = FlakySource("f", 0)
    source.policy = SourcePolicy(backoff_initial_s=0.5, backoff_max_s=30)
    sup = supervisor([source], Recorder())
    delays = [sup.backoff_delay("f", n) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        base = min(30, 0.5 * 2 ** (n - 1))
        assert base * 0.5 <= d <= base
    assert len({round(d / min(30, 0.5 * 2 ** (n - 1)), 6) for n, d in enumerate(delays, 1)}) > 1


async def test_a_failing_source_is_restarted_and_finishes() -> None:
    intake = Recorder()
    flaky = FlakySource("flaky", failures=3)
    sup = supervisor([flaky], intake)
    await asyncio.wait_for(sup.run(), 5)
    state = sup.states["flaky"]
    assert flaky.attempts == 4
    assert state.restarts == 3 and state.status is SourceStatus.FINISHED
    assert state.last_error == "ConnectionError: feed dropped (attempt 3)"
    assert state.events == 4 and len(intake.batches) == 4


async def test_events_carry_the_source_name_whatever_the_adapter_wrote() -> None:
    intake = Recorder()
    await asyncio.wait_for(supervisor([FlakySource("feed-a", 0)], intake).run(), 5)
    assert intake.batches[0].column("source").to_pylist() == ["feed-a"]


async def test_an_outage_is_recorded_as_a_gap_per_symbol_when_the_feed_returns() -> None:
    intake = Recorder()
    clock = FakeClock()
    await asyncio.wait_for(supervisor([FlakySource("flaky", 1)], intake, clock).run(), 5)
    (outage,) = [row for g in intake.gaps for row in g.to_pylist() if row["gap"] == "outage"]
    assert outage | {"start_ns": 0, "end_ns": 0, "ts_event": 0} == {
        "ts_event": 0,
        "symbol": "SPY",
        "source": "flaky",
        "kind": "trade",
        "seq": 0,
        "gap": "outage",
        "start_ns": 0,
        "end_ns": 0,
        "seconds": 0.0,
        "missing_seq": 0,
    }


async def test_an_idle_feed_is_cut_by_the_watchdog() -> None:
    hang = HangingSource(idle=0.05)
    sup = supervisor([hang], Recorder())
    task = asyncio.create_task(sup.run())
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 1
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 2
    assert "no data or heartbeat for" in str(sup.states["hang"].last_error)
    await stopped(task)
    assert sup.states["hang"].status is SourceStatus.STOPPED


async def test_heartbeats_keep_a_quiet_feed_connected() -> None:
    hang = HangingSource(idle=0.2, heartbeat_s=0.02)
    sup = supervisor([hang], Recorder())
    task = asyncio.create_task(sup.run())
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 1
    deadline = asyncio.get_running_loop().time() + 1.0
    while asyncio.get_running_loop().time() < deadline:  # five idle timeouts of heartbeats only
        await asyncio.sleep(0.05)
        assert hang.attempts == 1
    assert sup.states["hang"].last_alive_ns is not None
    await stopped(task)


async def test_a_source_without_watchdog_may_stay_silent() -> None:
    hang = HangingSource(idle=None)
    sup = supervisor([hang], Recorder())
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(hang.delivered.get(), 5)
    await asyncio.sleep(0.2)
    assert hang.attempts == 1 and sup.states["hang"].status is SourceStatus.RUNNING
    await stopped(task)


async def test_restart_reconnects_at_once() -> None:
    hang = HangingSource()
    sup = supervisor([hang], Recorder())
    task = asyncio.create_task(sup.run())
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 1
    assert sup.restart("hang") and not sup.restart("nope")
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 2
    assert sup.states["hang"].restarts == 1 and sup.states["hang"].last_error is None
    await stopped(task)


async def test_stop_parks_a_source_until_restart() -> None:
    hang = HangingSource()
    sup = supervisor([hang], Recorder())
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(hang.delivered.get(), 5)
    assert sup.stop("hang")
    for _ in range(20):
        await asyncio.sleep(0)
    assert sup.states["hang"].status is SourceStatus.STOPPED and hang.attempts == 1
    sup.restart("hang")
    assert await asyncio.wait_for(hang.delivered.get(), 5) == 2
    await stopped(task)


class RevokedSource:
    name = "revoked"
    policy = FAST

    def __init__(self) -> None:
        self.attempts = 0
        self.tried: asyncio.Queue[int] = asyncio.Queue()

    async def run(self, ctx: SourceContext) -> None:
        self.attempts += 1
        self.tried.put_nowait(self.attempts)
        raise ConfigError("the refresh token was revoked: run `tickpipe schwab oauth` again")


async def test_a_settings_error_stops_the_source_with_its_sentence_and_no_retry() -> None:
    source = RevokedSource()
    sup = supervisor([source], Recorder())
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(source.tried.get(), 5)
    await asyncio.sleep(0.1)  # forty backoffs' worth of time: none happens
    state = sup.states["revoked"]
    assert source.attempts == 1 and state.status is SourceStatus.FAILED
    assert state.last_error == "the refresh token was revoked: run `tickpipe schwab oauth` again"
    sup.restart("revoked")
    assert await asyncio.wait_for(source.tried.get(), 5) == 2
    await stopped(task)


class GarbageSource:
    name = "garbage"
    policy = FAST

    async def run(self, ctx: SourceContext) -> None:
        await ctx.reject(b'{"data": [1, 2', "unterminated JSON", symbol="SPY")
        raise ParseError("frame is not JSON", raw=b"\xff\x01", symbol="QQQ")


async def test_bad_frames_are_quarantined_with_their_raw_text() -> None:
    intake = Recorder()
    sup = supervisor([GarbageSource()], intake)
    task = asyncio.create_task(sup.run())
    while len(intake.quarantine) < 2:
        await asyncio.sleep(0.001)
    await stopped(task)
    first, second = (q.to_pylist()[0] for q in intake.quarantine[:2])
    assert (first["rule"], first["reason"], first["payload"]) == (
        "parse_error",
        "unterminated JSON",
        '{"data": [1, 2',
    )
    assert (second["symbol"], second["payload"]) == ("QQQ", "\\xff\x01")
    assert sup.states["garbage"].rejected >= 2


async def test_a_busy_source_is_always_cancelled_and_emits_nothing_after() -> None:
    """The cancel that shutdown and the restart button rely on is never lost."""
    for _ in range(200):
        busy = BusySource()
        intake = Recorder()
        sup = supervisor([busy], intake, FakeClock())
        task = asyncio.create_task(sup.run())
        for _ in range(random.randint(1, 30)):
            await asyncio.sleep(0)
        await stopped(task)
        emitted = busy.emitted
        for _ in range(10):
            await asyncio.sleep(0)
        assert busy.emitted == emitted


async def test_a_restart_of_a_busy_source_never_loses_a_delivery() -> None:
    busy = BusySource()
    intake = Recorder()
    sup = supervisor([busy], intake, FakeClock())
    task = asyncio.create_task(sup.run())
    for _ in range(50):
        for _ in range(random.randint(1, 10)):
            await asyncio.sleep(0)
        sup.restart("busy")
    await stopped(task)
    await sup.contexts["busy"].settled()
    assert sup.states["busy"].restarts >= 40
    assert intake.deliveries == sup.states["busy"].batches


class GroupedRevocation:
    """A source whose helpers run in its own TaskGroup: the group's ConfigError still stops it."""

    name = "grouped"
    policy = FAST

    def __init__(self) -> None:
        self.tried: asyncio.Queue[int] = asyncio.Queue()

    async def run(self, ctx: SourceContext) -> None:
        self.tried.put_nowait(1)

        async def keepalive() -> None:
            await asyncio.Event().wait()

        async def login() -> None:
            raise ConfigError("TOKEN is revoked")

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(keepalive())
            tasks.create_task(login())


async def test_a_settings_error_inside_the_source_s_task_group_still_stops_it() -> None:
    source = GroupedRevocation()
    sup = supervisor([source], Recorder())
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(source.tried.get(), 5)
    for _ in range(50):
        await asyncio.sleep(0.002)
    assert source.tried.empty() and sup.states["grouped"].status is SourceStatus.FAILED
    assert sup.states["grouped"].last_error == "TOKEN is revoked"
    await stopped(task)
