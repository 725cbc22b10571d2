"""Fan-out of checked events: the journal (durability), the hot store, bus and listeners.

An event counts as accepted once the hub has written and fsync'd it to the journal. When
it becomes *visible* is a setting (``visible_before_fsync``): by default each tick is
offered to the sinks as it is queued for the journal, so live readers see it while the
fsync runs (an event a reader saw can still be lost if the machine dies within that
fsync, typically well under a millisecond); otherwise only after its fsync. ``submit`` hands a checked delivery to the
hub's worker through a bounded queue (back-pressure on the sources when the disk is slow
or full), so the next delivery's quality checks overlap this one's disk write. The worker
commits everything waiting in one journal append (group commit: one fsync per file for
every delivery that queued up meanwhile, so a websocket feed's one-event frames share
fsyncs); a journal failure is retried until it succeeds, never dropped.

The sinks are best effort and must never stall the durable path: each (hot store, bus,
every listener such as the GEX engine) has its own bounded queue and drain task. A full
queue drops its oldest delivery (counted); a sink call that fails or takes longer than
``SINK_TIMEOUT_S`` is counted and logged (at most once per ``LOG_EVERY_S`` per sink), and
the next delivery is tried as usual. The events are durable and reach the lake regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pyarrow as pa

from tickpipe.budget import Budget
from tickpipe.columnar import Grouped
from tickpipe.datasets import CHECKPOINTS, GAPS, QUARANTINE
from tickpipe.errors import StorageError
from tickpipe.events import Kind
from tickpipe.quality.stage import StageResult
from tickpipe.status import SinkStats
from tickpipe.store.bus import Bus
from tickpipe.store.hot import HotStore
from tickpipe.store.journal import Journal
from tickpipe.store.redis_conn import raise_if_cancelled

log = logging.getLogger(__name__)

Listener = Callable[[Kind, Grouped], Awaitable[None]]
QUEUE_DELIVERIES = 1024
QUEUE_EVENTS = 4 * 65_536
"""The hub queue holds at most this many deliveries and events (whichever comes first):
live feeds deliver a few events at a time, and many of them share one fsync."""
SINK_DELIVERIES = 4 * QUEUE_DELIVERIES
SINK_EVENTS = 2 * QUEUE_EVENTS
"""A sink holds at most this many deliveries and events (a whole group commit fits);
past that it drops its oldest."""
SINK_TIMEOUT_S = 5.0
LOG_EVERY_S = 30.0
JOURNAL_RETRY_MAX_S = 5.0


class Sink:
    """One best-effort fan-out target behind a bounded drop-oldest queue."""

    def __init__(
        self,
        name: str,
        target: Listener,
        deliveries: int = SINK_DELIVERIES,
        events: int = SINK_EVENTS,
    ) -> None:
        self.name = name
        self._target = target
        self._queue: asyncio.Queue[tuple[Kind, Grouped]] = asyncio.Queue()
        self._max_deliveries = deliveries
        self._max_events = events
        self._events = 0
        self.delivered = 0
        self.dropped = 0
        """deliveries dropped because the sink fell behind"""
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._last_log = -LOG_EVERY_S

    def offer(self, kind: Kind, grouped: Grouped) -> None:
        self._queue.put_nowait((kind, grouped))
        self._events += grouped.batch.num_rows
        while self._queue.qsize() > 1 and (
            self._queue.qsize() > self._max_deliveries or self._events > self._max_events
        ):
            self._take()
            self._queue.task_done()
            self.dropped += 1

    def _take(self) -> tuple[Kind, Grouped]:
        kind, grouped = self._queue.get_nowait()
        self._events -= grouped.batch.num_rows
        return kind, grouped

    async def drain(self) -> None:
        """Deliver queued items one by one, forever (cancelled when the hub stops)."""
        while True:
            kind, grouped = await self._queue.get()
            self._events -= grouped.batch.num_rows
            try:
                async with asyncio.timeout(SINK_TIMEOUT_S):
                    await self._target(kind, grouped)
                self.delivered += 1
                self.last_error = None
            except Exception as exc:
                self._failed(exc)
            finally:
                self._queue.task_done()
            # a cancel the target's library swallowed (redis-py on Python 3.11 loses about
            # one in ten: see raise_if_cancelled) must still stop this loop, or the hub's
            # shutdown waits for it forever
            raise_if_cancelled()

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, TimeoutError):
            text = f"no answer within {SINK_TIMEOUT_S:.0f}s"
        self.last_error = text
        self.last_error_at = time.time()
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.warning(
                "fan-out to %s failed (%d failures so far): %s", self.name, self.errors, text
            )

    async def join(self) -> None:
        await self._queue.join()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def stats(self) -> SinkStats:
        return SinkStats(
            queued=self.depth,
            delivered=self.delivered,
            dropped=self.dropped,
            errors=self.errors,
            last_error=self.last_error,
            healthy=self.last_error is None,
        )


class Hub:
    def __init__(
        self,
        journal: Journal,
        hot: HotStore,
        bus: Bus,
        queue_depth: int = QUEUE_DELIVERIES,
        queue_events: int = QUEUE_EVENTS,
        sink_deliveries: int = SINK_DELIVERIES,
        *,
        visible_before_fsync: bool = False,
    ) -> None:
        self.journal = journal
        self.visible_before_fsync = visible_before_fsync
        self.hot = hot
        self.bus = bus
        self.journal_lock = asyncio.Lock()
        self._sink_limits = (sink_deliveries, SINK_EVENTS)
        self.sinks: list[Sink] = [
            Sink("hot_store", hot.write, *self._sink_limits),
            Sink("bus", bus.publish, *self._sink_limits),
        ]
        self.accepted: Counter[str] = Counter()
        self.quarantined = 0
        self.gaps = 0
        self.checkpoints = 0
        self.journal_seconds = 0.0
        self.journal_appends = 0
        self.last_journal_ms = 0.0
        self.journal_errors = 0
        self.last_error: str | None = None
        self.journal_blocked_since: float | None = None
        """wall time since which the journal refuses writes (disk full...), else None"""
        self._queue: asyncio.Queue[StageResult | None] = asyncio.Queue(maxsize=queue_depth)
        self._room = Budget(queue_events)

    def add_listener(self, name: str, listener: Listener) -> None:
        """Called with every accepted (kind, batch) after the journal, e.g. the GEX engine."""
        self.sinks.append(Sink(name, listener, *self._sink_limits))

    async def submit(self, result: StageResult) -> None:
        """Queue one checked delivery; waits while the queue is full (back-pressure)."""
        if result.empty:
            return
        if self.visible_before_fsync:
            self._fan_out(result)
        await self._room.take(result.rows)
        await self._queue.put(result)

    def _fan_out(self, result: StageResult) -> None:
        for kind, grouped in result.accepted.items():
            for sink in self.sinks:
                sink.offer(kind, grouped)

    async def run(self) -> None:
        """The worker and the sinks' drains. Ends on ``close()`` once all is committed."""
        async with asyncio.TaskGroup() as group:
            drains = [group.create_task(s.drain(), name=f"sink:{s.name}") for s in self.sinks]
            await self._work()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SINK_TIMEOUT_S):
                    await self.fanned_out()
            for task in drains:
                task.cancel()

    async def _work(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            results = [first]
            closing = False
            while not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    closing = True
                    break
                results.append(more)
            await self._commit_until_done(results)
            await self._room.give(sum(r.rows for r in results))
            for _ in range(len(results) + closing):
                self._queue.task_done()
            if closing:
                return

    async def _commit_until_done(self, results: list[StageResult]) -> None:
        """A journal failure (disk full, I/O error) is retried, never dropped: while it
        lasts the queue fills and the sources wait. Logged when it starts and ends."""
        delay = 0.1
        while True:
            try:
                await self.commit(results)
            except StorageError as exc:
                self.journal_errors += 1
                self.last_error = str(exc)
                if self.journal_blocked_since is None:
                    self.journal_blocked_since = time.time()
                    log.error("journal refuses writes (%s); sources wait until it recovers", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, JOURNAL_RETRY_MAX_S)
                continue
            if self.journal_blocked_since is not None:
                log.warning(
                    "journal writes again after %.1fs", time.time() - self.journal_blocked_since
                )
                self.journal_blocked_since = None
            self.last_error = None
            return

    async def drained(self) -> None:
        """Return once everything submitted so far is committed and fanned out."""
        await self._queue.join()
        await self.fanned_out()

    async def fanned_out(self) -> None:
        for sink in self.sinks:
            await sink.join()

    async def close(self) -> None:
        """Commit what is queued, then stop the worker."""
        await self._queue.put(None)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def accept(self, result: StageResult) -> None:
        """Commit one delivery now, without the worker, and wait for its fan-out (tools and
        tests; needs ``run`` for the sinks, or delivers to them inline when it is not)."""
        if self.visible_before_fsync:
            self._fan_out(result)
        await self.commit([result])
        if any(s.depth for s in self.sinks):
            await self._deliver_inline()

    async def _deliver_inline(self) -> None:
        """Without a running hub (tests that call ``accept``), drain the sinks here."""
        for sink in self.sinks:
            while sink.depth:
                kind, grouped = sink._take()
                try:
                    await sink._target(kind, grouped)
                    sink.delivered += 1
                except Exception as exc:
                    sink._failed(exc)
                finally:
                    sink._queue.task_done()

    async def commit(self, results: list[StageResult]) -> None:
        items: list[tuple[str, pa.RecordBatch]] = []
        checkpoints: list[tuple[str, pa.RecordBatch]] = []
        for result in results:
            items += [(kind.value, g.batch) for kind, g in result.accepted.items()]
            if result.quarantine is not None:
                items.append((QUARANTINE, result.quarantine))
            if result.gaps is not None:
                items.append((GAPS, result.gaps))
            if result.checkpoint is not None:
                checkpoints.append((CHECKPOINTS, result.checkpoint))
        items += checkpoints  # last: a checkpoint is never durable before its events
        if not items:
            return
        started = time.perf_counter()
        async with self.journal_lock:
            await asyncio.to_thread(self.journal.append, items)
        elapsed = time.perf_counter() - started
        self.journal_seconds += elapsed
        self.journal_appends += 1
        self.last_journal_ms = elapsed * 1000
        for result in results:
            for kind, grouped in result.accepted.items():
                self.accepted[kind.value] += grouped.batch.num_rows
            if not self.visible_before_fsync:
                self._fan_out(result)
            if result.quarantine is not None:
                self.quarantined += result.quarantine.num_rows
            if result.gaps is not None:
                self.gaps += result.gaps.num_rows
            if result.checkpoint is not None:
                self.checkpoints += 1
