"""The query layer: it owns the SQL. Latest events from the hot store; ranges and bars from
the journal (not yet flushed) and the lake together, with no duplicate and no hole.

Reading order is what makes the union exact while the flusher runs: journal segments
are read first, the lake is listed after. A segment the flusher deletes in between had
its Parquet files renamed into place before the deletion, so the later lake listing
sees them; a segment still present whose files are already in the lake is skipped for
those days. Bars are aggregated in DuckDB, never in Python loops.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.errors import QueryError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store import layout
from tickpipe.store.hot import HotStore
from tickpipe.store.journal import all_segments, read_segment

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


class Query:
    def __init__(self, lake_dir: Path, journal_dir: Path, hot: HotStore, threads: int = 2) -> None:
        self._lake = lake_dir
        self._journal = journal_dir
        self.hot = hot
        self._db = duckdb.connect(":memory:", config={"threads": threads})
        self._local = threading.local()

    def _con(self) -> duckdb.DuckDBPyConnection:
        """One cursor per thread over one in-memory database (DuckDB's thread-safe pattern)."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._db.cursor()
        return con

    async def latest(self, kind: Kind, symbols: list[str], limit: int) -> pa.Table:
        parts = [await self.hot.latest(kind, s, limit) for s in symbols]
        return pa.concat_tables(parts) if parts else SCHEMAS[kind].empty_table()

    # ---- ranges: journal + lake -------------------------------------------------------

    def _journal_tables(
        self, dataset: str, start_ns: int, end_ns: int
    ) -> list[tuple[str, pa.Table]]:
        """(segment, rows in range) of every unflushed segment, open ones included."""
        out = []
        for path in all_segments(self._journal, dataset):
            table = read_segment(path)
            if table is None or table.num_rows == 0:
                continue
            ts = table.column("ts_event")
            mask = pc.and_(pc.greater_equal(ts, start_ns), pc.less(ts, end_ns))
            out.append((layout.segment_of(path), table.filter(mask)))
        return out

    def _sources(
        self, dataset: str, start_ns: int, end_ns: int
    ) -> tuple[list[str], pa.Table | None]:
        schema = _schema_of(dataset)
        unflushed = self._journal_tables(dataset, start_ns, end_ns)
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
        self, dataset: str, start_ns: int, end_ns: int
    ) -> tuple[str, dict[str, object]]:
        files, journal = self._sources(dataset, start_ns, end_ns)
        columns = ", ".join(f'"{n}"' for n in _schema_of(dataset).names)
        parts = []
        params: dict[str, object] = {}
        if files:
            parts.append(f"SELECT {columns} FROM read_parquet($files)")
            params["files"] = files
        if journal is not None:
            self._con().register("journal_rows", journal)
            parts.append(f"SELECT {columns} FROM journal_rows")
        if not parts:
            return "", params
        return " UNION ALL ".join(parts), params

    def events(
        self,
        kind: Kind | str,
        symbols: list[str],
        start_ns: int,
        end_ns: int,
        limit: int | None = None,
    ) -> pa.Table:
        """Raw events of one dataset in [start, end), ordered by time, then symbol and seq."""
        dataset = str(kind.value if isinstance(kind, Kind) else kind)
        source, params = self._from_clause(dataset, start_ns, end_ns)
        schema = _schema_of(dataset)
        if not source:
            return schema.empty_table()
        sql = (
            f"SELECT * FROM ({source}) WHERE symbol IN ({_symbol_params(symbols, params)}) "
            "AND ts_event >= $start AND ts_event < $end ORDER BY ts_event, symbol, seq"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        params.update(start=start_ns, end=end_ns)
        return self._con().sql(sql, params=params).to_arrow_table().cast(schema)

    def bars(self, symbols: list[str], start_ns: int, end_ns: int, interval: str) -> pa.Table:
        """OHLCV bars from trades: time (bucket start, ns), open, high, low, close, volume,
        trades, vwap; buckets aligned to the Unix epoch (1d bars are UTC days)."""
        step = interval_ns(interval)
        source, params = self._from_clause(Kind.TRADE.value, start_ns, end_ns)
        if not source:
            return _empty_bars()
        # open/close are the first/last trade by (ts_event, seq); one HUGEINT key orders
        # both, which DuckDB compares far faster than a (ts_event, seq) struct
        order = "ts_event::HUGEINT * 18446744073709551616 + seq"
        sql = f"""
            SELECT symbol, ts_event - (ts_event % {step}) AS time,
                   arg_min(price, {order}) AS open,
                   max(price) AS high, min(price) AS low,
                   arg_max(price, {order}) AS close,
                   sum(size) AS volume, count(*) AS trades,
                   sum(price * size) / nullif(sum(size), 0) AS vwap
            FROM ({source})
            WHERE symbol IN ({_symbol_params(symbols, params)})
              AND ts_event >= $start AND ts_event < $end
            GROUP BY ALL ORDER BY symbol, time
        """
        params.update(start=start_ns, end=end_ns)
        return self._con().sql(sql, params=params).to_arrow_table()

    def sql(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        return self._con().sql(sql, params=params or {}).to_arrow_table()


def _symbol_params(symbols: list[str], params: dict[str, object]) -> str:
    """``$s0, $s1 ...`` bound to ``symbols``: a literal IN list lets DuckDB prune row groups."""
    names = []
    for i, symbol in enumerate(symbols):
        params[f"s{i}"] = symbol
        names.append(f"$s{i}")
    return ", ".join(names) or "NULL"


def _schema_of(dataset: str) -> pa.Schema:
    from tickpipe.quality.stage import GAP_SCHEMA, GAPS, QUARANTINE, QUARANTINE_SCHEMA

    if dataset == QUARANTINE:
        return QUARANTINE_SCHEMA
    if dataset == GAPS:
        return GAP_SCHEMA
    return SCHEMAS[Kind(dataset)]


def _empty_bars() -> pa.Table:
    return pa.table(
        {
            "symbol": pa.array([], pa.string()),
            "time": pa.array([], pa.int64()),
            "open": pa.array([], pa.float64()),
            "high": pa.array([], pa.float64()),
            "low": pa.array([], pa.float64()),
            "close": pa.array([], pa.float64()),
            "volume": pa.array([], pa.float64()),
            "trades": pa.array([], pa.int64()),
            "vwap": pa.array([], pa.float64()),
        }
    )
