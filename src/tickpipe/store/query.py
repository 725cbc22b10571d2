"""The query layer: it owns the SQL. Latest events from the hot store; ranges and bars from
the journal (not yet flushed) and the lake together, with no duplicate and no hole.

Reading order is what makes the union exact while the flusher runs: journal segments
are read first, the lake is listed after. A segment the flusher deletes in between had
its Parquet files renamed into place before the deletion, so the later lake listing
sees them; a segment still present whose files are already in the lake is skipped for
those days. Bars are aggregated in DuckDB, never in Python loops.

Memory is bounded whatever is asked: DuckDB runs with ``memory_limit`` and spills sorts to
``<data>/duckdb_tmp``; the ``*_reader`` methods stream record batches; the ``count_*``
and ``span`` methods let the API estimate a request's cost before it runs. Journal
segments are checked batch by batch (``validate(full=True)``, each batch once) before
DuckDB sees them: an invalid batch is left out, never read.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.datasets import DATASET_SCHEMAS
from tickpipe.errors import QueryError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store import layout
from tickpipe.store.hot import HotStore
from tickpipe.store.journal import all_segments, read_batches
from tickpipe.store.rollup import BARS_SCHEMA, ROLLUP, ROLLUP_SCHEMA, SECOND, merge_sql, partial_sql

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
MAX_NS = 2**63 - 1

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


def _retry_once_on_vanished_file(method: Callable[P, R]) -> Callable[P, R]:
    """The compactor may delete a file between listing and reading; listing again finds
    the compacted file that replaced it."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except duckdb.IOException:
            return method(*args, **kwargs)

    return wrapper


def _clamp(ns: int) -> int:
    """Into int64 nanoseconds: whatever a caller passes cannot overflow a date or a scalar."""
    return min(max(int(ns), 0), MAX_NS)


class Query:
    def __init__(
        self,
        lake_dir: Path,
        journal_dir: Path,
        hot: HotStore,
        threads: int = 2,
        *,
        memory_limit: str = "512MB",
        spill_dir: Path | None = None,
    ) -> None:
        self._lake = lake_dir
        self._journal = journal_dir
        self.hot = hot
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

    async def latest(self, kind: Kind, symbols: list[str], limit: int) -> pa.Table:
        parts = [await self.hot.latest(kind, s, limit) for s in symbols]
        return pa.concat_tables(parts) if parts else SCHEMAS[kind].empty_table()

    # ---- ranges: journal + lake -------------------------------------------------------

    def _journal_tables(
        self, dataset: str, start_ns: int, end_ns: int
    ) -> list[tuple[str, pa.Table]]:
        """(segment, rows in range) of every unflushed segment, open ones included."""
        start_ns, end_ns = _clamp(start_ns), _clamp(end_ns)
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

    @_retry_once_on_vanished_file
    def count(self, dataset: str, symbols: list[str] | None, start_ns: int, end_ns: int) -> int:
        """Rows of ``dataset`` in [start, end) for ``symbols``: the cost estimate of a raw
        download (reads only the ts_event and symbol columns, pruned by row-group stats)."""
        start_ns, end_ns = _clamp(start_ns), _clamp(end_ns)
        con = self._con()
        source, params = self._from_clause(con, dataset, start_ns, end_ns)
        if not source:
            return 0
        where = ["ts_event >= $start", "ts_event < $end"]
        if symbols is not None:
            where.append(f"symbol IN ({_symbol_params(symbols, params)})")
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
        start_ns, end_ns = _clamp(start_ns), _clamp(end_ns)
        schema = _schema_of(journal_dataset)
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
        columns = ", ".join(f'"{n}"' for n in _schema_of(dataset).names)
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
        start_ns, end_ns = _clamp(start_ns), _clamp(end_ns)
        con = self._con()
        source, params = self._from_clause(con, dataset, start_ns, end_ns)
        if not source:
            return None
        where = ["ts_event >= $start", "ts_event < $end"]
        if symbols is not None:
            where.append(f"symbol IN ({_symbol_params(symbols, params)})")
        if after is not None:
            where.append(_after_condition("", after, params))
        direction = "DESC" if newest_first else "ASC"
        sql = (
            f"SELECT * FROM {source} WHERE {' AND '.join(where)} "
            f"ORDER BY ts_event {direction}, symbol {direction}, source {direction}, seq {direction}"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        params.update(start=start_ns, end=end_ns)
        return con.sql(sql, params=params)

    @_retry_once_on_vanished_file
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
        schema = _schema_of(dataset)
        rel = self.events_relation(
            dataset, symbols, start_ns, end_ns, limit=limit, after=after, newest_first=newest_first
        )
        if rel is None:
            return schema.empty_table()
        return rel.to_arrow_table().cast(schema)

    @_retry_once_on_vanished_file
    def bars(
        self, symbols: list[str], start_ns: int, end_ns: int, interval: str, *, fill: bool = False
    ) -> pa.Table:
        """OHLCV bars from trades: time (bucket start, ns), open, high, low, close, volume,
        trades, vwap; buckets aligned to the Unix epoch (1d bars are UTC days). With
        ``fill``, empty buckets after a symbol's first bar carry the previous close with
        zero volume and zero trades, up to the last bar that has trades: never past the
        last event, so never into the future.

        Whole seconds come from the 1 s rollups in the lake (``rollup.py``) plus journal
        trades not yet rolled up; the partial seconds at either end of the range come from
        raw trades. Open and close are the first and last trade by (ts_event, seq)."""
        built = self._bars_sql(symbols, start_ns, end_ns, interval, fill=fill)
        if built is None:
            return _empty_bars()
        con, sql, params = built
        return con.sql(sql, params=params).to_arrow_table().cast(BARS_SCHEMA)

    def bars_reader(
        self,
        symbols: list[str],
        start_ns: int,
        end_ns: int,
        interval: str,
        *,
        fill: bool = False,
        batch_rows: int = 65_536,
    ) -> pa.RecordBatchReader | None:
        """``bars`` as a stream of record batches (downloads: bounded memory)."""
        built = self._bars_sql(symbols, start_ns, end_ns, interval, fill=fill)
        if built is None:
            return None
        con, sql, params = built
        return _cast_reader(con.sql(sql, params=params).to_arrow_reader(batch_rows), BARS_SCHEMA)

    def _bars_sql(
        self, symbols: list[str], start_ns: int, end_ns: int, interval: str, *, fill: bool
    ) -> tuple[duckdb.DuckDBPyConnection, str, dict[str, object]] | None:
        step = interval_ns(interval)
        start_ns, end_ns = _clamp(start_ns), _clamp(end_ns)
        con = self._con()
        inner_start = min(-(-start_ns // SECOND) * SECOND, MAX_NS // SECOND * SECOND)
        inner_end = max(end_ns // SECOND * SECOND, inner_start)
        params: dict[str, object] = {}
        in_symbols = _symbol_params(symbols, params)
        parts: list[str] = []
        if inner_end > inner_start:
            files, journal = self._sources(
                ROLLUP, inner_start, inner_end, journal_dataset=Kind.TRADE.value
            )
            if files:
                params["rollup_files"] = files
                parts.append(
                    f"SELECT {', '.join(ROLLUP_SCHEMA.names)} FROM read_parquet($rollup_files) "
                    f"WHERE symbol IN ({in_symbols}) AND ts_event >= $inner_start AND ts_event < $inner_end"
                )
            if journal is not None:
                con.register("journal_trades", journal)
                parts.append(
                    partial_sql(
                        f"(SELECT * FROM journal_trades WHERE symbol IN ({in_symbols}) "
                        "AND ts_event >= $inner_start AND ts_event < $inner_end)"
                    )
                )
        for lo, hi in ((start_ns, min(inner_start, end_ns)), (max(inner_end, start_ns), end_ns)):
            if hi <= lo:
                continue
            source, more = self._from_clause(con, Kind.TRADE.value, lo, hi)
            if not source:
                continue
            name = f"edge_{len(parts)}"
            con.register(
                name,
                con.sql(f"SELECT * FROM {source}", params=more)
                .filter(f"ts_event >= {lo} AND ts_event < {hi}")
                .to_arrow_table(),
            )
            parts.append(partial_sql(f"(SELECT * FROM {name} WHERE symbol IN ({in_symbols}))"))
        if not parts:
            return None
        params.update(inner_start=inner_start, inner_end=inner_end)
        sql = merge_sql("(" + " UNION ALL ".join(parts) + ")", step)
        if fill:
            range_last = (end_ns - 1) - ((end_ns - 1) % step)
            sql = f"""
                WITH b AS ({sql}),
                firsts AS (SELECT symbol, min(time) AS first FROM b GROUP BY symbol),
                lasts AS (SELECT least(max(time), {range_last}) AS last FROM b),
                grid AS (
                    SELECT symbol, unnest(range(first, (SELECT last FROM lasts) + 1, {step})) AS time
                    FROM firsts
                ),
                joined AS (
                    SELECT g.symbol, g.time, b.open, b.high, b.low, b.close, b.volume, b.trades, b.vwap,
                           last_value(b.close IGNORE NULLS) OVER (
                               PARTITION BY g.symbol ORDER BY g.time
                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS carried
                    FROM grid g LEFT JOIN b USING (symbol, time)
                )
                SELECT symbol, time, coalesce(open, carried) AS open, coalesce(high, carried) AS high,
                       coalesce(low, carried) AS low, coalesce(close, carried) AS close,
                       coalesce(volume, 0) AS volume, coalesce(trades, 0) AS trades,
                       coalesce(vwap, carried) AS vwap
                FROM joined
            """
        return con, f"SELECT * FROM ({sql}) ORDER BY symbol, time", params

    @_retry_once_on_vanished_file
    def trades_with_quotes(
        self,
        symbols: list[str],
        start_ns: int,
        end_ns: int,
        *,
        lookback_ns: int = 3600 * NS,
        limit: int | None = None,
        after: tuple[int, str, str, int] | None = None,
    ) -> pa.Table:
        """Each trade with the bid and ask prevailing at its time (an as-of join in DuckDB);
        quotes up to ``lookback_ns`` before ``start`` count as prevailing."""
        built = self._asof_sql(symbols, start_ns, end_ns, lookback_ns, limit, after)
        if built is None:
            return _TRADES_ASOF_SCHEMA.empty_table()
        con, sql, params = built
        return con.sql(sql, params=params).to_arrow_table().cast(_TRADES_ASOF_SCHEMA)

    def trades_with_quotes_reader(
        self, symbols: list[str], start_ns: int, end_ns: int, *, batch_rows: int = 65_536
    ) -> pa.RecordBatchReader | None:
        """``trades_with_quotes`` as a stream of record batches (downloads)."""
        built = self._asof_sql(symbols, start_ns, end_ns, 3600 * NS, None, None)
        if built is None:
            return None
        con, sql, params = built
        reader = con.sql(sql, params=params).to_arrow_reader(batch_rows)
        return _cast_reader(reader, _TRADES_ASOF_SCHEMA)

    def _asof_sql(
        self,
        symbols: list[str],
        start_ns: int,
        end_ns: int,
        lookback_ns: int,
        limit: int | None,
        after: tuple[int, str, str, int] | None,
    ) -> tuple[duckdb.DuckDBPyConnection, str, dict[str, object]] | None:
        start_ns, end_ns = _clamp(start_ns), _clamp(end_ns)
        q_start = _clamp(start_ns - lookback_ns)
        con = self._con()
        trades, params = self._from_clause(con, Kind.TRADE.value, start_ns, end_ns)
        if not trades:
            return None
        quotes, qparams = self._from_clause(con, Kind.QUOTE.value, q_start, end_ns)
        params.update(qparams)
        where = [
            "t.ts_event >= $start",
            "t.ts_event < $end",
            f"t.symbol IN ({_symbol_params(symbols, params)})",
        ]
        if after is not None:
            where.append(_after_condition("t.", after, params))
        if quotes:
            join = (
                f"ASOF LEFT JOIN (SELECT symbol, ts_event, bid, bid_size, ask, ask_size FROM {quotes} "
                "WHERE ts_event >= $q_start AND ts_event < $end) q "
                "ON t.symbol = q.symbol AND t.ts_event >= q.ts_event"
            )
            cols = "q.bid, q.bid_size, q.ask, q.ask_size"
            params["q_start"] = q_start
        else:
            join = ""
            cols = "NULL::DOUBLE AS bid, NULL::DOUBLE AS bid_size, NULL::DOUBLE AS ask, NULL::DOUBLE AS ask_size"
        sql = (
            f"SELECT t.*, {cols} FROM {trades} t {join} WHERE {' AND '.join(where)} "
            "ORDER BY t.ts_event, t.symbol, t.source, t.seq"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        params.update(start=start_ns, end=end_ns)
        return con, sql, params

    def replay_reader(
        self,
        datasets: list[str],
        symbols: list[str],
        start_ns: int,
        end_ns: int,
        batch_rows: int = 10_000,
    ) -> pa.RecordBatchReader | None:
        """(ts_event, line) in (ts_event, type, symbol, source, seq) order across datasets,
        ``line`` each event as a JSON object with its ``type``; JSON built by DuckDB."""
        start_ns, end_ns = _clamp(start_ns), _clamp(end_ns)
        con = self._con()
        parts: list[str] = []
        params: dict[str, object] = {"start": start_ns, "end": end_ns}
        in_list = _symbol_params(symbols, params)
        for dataset in datasets:
            source, more = self._from_clause(con, dataset, start_ns, end_ns)
            if not source:
                continue
            params.update(more)
            parts.append(
                f"SELECT ts_event, '{dataset}' AS type, symbol, source, seq, to_json(t) AS line "
                f"FROM (SELECT '{dataset}' AS type, * FROM {source} "
                f"WHERE ts_event >= $start AND ts_event < $end AND symbol IN ({in_list})) t"
            )
        if not parts:
            return None
        sql = (
            "SELECT ts_event, line FROM (" + " UNION ALL ".join(parts) + ") "
            "ORDER BY ts_event, type, symbol, source, seq"
        )
        return con.sql(sql, params=params).to_arrow_reader(batch_rows)

    def sql(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        return self._con().sql(sql, params=params or {}).to_arrow_table()


def _after_condition(
    prefix: str, after: tuple[int, str, str, int], params: dict[str, object]
) -> str:
    """Rows strictly after ``after`` in (ts_event, symbol, source, seq) order (cursor paging)."""
    params.update(a_ts=after[0], a_sym=after[1], a_src=after[2], a_seq=after[3])
    ts, sym, src, seq = (f"{prefix}{c}" for c in ("ts_event", "symbol", "source", "seq"))
    return (
        f"({ts} > $a_ts OR ({ts} = $a_ts AND ({sym} > $a_sym OR ({sym} = $a_sym "
        f"AND ({src} > $a_src OR ({src} = $a_src AND {seq} > $a_seq))))))"
    )


def _symbol_params(symbols: list[str], params: dict[str, object]) -> str:
    """``$s0, $s1 ...`` bound to ``symbols``: a literal IN list lets DuckDB prune row groups."""
    names = []
    for i, symbol in enumerate(symbols):
        params[f"s{i}"] = symbol
        names.append(f"$s{i}")
    return ", ".join(names) or "NULL"


def _schema_of(dataset: str) -> pa.Schema:
    if dataset == ROLLUP:
        return ROLLUP_SCHEMA
    return DATASET_SCHEMAS[dataset]


_TRADES_ASOF_SCHEMA = pa.schema(
    [*SCHEMAS[Kind.TRADE]]
    + [pa.field(n, pa.float64()) for n in ("bid", "bid_size", "ask", "ask_size")]
)


def _empty_bars() -> pa.Table:
    return BARS_SCHEMA.empty_table()


def _cast_reader(reader: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    """DuckDB's batches under the promised schema (its sum() is DECIMAL/HUGEINT-free here,
    but nullability and int widths may differ), still streaming."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield pa.RecordBatch.from_arrays(
                [batch.column(f.name).cast(f.type) for f in schema], schema=schema
            )

    return pa.RecordBatchReader.from_batches(schema, batches())
