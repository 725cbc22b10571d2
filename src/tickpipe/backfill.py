"""Backfill: history from files (or any finite source) into the lake, never to live readers.

An importer is an ordinary source (``run(ctx)``, see ``sources/base.py``) whose ``run``
ends. It resumes from ``ctx.checkpoint`` and commits a checkpoint with every chunk it
emits, so a stopped import continues where it stopped and a repeated one adds nothing.
Each delivery goes:

    rows already in the lake (same source, symbol, seq)  -> skipped, counted
    quality with the backfill profile (no ``ancient_ts``) -> accepted | quarantine
    journal (fsync'd, checkpoint last)                     -> flushed to Parquet

and nowhere else: no hot store, bus, WebSocket or GEX, which serve the live market. The
run holds the data directory's ingest lock, so it refuses while ``tickpipe run`` writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from typing import Any

import pyarrow as pa

from tickpipe.clock import Clock, SystemClock
from tickpipe.config import Settings
from tickpipe.datasets import CHECKPOINTS, GAPS, QUARANTINE
from tickpipe.quality.stage import QualityStage
from tickpipe.sources.base import Batches, Checkpoint, Delivery, Source, SourceState
from tickpipe.sources.context import LiveContext
from tickpipe.store.checkpoints import checkpoint_batch, latest_checkpoints
from tickpipe.store.held import HeldRows
from tickpipe.store.journal import Journal
from tickpipe.store.lake import LakeWriter
from tickpipe.store.lock import lock_data_dir
from tickpipe.ticker import stamp_all

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 2.0


def backfill_profile(settings: Settings) -> Settings:
    """The quality settings for history: old timestamps are the point, not a fault."""
    return settings.model_copy(
        update={
            "quality": settings.quality.model_copy(update={"max_age_s": 0.0}),
            "quality_overrides": {
                symbol: limits.model_copy(update={"max_age_s": 0.0})
                for symbol, limits in settings.quality_overrides.items()
            },
        }
    )


@dataclasses.dataclass
class SourceReport:
    name: str
    accepted: dict[str, int] = dataclasses.field(default_factory=dict)
    quarantined: int = 0
    duplicates: int = 0
    """rows the lake already held (an import repeated or resumed), skipped"""
    gaps: int = 0
    seconds: float = 0.0
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    complete: bool = False

    def summary(self) -> str:
        accepted = sum(self.accepted.values())
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.accepted.items())) or "nothing new"
        extra = "".join(f", {n} {k}" for k, n in sorted(self.counters.items()))
        state = "" if self.complete else " (NOT complete)"
        return (
            f"{self.name}: {accepted} accepted ({kinds}), {self.quarantined} quarantined, "
            f"{self.duplicates} already in the lake{extra}, {self.seconds:.1f}s{state}"
        )


@dataclasses.dataclass
class BackfillReport:
    sources: list[SourceReport]
    seconds: float


class BackfillIntake:
    """The intake of an import: exact duplicate check, quality, journal; no fan-out."""

    def __init__(self, settings: Settings, clock: Clock, journal: Journal) -> None:
        self._settings = settings
        self._clock = clock
        self._journal = journal
        self.quality = QualityStage(backfill_profile(settings), clock)
        self.held = HeldRows(settings.lake_dir)
        self.commit_lock = asyncio.Lock()
        self.reports: dict[str, SourceReport] = {}

    def try_put(self, delivery: Delivery) -> bool:
        return False  # every delivery is committed before the importer reads on

    async def put(self, delivery: Delivery) -> None:
        async with self.commit_lock:  # one delivery at a time: quality state and order
            await asyncio.to_thread(
                self._commit,
                delivery.source,
                stamp_all(delivery.batches, delivery.source),
                delivery.checkpoint,
                delivery.quarantine,
                delivery.gaps,
                self._clock.now_ns(),
            )

    def _commit(
        self,
        source: str,
        batches: Batches,
        checkpoint: Checkpoint | None,
        quarantine: pa.RecordBatch | None,
        gaps: pa.RecordBatch | None,
        now: int,
    ) -> None:
        report = self.reports.setdefault(source, SourceReport(source))
        fresh: Batches = {}
        for kind, batch in batches.items():
            new = self.held.drop_held(kind.value, source, batch)
            report.duplicates += batch.num_rows - new.num_rows
            if new.num_rows:
                fresh[kind] = new
        result = self.quality.process(source, fresh) if fresh else None
        items: list[tuple[str, pa.RecordBatch]] = []
        if result is not None:
            items += [(kind.value, g.batch) for kind, g in result.accepted.items()]
            quarantine = _concat(result.quarantine, quarantine)
            gaps = _concat(result.gaps, gaps)
        if quarantine is not None:
            items.append((QUARANTINE, quarantine))
        if gaps is not None:
            items.append((GAPS, gaps))
        if checkpoint is not None:
            items.append((CHECKPOINTS, checkpoint_batch(source, checkpoint, now)))
        self._journal.append(items)
        if result is not None:
            for kind, grouped in result.accepted.items():
                report.accepted[kind.value] = (
                    report.accepted.get(kind.value, 0) + grouped.batch.num_rows
                )
        report.quarantined += quarantine.num_rows if quarantine is not None else 0
        report.gaps += gaps.num_rows if gaps is not None else 0


def _concat(a: pa.RecordBatch | None, b: pa.RecordBatch | None) -> pa.RecordBatch | None:
    if a is None or b is None:
        return a if b is None else b
    return pa.Table.from_batches([a, b]).combine_chunks().to_batches()[0]


async def run_backfill(
    settings: Settings,
    sources: list[Source],
    *,
    progress: bool = False,
    clock: Clock | None = None,
) -> BackfillReport:
    """Run each importer to its end, one after the other; flush everything to the lake.

    An importer's exception ends the run (after flushing what was committed): its report
    says NOT complete, and running the same import again resumes from its checkpoint.
    """
    clock = clock or SystemClock()
    started = time.perf_counter()
    lock = lock_data_dir(settings.data_dir, "importing")
    journal = Journal(
        settings.journal_dir,
        clock,
        segment_seconds=settings.journal_segment_seconds,
        segment_bytes=settings.journal_segment_bytes,
        fsync=settings.journal_fsync,
    )
    lake = LakeWriter(settings.lake_dir, settings.journal_dir, settings.lake_zstd_level)
    intake = BackfillIntake(settings, clock, journal)
    try:
        journal.recover()
        await asyncio.to_thread(lake.flush_closed)
        saved = await asyncio.to_thread(
            latest_checkpoints, settings.lake_dir, [s.name for s in sources]
        )
        stop_flusher = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(_flusher(journal, lake, intake, stop_flusher))
            try:
                for source in sources:
                    await _import_one(source, intake, clock, saved.get(source.name), progress)
            finally:
                stop_flusher.set()
    finally:
        with contextlib.suppress(Exception):
            async with intake.commit_lock:
                journal.roll()
        await asyncio.to_thread(lake.flush_closed)
        lock.close()
    return BackfillReport(
        [intake.reports.get(s.name, SourceReport(s.name)) for s in sources],
        time.perf_counter() - started,
    )


async def _import_one(
    source: Source,
    intake: BackfillIntake,
    clock: Clock,
    checkpoint: Checkpoint | None,
    progress: bool,
) -> None:
    state = SourceState(source.name)
    ctx = LiveContext(source.name, state, clock, intake, checkpoint=checkpoint)
    report = intake.reports.setdefault(source.name, SourceReport(source.name))
    began = time.perf_counter()
    bar = _Progress(source.name, state) if progress else None
    try:
        async with asyncio.TaskGroup() as group:
            if bar is not None:
                group.create_task(bar.follow())
            try:
                await source.run(ctx)
                report.complete = True
            finally:
                if bar is not None:
                    bar.stop()
    finally:
        report.seconds += time.perf_counter() - began
        report.counters = dict(Counter(report.counters) + Counter(state.counters))


class _Progress:
    """A progress bar fed by the importer's ``ctx.info(progress_total=, progress_done=)``."""

    def __init__(self, name: str, state: SourceState) -> None:
        from tqdm import tqdm

        self._state = state
        self._bar = tqdm(desc=name, unit=" records", unit_scale=True, leave=True)
        self._done = asyncio.Event()

    async def follow(self) -> None:
        while not self._done.is_set():
            self._update()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), 0.2)
        self._update()
        self._bar.close()

    def _update(self) -> None:
        details: dict[str, Any] = self._state.details
        total, done = details.get("progress_total"), details.get("progress_done")
        if isinstance(total, int | float) and total != self._bar.total:
            self._bar.total = total
            unit = details.get("progress_unit")
            if isinstance(unit, str):
                self._bar.unit = f" {unit}"
        if isinstance(done, int | float):
            self._bar.n = done
            self._bar.refresh()

    def stop(self) -> None:
        self._done.set()


async def _flusher(
    journal: Journal, lake: LakeWriter, intake: BackfillIntake, stop: asyncio.Event
) -> None:
    """Roll segments by age or size and turn closed ones into Parquet while importing."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_EVERY_S)
        async with intake.commit_lock:
            journal.maybe_roll()
        await asyncio.to_thread(lake.flush_closed)
