"""The Parquet lake writer: closed journal segments become zstd Parquet, then are deleted.

Each segment is sorted by (symbol, ts_event), split by UTC date, and written to
``lake/<dataset>/date=YYYY-MM-DD/<segment>.parquet`` through a temporary file and an
atomic rename; only after every file is in place is the segment removed. A crash at any
point leaves either the segment (flushed again, same names: overwrite, no duplicate) or
the files (and no segment). Timestamps and sequence numbers use delta encoding, sums that
are nearly all distinct plain encoding, and the rest dictionary encoding, which is what
gets a trade to a few bytes.

A full disk is a state: a failed write removes its temporary file, the segment stays in the
journal for the next pass, and the log says so when it starts and when it ends (not every
second). Segments are checked batch by batch before they are sorted (``salvage_segment``):
an invalid batch is never handed to a sort or a Parquet writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tickpipe.errors import StorageError
from tickpipe.store import layout
from tickpipe.store.journal import (
    closed_segments,
    datasets,
    fsync_dir,
    open_for_write,
    salvage_segment,
)
from tickpipe.store.rollup import ROLLUP, rollup_table

log = logging.getLogger(__name__)

DELTA_COLUMNS = (
    "ts_event",
    "ts_recv",
    "seq",
    "start_ns",
    "end_ns",
    "first_ts",
    "first_seq",
    "last_ts",
    "last_seq",
)
"""sorted or nearly sorted integers: times, sequence numbers, and the rollups' first/last
trade keys (dictionary-encoded, those made a 6-symbol session's rollups 2.4 bytes per trade;
delta-packed, 1.6, measured)"""
PLAIN_COLUMNS = ("pv",)
"""sums of price x size: nearly every value distinct, so a dictionary only adds its indices
(0.46 -> 0.33 bytes per trade in the rollups of a 6-symbol session)"""
ROW_GROUP_ROWS = 128 * 1024


def write_parquet(table: pa.Table, path: Path, zstd_level: int) -> None:
    """Write atomically: temp file, fsync, rename, directory fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    encodings = {c: "DELTA_BINARY_PACKED" for c in DELTA_COLUMNS if c in table.column_names}
    encodings |= {c: "PLAIN" for c in PLAIN_COLUMNS if c in table.column_names}
    sorting = [
        pq.SortingColumn(table.column_names.index(c))
        for c in ("symbol", "ts_event")
        if c in table.column_names
    ]
    try:
        with open_for_write(tmp) as sink:
            pq.write_table(
                table,
                sink,
                compression="zstd",
                compression_level=zstd_level,
                use_dictionary=[c for c in table.column_names if c not in encodings],
                column_encoding=encodings,
                row_group_size=ROW_GROUP_ROWS,
                sorting_columns=sorting or None,
                write_statistics=True,
                data_page_version="2.0",
            )
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written file must not hold the space it took
        raise
    fsync_dir(path.parent)


SORT_KEYS = ("symbol", "ts_event", "seq")


def sort_for_lake(table: pa.Table) -> pa.Table:
    """Rows in (symbol, ts_event, seq) order. A segment from one file import or one
    symbol's feed usually is in that order already: checking costs ~5 ms a million rows,
    the stable sort ~125 ms, and it would not move a row."""
    keys = [c for c in SORT_KEYS if c in table.column_names]
    if not keys or in_order(table, keys):
        return table
    return table.sort_by([(c, "ascending") for c in keys])


def in_order(table: pa.Table, keys: list[str]) -> bool:
    """Whether every row is <= the next by ``keys`` (nulls count as out of order)."""
    if table.num_rows < 2:
        return True
    ordered: npt.NDArray[np.bool_] | None = None
    for key in reversed(keys):  # row <= next: less on this key, or equal and ordered after
        column = table.column(key)
        if _constant(column):  # equal all along: the order is the later keys'
            continue
        less, equal = _next_compared(column)
        ordered = less | equal if ordered is None else less | (equal & ordered)
    return ordered is None or bool(ordered.all())


def _constant(column: pa.ChunkedArray) -> bool:
    """One value all along (one symbol, one source): a compare with it, ~1/4 of a sort key's
    compare with the next row."""
    if column.null_count or not pa.types.is_string(column.type):
        return False
    return bool(pc.all(pc.equal(column, column[0])).as_py())


def _next_compared(
    column: pa.ChunkedArray,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(row < next, row == next) for every row but the last."""
    if pa.types.is_integer(column.type) and column.null_count == 0:
        values = column.to_numpy()
        return values[:-1] < values[1:], values[:-1] == values[1:]
    before, after = column.slice(0, len(column) - 1), column.slice(1)
    return _as_bools(pc.less(before, after)), _as_bools(pc.equal(before, after))


def _as_bools(values: pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(values, False).to_numpy(), dtype=bool)


def split_by_day(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """(days since epoch, rows of that UTC day), rows keeping their order; slices without
    a copy when the days come in order (a segment sorted by time)."""
    ts = table.column("ts_event").to_numpy()
    days = ts // layout.NS_PER_DAY
    first, last = int(days.min()), int(days.max())
    if first == last:
        return [(first, table)]
    if bool(np.all(days[1:] >= days[:-1])):
        bounds = np.flatnonzero(days[1:] != days[:-1]) + 1
        starts = [0, *bounds.tolist()]
        ends = [*bounds.tolist(), table.num_rows]
        return [(int(days[a]), table.slice(a, b - a)) for a, b in zip(starts, ends, strict=True)]
    out = []
    for day in np.unique(days):
        out.append((int(day), table.filter(pc.equal(pa.array(days), day))))
    return out


class LakeWriter:
    def __init__(self, lake_dir: Path, journal_dir: Path, zstd_level: int) -> None:
        self._lake = lake_dir
        self._journal = journal_dir
        self._zstd = zstd_level
        self.files_written = 0
        self.rows_written = 0
        self.segments_flushed = 0
        self.errors = 0
        self.last_error: str | None = None
        self.blocked_since: float | None = None
        """wall time since which flushing fails (disk full...), else None"""
        self.corrupt_segments = 0
        self.corrupt_batches = 0

    def flush_segment(self, dataset: str, path: Path) -> int:
        """Turn one closed segment into lake files and delete it; returns rows written."""
        segment = layout.segment_of(path)
        rows = 0
        try:
            table, invalid = salvage_segment(path, self._journal)
            if invalid:
                self.corrupt_segments += 1
                self.corrupt_batches += invalid
            if table is not None and table.num_rows:
                table = sort_for_lake(table)
                if dataset == "trade":  # the rollup first: see rollup.py
                    self._write_days(ROLLUP, segment, sort_for_lake(rollup_table(table)))
                for day, part in split_by_day(table):
                    target = layout.lake_file(
                        self._lake, dataset, layout.day_of_ns(day * layout.NS_PER_DAY), segment
                    )
                    write_parquet(part, target, self._zstd)
                    self.files_written += 1
                    rows += part.num_rows
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"flushing {path} failed: {exc}") from exc
        self.rows_written += rows
        self.segments_flushed += 1
        return rows

    def _write_days(self, dataset: str, segment: str, table: pa.Table) -> None:
        for day, part in split_by_day(table):
            target = layout.lake_file(
                self._lake, dataset, layout.day_of_ns(day * layout.NS_PER_DAY), segment
            )
            write_parquet(part, target, self._zstd)

    def flush_closed(self, only: str | None = None) -> int:
        """Flush every closed segment of every dataset (or ``only`` this one), oldest
        first. A storage failure ends the pass and is kept as state (``blocked_since``,
        ``last_error``), logged when it starts and when it clears; the segment is flushed
        again next time."""
        rows = 0
        try:
            for dataset in datasets(self._journal) if only is None else [only]:
                for path in closed_segments(self._journal, dataset):
                    rows += self.flush_segment(dataset, path)
        except StorageError as exc:
            self.errors += 1
            self.last_error = str(exc)
            if self.blocked_since is None:
                self.blocked_since = time.time()
                log.error("lake flush fails (%s); the journal keeps the data until it works", exc)
            return rows
        if self.blocked_since is not None:
            log.warning("lake flush works again after %.1fs", time.time() - self.blocked_since)
            self.blocked_since = None
            self.last_error = None
        return rows

    def lake_bytes(self) -> int:
        if not self._lake.is_dir():
            return 0
        total = 0
        for p in self._lake.rglob(f"*{layout.LAKE_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):  # compacted away meanwhile
                total += p.stat().st_size
        return total
