"""The append-only journal: an event counts as accepted once it is here and fsync'd.

One Arrow IPC stream file per (dataset, segment). Appends for one delivery are written to
every touched segment and then fsync'd together, so the cost is one fsync per file per
delivery, not per event. A segment closes by size or age (renamed ``.open`` ->
``.arrows``, directory fsync'd); the flusher turns closed segments into Parquet. After a
crash, ``.open`` leftovers are closed on start, and a torn final message is discarded:
it was never acknowledged.

A full disk is a state, not a crash. A failed append (ENOSPC, EIO) cuts every segment it
touched back to its last acknowledged byte and closes it, so a writer that failed
mid-message is never written to again (that is how a segment used to end up with a
half-written batch followed by whole ones: "non-monotonic offset" on every restart, or a
SIGSEGV). The caller retries the same delivery into a fresh segment. Closing a segment
never raises: a failed end-of-stream marker is cut off (it is optional), a failed rename
is retried on the next roll.

Recovery and the flusher check segments batch by batch (``validate(full=True)``): a
segment with invalid batches keeps its valid ones and is moved, as it was, to
``journal/corrupt/<dataset>/`` with a log line and a counter. A bad file never stops a
start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
from pathlib import Path

import pyarrow as pa

from tickpipe.clock import Clock
from tickpipe.errors import StorageError
from tickpipe.store import layout

log = logging.getLogger(__name__)

CORRUPT_DIR = "corrupt"
"""``journal/corrupt/<dataset>/<segment>.arrows``: segments set aside, never read again"""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_for_write(path: Path) -> pa.NativeFile:
    """The one place journal and lake files are opened for writing (a seam for tests that
    simulate a full disk where they cannot mount a small filesystem)."""
    return pa.OSFile(str(path), "wb")


@dataclasses.dataclass
class _OpenSegment:
    path: Path
    segment: str
    file: pa.NativeFile
    writer: pa.ipc.RecordBatchStreamWriter
    opened_mono: float
    bytes: int = 0
    """end of the last acknowledged (fsync'd) message"""
    rows: int = 0


class Journal:
    def __init__(
        self,
        journal_dir: Path,
        clock: Clock,
        *,
        segment_seconds: float,
        segment_bytes: int,
        fsync: bool = True,
        writer_id: str | None = None,
    ) -> None:
        self._dir = journal_dir
        self._clock = clock
        self._segment_seconds = segment_seconds
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._writer_id = writer_id or secrets.token_hex(3)
        self._open: dict[str, _OpenSegment] = {}
        self._unrenamed: dict[Path, str] = {}
        """closed segments still named ``.open`` because the rename failed: path -> dataset"""
        self._opened = 0
        self.rows_written = 0
        self.bytes_written = 0
        self.fsyncs = 0
        self.append_errors = 0
        self.close_errors = 0
        self.corrupt_segments = 0
        self.corrupt_batches = 0
        self._dir.mkdir(parents=True, exist_ok=True)

    @property
    def writer_id(self) -> str:
        return self._writer_id

    def recover(self) -> list[Path]:
        """Close leftovers of a previous run (``.open`` -> ``.arrows``), then check every
        closed segment batch by batch, setting aside what fails; return the leftovers."""
        closed = []
        for path in sorted(self._dir.glob(f"*/*{layout.OPEN_SUFFIX}")):
            target = path.with_suffix(layout.CLOSED_SUFFIX)
            path.rename(target)
            closed.append(target)
            log.info("recovered journal segment %s", target.name)
        for ds in {p.parent for p in closed}:
            fsync_dir(ds)
        for dataset in datasets(self._dir):
            for path in closed_segments(self._dir, dataset):
                try:
                    _, invalid = salvage_segment(path, self._dir)
                except StorageError as exc:  # no room to rewrite it: the flusher retries
                    log.error("%s; the flusher will check it again", exc)
                    continue
                if invalid:
                    self.corrupt_segments += 1
                    self.corrupt_batches += invalid
        return closed

    def append(self, items: list[tuple[str, pa.RecordBatch]]) -> None:
        """Write and fsync one delivery; returns only when it is durable. On failure every
        touched segment is cut back to what was acknowledged and closed, so retrying the
        same delivery can neither duplicate nor follow a half-written message."""
        touched: dict[str, _OpenSegment] = {}
        acked: dict[str, int] = {}
        try:
            for dataset, batch in items:
                if batch.num_rows == 0:
                    continue
                seg = self._segment_for(dataset, batch.schema)
                if dataset not in touched:  # before writing: a failed write must abandon it
                    touched[dataset] = seg
                    acked[dataset] = seg.bytes
                seg.writer.write_batch(batch)
                seg.rows += batch.num_rows
            for seg in touched.values():
                seg.file.flush()
                if self._fsync:
                    os.fsync(seg.file.fileno())
                    self.fsyncs += 1
        except (OSError, pa.ArrowException) as exc:
            self.append_errors += 1
            for dataset, seg in touched.items():
                self._abandon(dataset, seg, acked[dataset])
            raise StorageError(f"journal append failed: {exc}") from exc
        for seg in touched.values():
            size = seg.file.tell()
            self.bytes_written += size - seg.bytes
            seg.bytes = size
        self.rows_written += sum(b.num_rows for _, b in items)
        self._roll(force=False)

    def _abandon(self, dataset: str, seg: _OpenSegment, acked_bytes: int) -> None:
        """After a failed append: close the segment and cut it back to what was
        acknowledged; the next append opens a new one."""
        self._open.pop(dataset, None)
        for closer in (seg.writer.close, seg.file.close):
            # the end-of-stream marker may not fit: it is cut off below anyway
            with contextlib.suppress(OSError, pa.ArrowException):
                closer()
        try:
            os.truncate(seg.path, acked_bytes)
        except OSError:
            log.exception("could not cut back journal segment %s", seg.path)
        self._rename_closed(dataset, seg.path)

    def roll(self) -> list[Path]:
        """Close every open segment now (shutdown, tests); return the closed paths."""
        return self._roll(force=True)

    def maybe_roll(self) -> list[Path]:
        return self._roll(force=False)

    def _roll(self, *, force: bool) -> list[Path]:
        """Never raises: a segment that cannot be closed now is closed on a later roll."""
        closed = []
        for path, dataset in list(self._unrenamed.items()):
            if (target := self._rename_closed(dataset, path)) is not None:
                closed.append(target)
        now = self._clock.monotonic()
        for dataset, seg in list(self._open.items()):
            due = force or now - seg.opened_mono >= self._segment_seconds
            if (due or seg.bytes >= self._segment_bytes) and (
                target := self._close(dataset, seg)
            ) is not None:
                closed.append(target)
        return closed

    def _close(self, dataset: str, seg: _OpenSegment) -> Path | None:
        del self._open[dataset]
        marker_written = True
        try:
            seg.writer.close()  # the end-of-stream marker: readers do not need it
        except (OSError, pa.ArrowException) as exc:
            marker_written = False
            self.close_errors += 1
            log.warning("journal segment %s closed without its end marker: %s", seg.path, exc)
        with contextlib.suppress(OSError, pa.ArrowException):
            seg.file.close()
        if not marker_written:
            try:
                os.truncate(seg.path, seg.bytes)  # drop a partial marker
            except OSError:
                log.exception("could not cut back journal segment %s", seg.path)
        return self._rename_closed(dataset, seg.path)

    def _rename_closed(self, dataset: str, path: Path) -> Path | None:
        target = path.with_suffix(layout.CLOSED_SUFFIX)
        try:
            path.rename(target)
            fsync_dir(target.parent)
        except OSError as exc:
            if path.exists():
                if path not in self._unrenamed:
                    self.close_errors += 1
                    log.warning("journal segment %s not closed yet (%s); retrying", path, exc)
                self._unrenamed[path] = dataset
                return None
        self._unrenamed.pop(path, None)
        return target

    def _segment_for(self, dataset: str, schema: pa.Schema) -> _OpenSegment:
        seg = self._open.get(dataset)
        if seg is not None:
            return seg
        self._opened += 1
        name = layout.segment_name(self._clock.now_ns(), self._writer_id, self._opened)
        path = layout.journal_path(self._dir, dataset, name, closed=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = open_for_write(path)
        try:
            writer = pa.ipc.new_stream(sink, schema)
            fsync_dir(path.parent)
        except BaseException:
            with contextlib.suppress(OSError, pa.ArrowException):
                sink.close()
            path.unlink(missing_ok=True)  # not even its schema was acknowledged
            raise
        seg = _OpenSegment(path, name, sink, writer, self._clock.monotonic())
        self._open[dataset] = seg
        return seg

    @property
    def open_rows(self) -> int:
        return sum(s.rows for s in self._open.values())


@dataclasses.dataclass
class SegmentRead:
    """What a segment holds: its valid batches, how many failed validation, and whether it
    ends in a torn (incomplete) message."""

    schema: pa.Schema | None
    batches: list[pa.RecordBatch]
    invalid: int = 0
    torn: bool = False

    def table(self) -> pa.Table | None:
        if self.schema is None:
            return None
        return pa.Table.from_batches(self.batches, schema=self.schema)


def read_batches(path: Path, *, validate: bool = True, skip: int = 0) -> SegmentRead | None:
    """Every complete message of a segment; with ``validate``, batches after the first
    ``skip`` that fail ``validate(full=True)`` are left out and counted. None if the file is
    gone."""
    try:
        source = pa.memory_map(str(path), "r")
    except FileNotFoundError:
        return None
    try:
        reader = pa.ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError):
        return SegmentRead(None, [])  # not even a schema was written: nothing acknowledged
    read = SegmentRead(reader.schema, [])
    position = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            read.torn = True
            break
        if validate and position >= skip:
            try:
                batch.validate(full=True)
            except pa.ArrowInvalid:
                read.invalid += 1
                position += 1
                continue
        read.batches.append(batch)
        position += 1
    return read


def read_segment(path: Path, *, validate: bool = True) -> pa.Table | None:
    """Every complete, valid batch of a segment; a torn tail and invalid batches are left
    out. None if the file is gone."""
    read = read_batches(path, validate=validate)
    if read is None:
        return None
    if read.torn and path.suffix == layout.CLOSED_SUFFIX:
        log.warning(
            "journal segment %s has a torn tail; keeping %d batches", path.name, len(read.batches)
        )
    return read.table()


def salvage_segment(path: Path, journal_dir: Path) -> tuple[pa.Table | None, int]:
    """Check a closed segment batch by batch. If some batches are invalid, rewrite the
    segment with the valid ones and move the original to ``journal/corrupt/<dataset>/``.
    Returns (the valid rows, or None if the file is gone; the number of invalid batches)."""
    read = read_batches(path)
    if read is None:
        return None, 0
    if not read.invalid:
        if read.torn:
            log.warning(
                "journal segment %s has a torn tail; keeping %d batches",
                path.name,
                len(read.batches),
            )
        return read.table(), 0
    assert read.schema is not None
    dataset = path.parent.name
    aside = journal_dir / CORRUPT_DIR / dataset / path.name
    tmp = path.with_name(f".{path.name}.salvage")
    try:
        sink = open_for_write(tmp)
        with sink, pa.ipc.new_stream(sink, read.schema) as writer:
            for batch in read.batches:
                writer.write_batch(batch)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, aside)
        os.replace(tmp, path)
        fsync_dir(aside.parent)
        fsync_dir(path.parent)
    except (OSError, pa.ArrowException) as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"could not set aside corrupt journal segment {path}: {exc}") from exc
    log.error(
        "journal segment %s had %d invalid batches: kept %d valid batches (%d rows); the "
        "original is in %s",
        path.name,
        read.invalid,
        len(read.batches),
        sum(b.num_rows for b in read.batches),
        aside,
    )
    return read.table(), read.invalid


def datasets(journal_dir: Path) -> list[str]:
    """Dataset directories of the journal (the corrupt segments' directory excluded)."""
    if not journal_dir.is_dir():
        return []
    return sorted(p.name for p in journal_dir.iterdir() if p.is_dir() and p.name != CORRUPT_DIR)


def closed_segments(journal_dir: Path, dataset: str) -> list[Path]:
    return sorted((journal_dir / dataset).glob(f"*{layout.CLOSED_SUFFIX}"))


def all_segments(journal_dir: Path, dataset: str) -> list[Path]:
    """Closed and open segments, oldest first (readers see unflushed data too)."""
    d = journal_dir / dataset
    return sorted([*d.glob(f"*{layout.CLOSED_SUFFIX}"), *d.glob(f"*{layout.OPEN_SUFFIX}")])
