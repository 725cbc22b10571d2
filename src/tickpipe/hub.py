"""Fan-out of accepted events: journal first (durability), then hot store, bus and listeners.

An event counts as accepted once the hub has written and fsync'd it to the journal; only
then is it counted and fanned out. ``submit`` hands a checked delivery to the hub's
worker through a bounded queue (back-pressure on the sources when the disk is slow), so
the next delivery's quality checks overlap this one's disk write. The worker commits
everything waiting in one journal append (group commit: one fsync per file for several
deliveries). A hot-store or bus failure after the journal is counted and logged, never
fatal: the event is durable and will reach the lake. A journal failure stops the hub.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pyarrow as pa

from tickpipe.columnar import Grouped
from tickpipe.errors import StorageError
from tickpipe.events import Kind
from tickpipe.quality.stage import GAPS, QUARANTINE, StageResult
from tickpipe.store.bus import Bus
from tickpipe.store.hot import HotStore
from tickpipe.store.journal import Journal

log = logging.getLogger(__name__)

Listener = Callable[[Kind, Grouped], Awaitable[None]]


class Hub:
    def __init__(self, journal: Journal, hot: HotStore, bus: Bus, queue_depth: int = 4) -> None:
        self.journal = journal
        self.hot = hot
        self.bus = bus
        self.journal_lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self.accepted: Counter[str] = Counter()
        self.quarantined = 0
        self.gaps = 0
        self.fanout_errors: Counter[str] = Counter()
        self.journal_seconds = 0.0
        self.journal_appends = 0
        self.last_journal_ms = 0.0
        self.journal_errors = 0
        self.last_error: str | None = None
        self._queue: asyncio.Queue[StageResult | None] = asyncio.Queue(maxsize=queue_depth)

    def add_listener(self, listener: Listener) -> None:
        """Called with every accepted (kind, batch) after the journal, e.g. the GEX engine."""
        self._listeners.append(listener)

    async def submit(self, result: StageResult) -> None:
        """Queue one checked delivery; waits while the queue is full (back-pressure)."""
        if result.accepted or result.quarantine is not None or result.gaps is not None:
            await self._queue.put(result)

    async def run(self) -> None:
        """The worker: group-commit waiting deliveries, then fan out. Ends on ``close()``."""
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
            for _ in range(len(results) + closing):
                self._queue.task_done()
            if closing:
                return

    async def _commit_until_done(self, results: list[StageResult]) -> None:
        """A journal failure (disk full, I/O error) is retried, never dropped: while it
        lasts the queue fills and the sources wait."""
        delay = 0.1
        while True:
            try:
                await self.commit(results)
                self.last_error = None
                return
            except StorageError as exc:
                self.journal_errors += 1
                self.last_error = str(exc)
                log.error("journal write failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def drained(self) -> None:
        """Return once everything submitted so far is committed and fanned out."""
        await self._queue.join()

    async def close(self) -> None:
        """Commit what is queued, then stop the worker."""
        await self._queue.put(None)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def accept(self, result: StageResult) -> None:
        """Commit one delivery now, without the worker (tools and tests)."""
        await self.commit([result])

    async def commit(self, results: list[StageResult]) -> None:
        items: list[tuple[str, pa.RecordBatch]] = []
        for result in results:
            items += [(kind.value, g.batch) for kind, g in result.accepted.items()]
            if result.quarantine is not None:
                items.append((QUARANTINE, result.quarantine))
            if result.gaps is not None:
                items.append((GAPS, result.gaps))
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
                await self._fan_out(kind, grouped)
            if result.quarantine is not None:
                self.quarantined += result.quarantine.num_rows
            if result.gaps is not None:
                self.gaps += result.gaps.num_rows

    async def _fan_out(self, kind: Kind, grouped: Grouped) -> None:
        targets: list[tuple[str, Listener]] = [("hot", self.hot.write), ("bus", self.bus.publish)]
        targets += [(getattr(fn, "__qualname__", "listener"), fn) for fn in self._listeners]
        for name, target in targets:
            try:
                await target(kind, grouped)
            except (StorageError, OSError) as exc:
                self.fanout_errors[name] += 1
                log.warning("fan-out to %s failed: %s", name, exc)
