"""The append-only journal: an event counts as accepted once it is here and fsync'd.

One Arrow IPC stream file per (dataset, segment). Appends for one delivery are written to
every touched segment and then fsync'd together, so the cost is one fsync per file per
delivery, not per event. A segment closes by size or age (renamed ``.open`` ->
``.arrows``, directory fsync'd); the flusher turns closed segments into Parquet. After a
crash, ``.open`` leftovers are closed on start, and a torn final message is discarded:
it was never acknowledged.
"""

from __future__ import annotations

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


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclasses.dataclass
class _OpenSegment:
    path: Path
    segment: str
    file: pa.NativeFile
    writer: pa.ipc.RecordBatchStreamWriter
    opened_mono: float
    bytes: int = 0
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
        self._opened = 0
        self.rows_written = 0
        self.bytes_written = 0
        self.fsyncs = 0
        self._dir.mkdir(parents=True, exist_ok=True)

    def recover(self) -> list[Path]:
        """Close leftovers of a previous run (``.open`` -> ``.arrows``); return them."""
        closed = []
        for path in sorted(self._dir.glob(f"*/*{layout.OPEN_SUFFIX}")):
            target = path.with_suffix(layout.CLOSED_SUFFIX)
            path.rename(target)
            closed.append(target)
            log.info("recovered journal segment %s", target.name)
        for ds in {p.parent for p in closed}:
            fsync_dir(ds)
        return closed

    def append(self, items: list[tuple[str, pa.RecordBatch]]) -> None:
        """Write and fsync one delivery; returns only when it is durable."""
        touched: dict[str, _OpenSegment] = {}
        acked: dict[str, tuple[int, int]] = {}
        try:
            for dataset, batch in items:
                if batch.num_rows == 0:
                    continue
                seg = self._segment_for(dataset, batch.schema)
                acked.setdefault(dataset, (seg.bytes, seg.rows))
                seg.writer.write_batch(batch)
                seg.rows += batch.num_rows
                touched[dataset] = seg
            for seg in touched.values():
                seg.file.flush()
                if self._fsync:
                    os.fsync(seg.file.fileno())
                    self.fsyncs += 1
        except (OSError, pa.ArrowException) as exc:
            for dataset, seg in touched.items():
                self._abandon(dataset, seg, acked[dataset][0])
            raise StorageError(f"journal append failed: {exc}") from exc
        for seg in touched.values():
            size = seg.file.tell()
            self.bytes_written += size - seg.bytes
            seg.bytes = size
        self.rows_written += sum(b.num_rows for _, b in items)
        self._roll(force=False)

    def _abandon(self, dataset: str, seg: _OpenSegment, acked_bytes: int) -> None:
        """After a failed append: cut the segment back to what was acknowledged and close
        it, so a retry of the same delivery cannot leave a second copy in the lake."""
        for closer in (seg.writer.close, seg.file.close):
            try:
                closer()
            except (OSError, pa.ArrowException):
                log.warning("closing a failed journal segment %s", seg.path.name)
        try:
            os.truncate(seg.path, acked_bytes)
            seg.path.rename(layout.journal_path(self._dir, dataset, seg.segment, closed=True))
        except OSError:
            log.exception("could not cut back journal segment %s", seg.path)
        self._open.pop(dataset, None)

    def roll(self) -> list[Path]:
        """Close every open segment now (shutdown, tests); return the closed paths."""
        return self._roll(force=True)

    def maybe_roll(self) -> list[Path]:
        return self._roll(force=False)

    def _roll(self, *, force: bool) -> list[Path]:
        now = self._clock.monotonic()
        closed = []
        for dataset, seg in list(self._open.items()):
            old = now - seg.opened_mono >= self._segment_seconds
            if force or old or seg.bytes >= self._segment_bytes:
                closed.append(self._close(dataset, seg))
        return closed

    def _close(self, dataset: str, seg: _OpenSegment) -> Path:
        seg.writer.close()
        seg.file.close()
        target = layout.journal_path(self._dir, dataset, seg.segment, closed=True)
        seg.path.rename(target)
        fsync_dir(target.parent)
        del self._open[dataset]
        return target

    def _segment_for(self, dataset: str, schema: pa.Schema) -> _OpenSegment:
        seg = self._open.get(dataset)
        if seg is not None:
            return seg
        self._opened += 1
        name = layout.segment_name(self._clock.now_ns(), self._writer_id, self._opened)
        path = layout.journal_path(self._dir, dataset, name, closed=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = pa.OSFile(str(path), "wb")
        writer = pa.ipc.new_stream(sink, schema)
        fsync_dir(path.parent)
        seg = _OpenSegment(path, name, sink, writer, self._clock.monotonic())
        self._open[dataset] = seg
        return seg

    @property
    def open_rows(self) -> int:
        return sum(s.rows for s in self._open.values())


def read_segment(path: Path) -> pa.Table | None:
    """Every complete batch of a segment; a torn tail is dropped. None if the file is gone."""
    try:
        source = pa.memory_map(str(path), "r")
    except FileNotFoundError:
        return None
    batches: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError):
        return None  # not even a schema was written: nothing was acknowledged
    schema = reader.schema
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            if path.suffix == layout.OPEN_SUFFIX:
                break  # a segment being written: its last message may be half there
            log.warning(
                "journal segment %s has a torn tail; keeping %d batches", path.name, len(batches)
            )
            break
    return pa.Table.from_batches(batches, schema=schema)


def closed_segments(journal_dir: Path, dataset: str) -> list[Path]:
    return sorted((journal_dir / dataset).glob(f"*{layout.CLOSED_SUFFIX}"))


def all_segments(journal_dir: Path, dataset: str) -> list[Path]:
    """Closed and open segments, oldest first (readers see unflushed data too)."""
    d = journal_dir / dataset
    return sorted([*d.glob(f"*{layout.CLOSED_SUFFIX}"), *d.glob(f"*{layout.OPEN_SUFFIX}")])
