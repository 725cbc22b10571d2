"""The query layer: it owns the SQL. Latest events from the hot store; ranges, bars,
as-of joins and replay pages from the journal and the lake together (``ranges.py``,
``bars.py``, ``asof.py``); long ranges read page by page (``pages.py``). Bars are
aggregated in DuckDB, never in Python loops.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tickpipe.events import SCHEMAS, Kind
from tickpipe.store.asof import AsofQueries
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
