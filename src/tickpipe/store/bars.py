"""OHLCV bars from trades: the 1 s rollups in the lake, journal trades not yet rolled up,
and raw trades for the partial seconds at either end of a range (``rollup.py``)."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from tickpipe.events import Kind
from tickpipe.store.ranges import (
    MAX_NS,
    Ranges,
    clamp,
    interval_ns,
    retry_once_on_vanished_file,
    symbol_params,
)
from tickpipe.store.rollup import BARS_SCHEMA, ROLLUP, ROLLUP_SCHEMA, SECOND, merge_sql, partial_sql


class BarQueries(Ranges):
    @retry_once_on_vanished_file
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

    def _bars_sql(
        self, symbols: list[str], start_ns: int, end_ns: int, interval: str, *, fill: bool
    ) -> tuple[duckdb.DuckDBPyConnection, str, dict[str, object]] | None:
        step = interval_ns(interval)
        start_ns, end_ns = clamp(start_ns), clamp(end_ns)
        con = self._con()
        inner_start = min(-(-start_ns // SECOND) * SECOND, MAX_NS // SECOND * SECOND)
        inner_end = max(end_ns // SECOND * SECOND, inner_start)
        params: dict[str, object] = {}
        in_symbols = symbol_params(symbols, params)
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


def _empty_bars() -> pa.Table:
    return BARS_SCHEMA.empty_table()
