"""The lake side of an import: closed journal segments to Parquet while the import runs.

A segment that an append closes is flushed at once (not on the next tick of a timer), and
trades and quotes at the same time, one thread each: the Parquet encoding is the largest
cost of an import. The flush is also its slowest stage, so the importer waits for the
flusher's next pass while more than a few segments wait (``backlog``): the journal holds
a few segments, not the whole import, and the processor goes where the work is.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from tickpipe.config import Settings
from tickpipe.store.journal import closed_segments, datasets
from tickpipe.store.lake import LakeWriter

FLUSH_EVERY_S = 2.0
"""without appends (a slow source), segments are rolled by age and flushed this often"""
FLUSH_THREADS = 2
UNFLUSHED_SEGMENTS = 4
"""closed segments' worth of bytes (``journal_segment_bytes`` each) waiting for Parquet
past which a delivery waits for the flusher's next pass"""


class Signals(Protocol):
    """What the flusher and the intake tell each other."""

    appended: asyncio.Event
    """set after a durable append: look for closed segments now"""
    flushed: asyncio.Event
    """set, and replaced by a fresh one, at the end of each flush pass; set for good when
    the flusher ends: a delivery held back by the backlog goes on"""

    def roll(self, *, force: bool) -> None: ...


def unflushed_bytes(journal_dir: Path) -> int:
    """Bytes of closed journal segments not yet flushed to Parquet."""
    total = 0
    for dataset in datasets(journal_dir):
        for path in closed_segments(journal_dir, dataset):
            with contextlib.suppress(FileNotFoundError):  # flushed meanwhile
                total += path.stat().st_size
    return total


class LakeFlush:
    """Closed journal segments to Parquet, one thread per dataset at a time: trades and
    quotes are written at once (each ~45 % of the work), and each dataset's segments go
    oldest first. A dataset's lock keeps a flush left running by a cancelled task from
    meeting the next one on the same segment."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool = ThreadPoolExecutor(FLUSH_THREADS, thread_name_prefix="lake-flush")
        self._writers: dict[str, tuple[threading.Lock, LakeWriter]] = {}

    async def flush(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._pool, self._flush_dataset, dataset, *self._writer(dataset)
                )
                for dataset in datasets(self._settings.journal_dir)
            )
        )

    def _writer(self, dataset: str) -> tuple[threading.Lock, LakeWriter]:
        if dataset not in self._writers:
            lake = LakeWriter(
                self._settings.lake_dir, self._settings.journal_dir, self._settings.lake_zstd_level
            )
            self._writers[dataset] = (threading.Lock(), lake)
        return self._writers[dataset]

    @staticmethod
    def _flush_dataset(dataset: str, lock: threading.Lock, writer: LakeWriter) -> None:
        with lock:
            writer.flush_closed(only=dataset)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


async def flusher(lake: LakeFlush, signals: Signals, stop: asyncio.Event) -> None:
    """Roll segments by age and turn closed ones into Parquet while importing: at once
    after an append (a chunk fills a segment), else every few seconds."""
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signals.appended.wait(), FLUSH_EVERY_S)
            signals.appended.clear()
            await asyncio.to_thread(signals.roll, force=False)
            await lake.flush()
            done, signals.flushed = signals.flushed, asyncio.Event()
            done.set()
    finally:
        signals.flushed.set()  # nobody waits for a pass that will not come


async def backlog(signals: Signals, journal_dir: Path, max_bytes: int) -> None:
    """Back-pressure on the importer: past ``max_bytes`` of closed segments waiting for
    Parquet, wait for the flusher's next pass. Only one: a flush that keeps failing (disk
    full) slows the import down, it must not hang it."""
    if await asyncio.to_thread(unflushed_bytes, journal_dir) > max_bytes:
        passed = signals.flushed  # the end of the pass under way or the next one
        signals.appended.set()  # the flusher starts its pass now
        await passed.wait()
