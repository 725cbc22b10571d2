"""Which rows the lake already holds: the backfill's exact duplicate check.

An import that is repeated without its checkpoint, or a file Sierra rewrote, hands over
rows the lake may hold already: the same (source, symbol, seq). Asking DuckDB for every
delivery read every lake file of the days it spans, although usually none can hold such a
row (a first import; the next chunk of the same file, whose seqs all follow the lake's).
A Parquet footer gives, per row group, the range of source, symbol and seq: a file none of
whose row groups overlaps the delivery's ranges is never read, and a delivery no file can
overlap costs no query at all. Footers are read once per file: lake files are written once,
by rename; one rewritten (a re-flush after a crash) has a new size or mtime.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tickpipe.store import layout

log = logging.getLogger(__name__)

KEY_COLUMNS = ("source", "symbol", "seq")

Range = tuple[Any, Any] | None
"""(min, max) of a column in a row group; None when the footer does not say"""


@dataclasses.dataclass(frozen=True, slots=True)
class _Footer:
    stamp: tuple[int, int]
    """(size, mtime ns) of the file the ranges were read from"""
    groups: list[tuple[Range, Range, Range]]
    """per non-empty row group: source, symbol and seq ranges"""


@dataclasses.dataclass(frozen=True, slots=True)
class _Keys:
    """A batch's (symbol, seq) keys as integers: symbol codes into ``symbols``."""

    symbols: list[str]
    codes: npt.NDArray[np.int64]
    seqs: npt.NDArray[np.int64]

    @classmethod
    def of(cls, batch: pa.RecordBatch) -> _Keys:
        column = batch.column("symbol")
        seqs = np.asarray(batch.column("seq").to_numpy(zero_copy_only=False), dtype=np.int64)
        first = column[0].as_py()
        if column.null_count == 0 and pc.all(pc.equal(column, first)).as_py():
            return cls([first], np.zeros(batch.num_rows, np.int64), seqs)  # ~1/4 of unique()
        symbols = sorted(s for s in pc.unique(column).to_pylist() if s is not None)
        codes = pc.fill_null(pc.index_in(column, value_set=pa.array(symbols)), -1)
        return cls(symbols, np.asarray(codes.to_numpy(), dtype=np.int64), seqs)

    def ranges(self, source: str) -> tuple[Range, Range, Range]:
        return (
            (source, source),
            (self.symbols[0], self.symbols[-1]),
            (int(self.seqs.min()), int(self.seqs.max())),
        )


class HeldRows:
    """The lake's keys as far as a delivery needs them; one per import run."""

    def __init__(self, lake_dir: Path) -> None:
        self._lake = lake_dir
        self._footers: dict[Path, _Footer] = {}
        self.lake_reads = 0
        """deliveries for which some lake file could hold a row and was read"""

    def drop_held(self, dataset: str, source: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of ``batch`` whose (source, symbol, seq) the lake does not hold. A
        duplicate has the same ts_event, so only the days the batch spans are looked at."""
        if batch.num_rows == 0:
            return batch
        keys = _Keys.of(batch)
        if not keys.symbols:  # no row has a symbol the lake could hold
            return batch
        wanted = keys.ranges(source)
        files = [f for f in self._files(dataset, batch) if self._may_hold(f, wanted)]
        if not files:
            return batch
        self.lake_reads += 1
        codes, seqs = _held_keys(files, source, keys)
        if seqs.size == 0:
            return batch
        return batch.filter(pa.array(_not_held(keys, codes, seqs)))

    def _files(self, dataset: str, batch: pa.RecordBatch) -> list[Path]:
        span = pc.min_max(batch.column("ts_event"))
        first: dt.date = layout.day_of_ns(span["min"].as_py())
        last: dt.date = layout.day_of_ns(span["max"].as_py())
        return layout.lake_files(self._lake, dataset, first, last)

    def _may_hold(self, path: Path, wanted: tuple[Range, Range, Range]) -> bool:
        return any(
            all(_overlap(have, want) for have, want in zip(group, wanted, strict=True))
            for group in self._footer(path).groups
        )

    def _footer(self, path: Path) -> _Footer:
        stat = path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        footer = self._footers.get(path)
        if footer is None or footer.stamp != stamp:
            footer = _Footer(stamp, _row_group_ranges(pq.read_metadata(path)))
            self._footers[path] = footer
        return footer


def _row_group_ranges(meta: pq.FileMetaData) -> list[tuple[Range, Range, Range]]:
    where = {name: i for i, name in enumerate(meta.schema.names)}
    groups = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if group.num_rows:
            source, symbol, seq = (_range(group, where.get(c)) for c in KEY_COLUMNS)
            groups.append((source, symbol, seq))
    return groups


def _range(group: pq.RowGroupMetaData, column: int | None) -> Range:
    if column is None:
        return None
    stats = group.column(column).statistics
    if stats is None or not stats.has_min_max:
        return None
    return (stats.min, stats.max)


def _overlap(have: Range, want: Range) -> bool:
    """Whether two ranges can share a value; an unknown one (or of another type) can."""
    if have is None or want is None or type(have[0]) is not type(want[0]):
        return True
    return bool(have[0] <= want[1] and want[0] <= have[1])


def _held_keys(
    files: list[Path], source: str, keys: _Keys
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(symbol code, seq) of the lake rows with the batch's source, symbols and seq range;
    codes come from DuckDB, so no string column is built."""
    import duckdb  # only an import that meets rows of the lake pays for loading it

    with duckdb.connect() as con:
        held = con.sql(
            "SELECT list_position($symbols, symbol) - 1 AS code, seq "
            "FROM read_parquet($files, union_by_name = true) "
            "WHERE source = $source AND seq BETWEEN $lo AND $hi "
            "AND symbol BETWEEN $first AND $last AND list_contains($symbols, symbol)",
            params={
                "files": [f.as_posix() for f in files],
                "source": source,
                "symbols": keys.symbols,
                "lo": int(keys.seqs.min()),
                "hi": int(keys.seqs.max()),
                "first": keys.symbols[0],
                "last": keys.symbols[-1],
            },
        ).fetchnumpy()
    return np.asarray(held["code"], np.int64), np.asarray(held["seq"], np.int64)


def _not_held(
    keys: _Keys, codes: npt.NDArray[np.int64], seqs: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Per row of the batch: its (symbol, seq) is not among the held ones. Both become one
    integer, code x span + seq - lo, all in [0, symbols x span): numpy's isin then uses a
    lookup table when that range is small (an import's chunk: one symbol, seqs in a row)."""
    lo = int(keys.seqs.min())
    span = int(keys.seqs.max()) - lo + 1
    if len(keys.symbols) * span >= 2**62:  # not one integer: compare per symbol
        keep = np.ones(keys.seqs.size, dtype=bool)
        for code in range(len(keys.symbols)):
            mine = keys.codes == code
            keep[mine] = ~np.isin(keys.seqs[mine], seqs[codes == code])
        return keep
    batch_keys = np.where(keys.codes >= 0, keys.codes * span + (keys.seqs - lo), -1)
    return ~np.isin(batch_keys, codes * span + (seqs - lo))
