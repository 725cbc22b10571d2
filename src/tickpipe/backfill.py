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
import ctypes
import ctypes.util
import dataclasses
import logging
import threading
import time
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.backfill_lake import UNFLUSHED_SEGMENTS, LakeFlush, backlog, flusher
from tickpipe.clock import Clock, SystemClock
from tickpipe.config import Settings
from tickpipe.datasets import CHECKPOINTS, GAPS, QUARANTINE
from tickpipe.quality.stage import QualityStage
from tickpipe.sources.base import Batches, Checkpoint, Delivery, Source, SourceState
from tickpipe.sources.context import LiveContext
from tickpipe.store.checkpoints import checkpoint_batch, latest_checkpoints
from tickpipe.store.held import HeldRows
from tickpipe.store.journal import Journal
from tickpipe.store.lock import lock_data_dir
from tickpipe.ticker import stamp_source

log = logging.getLogger(__name__)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BELOW = 32 * 2**20
"""arrays up to this size come from malloc's heap and are reused once freed (glibc's cap)"""


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed memory instead of mapping every large array afresh.

    An import allocates and frees the same few-MB numpy arrays for every chunk; by default
    glibc maps each one anew and unmaps it when freed, so every page of it faults again on
    first touch (measured on 10 M records: 430 k page faults, 2.3 s of system time, against
    90 k and 1.2 s, for ~100 MB more peak memory). For a process that imports and exits;
    True when applied, False where there is no glibc (nothing changes there)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


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


@dataclasses.dataclass(slots=True)
class _Checked:
    """A delivery after the duplicate check and quality: what its journal append writes."""

    source: str
    items: list[tuple[str, pa.RecordBatch]]
    accepted: dict[str, int]
    quarantined: int
    gaps: int


class BackfillIntake:
    """The intake of an import: exact duplicate check, quality, journal; no fan-out.

    Two stages, so the disk and the processor work at once: a delivery is checked in one
    thread while the previous one is written and fsync'd in another. At most one write is
    in flight, and the next ``put``, ``settle`` and every roll wait for it, so deliveries
    (each checkpoint after its events) reach the journal in order, and a write that failed
    stops the import at its next ``put``. Appends and rolls also exclude each other by a
    thread lock: a cancelled task never leaves its thread writing beside a roll.
    """

    def __init__(self, settings: Settings, clock: Clock, journal: Journal) -> None:
        self._clock = clock
        self._journal = journal
        self.quality = QualityStage(backfill_profile(settings), clock)
        self.held = HeldRows(settings.lake_dir)
        self.commit_lock = asyncio.Lock()
        """one delivery checked at a time: the quality state and the order"""
        self.appended = asyncio.Event()
        """set after each durable append: the flusher looks for closed segments"""
        self.flushed = asyncio.Event()
        """the flusher's end-of-pass signal (see ``backfill_lake.Signals``)"""
        self._journal_dir = settings.journal_dir
        self._max_unflushed = UNFLUSHED_SEGMENTS * settings.journal_segment_bytes
        self.reports: dict[str, SourceReport] = {}
        self._journal_lock = threading.Lock()
        self._writing: asyncio.Task[None] | None = None

    def try_put(self, delivery: Delivery) -> bool:
        return False  # every delivery is checked before the importer reads on

    async def put(self, delivery: Delivery) -> None:
        async with self.commit_lock:
            await backlog(self, self._journal_dir, self._max_unflushed)
            checked = await asyncio.to_thread(self._check, delivery, self._clock.now_ns())
            await self.settle()
            self._writing = asyncio.create_task(self._write(checked))

    async def settle(self) -> None:
        """Return once the write in flight is durable; raise what it raised."""
        writing = self._writing
        if writing is None:
            return
        try:
            await asyncio.shield(writing)
        finally:
            if writing.done():
                self._writing = None

    async def _write(self, checked: _Checked) -> None:
        await asyncio.to_thread(self._append, checked)
        self.appended.set()

    def roll(self, *, force: bool) -> None:
        with self._journal_lock:
            if force:
                self._journal.roll()
            else:
                self._journal.maybe_roll()

    def _check(self, delivery: Delivery, now: int) -> _Checked:
        source = delivery.source
        report = self.reports.setdefault(source, SourceReport(source))
        fresh: Batches = {}
        for kind, batch in _stamped(delivery.batches, source).items():
            new = self.held.drop_held(kind.value, source, batch)
            report.duplicates += batch.num_rows - new.num_rows
            if new.num_rows:
                fresh[kind] = new
        result = self.quality.process(source, fresh) if fresh else None
        quarantine, gaps = delivery.quarantine, delivery.gaps
        items: list[tuple[str, pa.RecordBatch]] = []
        accepted: dict[str, int] = {}
        if result is not None:
            items += [(kind.value, g.batch) for kind, g in result.accepted.items()]
            accepted = {kind.value: g.batch.num_rows for kind, g in result.accepted.items()}
            quarantine = _concat(result.quarantine, quarantine)
            gaps = _concat(result.gaps, gaps)
        if quarantine is not None:
            items.append((QUARANTINE, quarantine))
        if gaps is not None:
            items.append((GAPS, gaps))
        if delivery.checkpoint is not None:
            items.append((CHECKPOINTS, checkpoint_batch(source, delivery.checkpoint, now)))
        return _Checked(
            source,
            items,
            accepted,
            quarantine.num_rows if quarantine is not None else 0,
            gaps.num_rows if gaps is not None else 0,
        )

    def _append(self, checked: _Checked) -> None:
        """Write and fsync; only then are the events counted as accepted."""
        with self._journal_lock:
            self._journal.append(checked.items)
        report = self.reports[checked.source]
        for kind, n in checked.accepted.items():
            report.accepted[kind] = report.accepted.get(kind, 0) + n
        report.quarantined += checked.quarantined
        report.gaps += checked.gaps


def _stamped(batches: Batches, name: str) -> Batches:
    """``stamp_all``, but a source column that says ``name`` already (an importer's decoder
    writes it) is only compared with it (~3 ms a million rows), not hashed (~18 ms)."""
    return {
        kind: batch if _says(batch, name) else stamp_source(batch, name)
        for kind, batch in batches.items()
        if batch.num_rows
    }


def _says(batch: pa.RecordBatch, name: str) -> bool:
    if "source" not in batch.schema.names:
        return False
    column = batch.column("source")
    return (
        pa.types.is_string(column.type)
        and column.null_count == 0
        and bool(pc.all(pc.equal(column, name)).as_py())
    )


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
    lake = LakeFlush(settings)
    intake = BackfillIntake(settings, clock, journal)
    try:
        journal.recover()
        await lake.flush()
        saved = await asyncio.to_thread(
            latest_checkpoints, settings.lake_dir, [s.name for s in sources]
        )
        stop_flusher = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(flusher(lake, intake, stop_flusher))
            try:
                for source in sources:
                    await _import_one(source, intake, clock, saved.get(source.name), progress)
            finally:
                stop_flusher.set()
                intake.appended.set()
    finally:
        with contextlib.suppress(Exception):
            async with intake.commit_lock:  # a delivery handed over is written first
                await intake.settle()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(intake.roll, force=True)
        try:
            await lake.flush()
        finally:
            lake.close()
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
                await intake.settle()  # complete once its last chunk is durable
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
