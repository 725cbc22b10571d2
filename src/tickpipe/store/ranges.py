"""Ranges from the journal (not yet flushed) and the lake together, with no duplicate and
no hole: the base of the query layer (``query.py``), which owns the SQL.

Reading order is what makes the union exact while the flusher runs: journal segments
are read first, the lake is listed after. A segment the flusher deletes in between had
its Parquet files renamed into place before the deletion, so the later lake listing
sees them; a segment still present whose files are already in the lake is skipped for
those days.

Memory is bounded whatever is asked: DuckDB runs with ``memory_limit`` and spills sorts to
``<data>/duckdb_tmp``; long ranges are read in pages of bounded size (``pages.py``); the
``count`` and ``span`` methods let the API estimate a request's cost before it runs.
Journal segments are checked batch by batch (``validate(full=True)``, each batch once)
before DuckDB sees them: an invalid batch is left out, never read.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.datasets import DATASET_SCHEMAS
from tickpipe.errors import QueryError
from tickpipe.events import Kind
from tickpipe.store import layout
from tickpipe.store.journal import all_segments, read_batches
from tickpipe.store.rollup import ROLLUP, ROLLUP_SCHEMA

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
MAX_NS = 2**63 - 1
PageKey = tuple[int, str, str, str, int]
"""(ts_event, type, symbol, source, seq): where a row stands in the order ranges are read"""

INTERVALS: dict[str, int] = {
    "1s": 1,
    "5s": 5,
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "1d": 86_400,
}
NS = 1_000_000_000


def interval_ns(interval: str) -> int:
    try:
        return INTERVALS[interval] * NS
    except KeyError:
        raise QueryError(
            f"interval {interval!r} is not supported; use one of {', '.join(INTERVALS)}",
            code="bad_interval",
        ) from None


def retry_once_on_vanished_file(method: Callable[P, R]) -> Callable[P, R]:
    """The compactor may delete a file between listing and reading; listing again finds
    the compacted file that replaced it."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except duckdb.IOException:
            return method(*args, **kwargs)

    return wrapper


def clamp(ns: int) -> int:
    """Into int64 nanoseconds: whatever a caller passes cannot overflow a date or a scalar."""
    return min(max(int(ns), 0), MAX_NS)


class Ranges:
    """Rows of any dataset over a time range, journal and lake together; one in-memory
    DuckDB database, a fresh cursor per query."""

    def __init__(
        self,
        lake_dir: Path,
        journal_dir: Path,
        threads: int = 2,
        *,
        memory_limit: str = "512MB",
        spill_dir: Path | None = None,
    ) -> None:
        self._lake = lake_dir
        self._journal = journal_dir
        spill = spill_dir or journal_dir.parent / "duckdb_tmp"  # created when first needed
        self._db = duckdb.connect(
            ":memory:",
            config={
                "threads": threads,
                "memory_limit": memory_limit,
                "temp_directory": str(spill),
            },
        )
        self._checked: dict[Path, tuple[int, bool]] = {}
        """journal segment -> (batches already validated, whether any was invalid)"""

    def _con(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor per query over one in-memory database: journal tables registered
        on it are private to the query, and it may be consumed from any thread."""
        return self._db.cursor()

    def _journal_tables(
        self, dataset: str, start_ns: int, end_ns: int
    ) -> list[tuple[str, pa.Table]]:
        """(segment, rows in range) of every unflushed segment, open ones included."""
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        out = []
        for path in all_segments(self._journal, dataset):
            table = self._read_checked(path)
            if table is None or table.num_rows == 0:
                continue
            ts = table.column("ts_event")
            mask = pc.and_(pc.greater_equal(ts, start_ns), pc.less(ts, end_ns))
            out.append((layout.segment_of(path), table.filter(mask)))
        return out

    def _read_checked(self, path: Path) -> pa.Table | None:
        """A segment's valid batches; each batch is validated once, not on every query (an
        open segment grows: only its new batches are checked)."""
        done, had_invalid = self._checked.get(path, (0, False))
        read = read_batches(path, validate=True, skip=0 if had_invalid else done)
        if read is None:
            self._checked.pop(path, None)
            return None
        if read.invalid and not had_invalid:
            log.error(
                "journal segment %s has %d invalid batches; queries leave them out",
                path.name,
                read.invalid,
            )
        if len(self._checked) > 4096:
            self._checked = {p: v for p, v in self._checked.items() if p.exists()}
        self._checked[path] = (len(read.batches) + read.invalid, had_invalid or read.invalid > 0)
        return read.table()

    def span(self, dataset: str) -> tuple[int, int] | None:
        """[first, last] ns that may hold rows of ``dataset``: whole UTC days from the lake's
        partitions, exact times from the journal. None when nothing is stored. Cheap: no
        Parquet file is opened."""
        lows: list[int] = []
        highs: list[int] = []
        parts = layout.partitions(self._lake, dataset)
        if parts:
            first = dt.date.fromisoformat(parts[0].name[5:])
            last = dt.date.fromisoformat(parts[-1].name[5:])
            lows.append((first - dt.date(1970, 1, 1)).days * layout.NS_PER_DAY)
            highs.append(
                (last - dt.date(1970, 1, 1)).days * layout.NS_PER_DAY + layout.NS_PER_DAY - 1
            )
        for _, table in self._journal_tables(dataset, 0, MAX_NS):
            if table.num_rows:
                low, high = pc.min_max(table.column("ts_event")).values()
                lows.append(low.as_py())
                highs.append(high.as_py())
        if not lows:
            return None
        return min(lows), max(highs)

    @retry_once_on_vanished_file
    def count(self, dataset: str, symbols: list[str] | None, start_ns: int, end_ns: int) -> int:
        """Rows of ``dataset`` in [start, end) for ``symbols``: the cost estimate of a raw
        download (reads only the ts_event and symbol columns, pruned by row-group stats)."""
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        con = self._con()
        source, params = self._from_clause(con, dataset, start_ns, end_ns)
        if not source:
            return 0
        where = ["ts_event >= $start", "ts_event < $end"]
        if symbols is not None:
            where.append(f"symbol IN ({symbol_params(symbols, params)})")
        params.update(start=start_ns, end=end_ns)
        row = con.execute(
            f"SELECT count(*) FROM {source} WHERE {' AND '.join(where)}", params
        ).fetchone()
        return int(row[0]) if row else 0

    def _sources(
        self, dataset: str, start_ns: int, end_ns: int, journal_dataset: str | None = None
    ) -> tuple[list[str], pa.Table | None]:
        """Lake files of ``dataset`` and the journal rows of ``journal_dataset`` (default:
        the same) whose segment-days those files do not already hold."""
        journal_dataset = journal_dataset or dataset
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        schema = schema_of(journal_dataset)
        unflushed = self._journal_tables(journal_dataset, start_ns, end_ns)
        first = layout.day_of_ns(start_ns)
        last = layout.day_of_ns(max(end_ns - 1, start_ns))
        files = layout.lake_files(self._lake, dataset, first, last)
        in_lake: dict[str, set[int]] = {}
        for f in files:
            day = dt.date.fromisoformat(f.parent.name[5:])
            in_lake.setdefault(layout.segment_of(f), set()).add((day - dt.date(1970, 1, 1)).days)
        keep = []
        for segment, table in unflushed:
            if table.num_rows == 0:
                continue
            done = in_lake.get(segment)
            if done:
                days = pc.divide(table.column("ts_event"), layout.NS_PER_DAY)
                table = table.filter(pc.invert(pc.is_in(days, pa.array(sorted(done), pa.int64()))))
            if table.num_rows:
                keep.append(table)
        journal = pa.concat_tables(keep).cast(schema) if keep else None
        return [f.as_posix() for f in files], journal

    def _from_clause(
        self, con: duckdb.DuckDBPyConnection, dataset: str, start_ns: int, end_ns: int
    ) -> tuple[str, dict[str, object]]:
        files, journal = self._sources(dataset, start_ns, end_ns)
        columns = ", ".join(f'"{n}"' for n in schema_of(dataset).names)
        parts = []
        params: dict[str, object] = {}
        if files:
            parts.append(
                f"SELECT {columns} FROM read_parquet($files_{dataset}, union_by_name = true)"
            )
            params[f"files_{dataset}"] = files
        if journal is not None:
            con.register(f"journal_{dataset}", journal)
            parts.append(f"SELECT {columns} FROM journal_{dataset}")
        if not parts:
            return "", params
        return "(" + " UNION ALL ".join(parts) + ")", params

    def events_relation(
        self,
        dataset: str,
        symbols: list[str] | None,
        start_ns: int,
        end_ns: int,
        *,
        limit: int | None = None,
        after: tuple[int, str, str, int] | None = None,
        newest_first: bool = False,
    ) -> duckdb.DuckDBPyRelation | None:
        """Raw rows of one dataset in [start, end) ordered by (ts_event, symbol, source,
        seq); ``after`` resumes past a row (cursor paging). None when nothing is stored."""
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        con = self._con()
        source, params = self._from_clause(con, dataset, start_ns, end_ns)
        if not source:
            return None
        where = ["ts_event >= $start", "ts_event < $end"]
        if symbols is not None:
            where.append(f"symbol IN ({symbol_params(symbols, params)})")
        if after is not None:
            where.append(after_condition("", after, params))
        direction = "DESC" if newest_first else "ASC"
        sql = (
            f"SELECT * FROM {source} WHERE {' AND '.join(where)} "
            f"ORDER BY ts_event {direction}, symbol {direction}, source {direction}, seq {direction}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        params.update(start=start_ns, end=end_ns)
        return con.sql(sql, params=params)

    @retry_once_on_vanished_file
    def events(
        self,
        kind: Kind | str,
        symbols: list[str] | None,
        start_ns: int,
        end_ns: int,
        limit: int | None = None,
        *,
        after: tuple[int, str, str, int] | None = None,
        newest_first: bool = False,
    ) -> pa.Table:
        """Raw events of one dataset in [start, end), ordered by time, then symbol and seq."""
        dataset = str(kind.value if isinstance(kind, Kind) else kind)
        schema = schema_of(dataset)
        rel = self.events_relation(
            dataset, symbols, start_ns, end_ns, limit=limit, after=after, newest_first=newest_first
        )
        if rel is None:
            return schema.empty_table()
        return rel.to_arrow_table().cast(schema)

    @retry_once_on_vanished_file
    def last_trade_ns(self, symbols: list[str], start_ns: int, end_ns: int) -> int | None:
        """ts_event of the newest trade of ``symbols`` in [start, end), or None."""
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        con = self._con()
        source, params = self._from_clause(con, Kind.TRADE.value, start_ns, end_ns)
        if not source:
            return None
        params.update(start=start_ns, end=end_ns)
        row = con.execute(
            f"SELECT max(ts_event) FROM {source} WHERE ts_event >= $start AND ts_event < $end "
            f"AND symbol IN ({symbol_params(symbols, params)})",
            params,
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def trade_days(self, start_ns: int, end_ns: int) -> list[int]:
        """UTC days (since the epoch) in [start, end) that may hold trades: those with a
        lake partition, and those of unflushed journal trades. Cheap: no file opened."""
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        first = layout.day_of_ns(start_ns)
        last = layout.day_of_ns(max(end_ns - 1, start_ns))
        epoch = dt.date(1970, 1, 1)
        days = {
            (dt.date.fromisoformat(p.name[5:]) - epoch).days
            for p in layout.partitions(self._lake, Kind.TRADE.value, first, last)
        }
        for _, table in self._journal_tables(Kind.TRADE.value, start_ns, end_ns):
            if table.num_rows:
                found = pc.unique(pc.divide(table.column("ts_event"), layout.NS_PER_DAY))
                days.update(found.to_pylist())
        return sorted(days)

    def sql(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        return self._con().sql(sql, params=params or {}).to_arrow_table()


def after_condition(
    prefix: str, after: tuple[int, str, str, int], params: dict[str, object]
) -> str:
    """Rows strictly after ``after`` in (ts_event, symbol, source, seq) order (cursor paging)."""
    params.update(a_ts=after[0], a_sym=after[1], a_src=after[2], a_seq=after[3])
    ts, sym, src, seq = (f"{prefix}{c}" for c in ("ts_event", "symbol", "source", "seq"))
    return (
        f"({ts} > $a_ts OR ({ts} = $a_ts AND ({sym} > $a_sym OR ({sym} = $a_sym "
        f"AND ({src} > $a_src OR ({src} = $a_src AND {seq} > $a_seq))))))"
    )


def after_kind(dataset: str, after: PageKey, params: dict[str, object]) -> str:
    """Rows of ``dataset`` strictly after ``after`` in (ts_event, type, symbol, source,
    seq) order: a kind before the key's resumes at the next time, a kind after it at the
    same time."""
    ts, kind, symbol, source, seq = after
    if dataset < kind:
        params["a_ts"] = ts
        return "ts_event > $a_ts"
    if dataset > kind:
        params["a_ts"] = ts
        return "ts_event >= $a_ts"
    return after_condition("", (ts, symbol, source, seq), params)


def symbol_params(symbols: list[str], params: dict[str, object]) -> str:
    """``$s0, $s1 ...`` bound to ``symbols``: a literal IN list lets DuckDB prune row groups."""
    names = []
    for i, symbol in enumerate(symbols):
        params[f"s{i}"] = symbol
        names.append(f"$s{i}")
    return ", ".join(names) or "NULL"


def schema_of(dataset: str) -> pa.Schema:
    if dataset == ROLLUP:
        return ROLLUP_SCHEMA
    return DATASET_SCHEMAS[dataset]
