"""The query layer: it owns the SQL. Latest events from the hot store; ranges, bars,
as-of joins and replay pages from the journal and the lake together (``ranges.py``,
``bars.py``, ``asof.py``); long ranges read page by page (``pages.py``). Bars are
aggregated in DuckDB, never in Python loops.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from tickpipe.events import SCHEMAS, Kind
from tickpipe.store.asof import TRADES_ASOF_SCHEMA, AsofQueries
from tickpipe.store.bars import BarQueries
from tickpipe.store.hot import HotStore
from tickpipe.store.ranges import (
    INTERVALS,
    MAX_NS,
    NS,
    PageKey,
    after_kind,
    clamp,
    interval_ns,
    retry_once_on_vanished_file,
    symbol_params,
)
from tickpipe.store.rollup import BARS_SCHEMA

__all__ = ["INTERVALS", "MAX_NS", "NS", "PageKey", "Query", "interval_ns"]


class Query(BarQueries, AsofQueries):
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
        super().__init__(
            lake_dir, journal_dir, threads, memory_limit=memory_limit, spill_dir=spill_dir
        )
        self.hot = hot

    async def latest(self, kind: Kind, symbols: list[str], limit: int) -> pa.Table:
        parts = [await self.hot.latest(kind, s, limit) for s in symbols]
        return pa.concat_tables(parts) if parts else SCHEMAS[kind].empty_table()

    @retry_once_on_vanished_file
    def replay_page(
        self,
        datasets: list[str],
        symbols: list[str],
        start_ns: int,
        end_ns: int,
        after: PageKey | None,
        limit: int,
    ) -> pa.Table:
        """Up to ``limit`` events of ``datasets`` in [start, end) after ``after``, in
        (ts_event, type, symbol, source, seq) order: those five columns and ``line``, each
        event as one NDJSON line (a JSON object with its ``type``, built by DuckDB, and a
        newline)."""
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        con = self._con()
        parts: list[str] = []
        params: dict[str, object] = {"start": start_ns, "end": end_ns}
        in_list = symbol_params(symbols, params)
        for dataset in datasets:
            source, more = self._from_clause(con, dataset, start_ns, end_ns)
            if not source:
                continue
            params.update(more)
            where = ["ts_event >= $start", "ts_event < $end", f"symbol IN ({in_list})"]
            if after is not None:
                where.append(after_kind(dataset, after, params))
            parts.append(
                f"SELECT ts_event, '{dataset}' AS type, symbol, source, seq, to_json(t)::VARCHAR || chr(10) AS line "
                f"FROM (SELECT '{dataset}' AS type, * FROM {source} "
                f"WHERE {' AND '.join(where)}) t"
            )
        if not parts:
            return _REPLAY_SCHEMA.empty_table()
        sql = (
            "SELECT * FROM (" + " UNION ALL ".join(parts) + ") "
            f"ORDER BY ts_event, type, symbol, source, seq LIMIT {int(limit)}"
        )
        return con.sql(sql, params=params).to_arrow_table().cast(_REPLAY_SCHEMA)

    # Whole-range readers, kept until the API reads ranges page by page (next commit).

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

    def trades_with_quotes_reader(
        self, symbols: list[str], start_ns: int, end_ns: int, *, batch_rows: int = 65_536
    ) -> pa.RecordBatchReader | None:
        """``trades_with_quotes`` as a stream of record batches (downloads)."""
        built = self._asof_sql(symbols, start_ns, end_ns, 3600 * NS, None, None)
        if built is None:
            return None
        con, sql, params = built
        reader = con.sql(sql, params=params).to_arrow_reader(batch_rows)
        return _cast_reader(reader, TRADES_ASOF_SCHEMA)

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
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        con = self._con()
        parts: list[str] = []
        params: dict[str, object] = {"start": start_ns, "end": end_ns}
        in_list = symbol_params(symbols, params)
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


_REPLAY_SCHEMA = pa.schema(
    [
        ("ts_event", pa.int64()),
        ("type", pa.string()),
        ("symbol", pa.string()),
        ("source", pa.string()),
        ("seq", pa.int64()),
        ("line", pa.string()),
    ]
)


def _cast_reader(reader: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    """DuckDB's batches under the promised schema (its sum() is DECIMAL/HUGEINT-free here,
    but nullability and int widths may differ), still streaming."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield pa.RecordBatch.from_arrays(
                [batch.column(f.name).cast(f.type) for f in schema], schema=schema
            )

    return pa.RecordBatchReader.from_batches(schema, batches())
