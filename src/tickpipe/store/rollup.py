"""One-second trade rollups: the lake keeps, beside each trade file, partial 1 s bars.

A bar over any interval is then an aggregate of at most 86,400 rows per symbol-day
instead of every trade (2 M for a busy symbol). Partial rows from different segments can
share a second; they merge exactly: open/close by the (ts_event, seq) of the first/last
trade, high/low by max/min, volume, trades and price·size by sum.

The flusher writes a segment's rollup *before* its trade file, under the same segment
name, so the query layer can tell which journal segments are already rolled up.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

ROLLUP = "bars_1s"
SECOND = 1_000_000_000
KEY = "ts_event::HUGEINT * 18446744073709551616 + seq"

ROLLUP_SCHEMA = pa.schema(
    [
        ("ts_event", pa.int64()),
        ("symbol", pa.string()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("trades", pa.int64()),
        ("pv", pa.float64()),
        ("first_key", pa.decimal128(38, 0)),
        ("last_key", pa.decimal128(38, 0)),
    ],
    metadata={b"tickpipe.kind": ROLLUP.encode()},
)
"""``ts_event`` is the second's start; ``first_key``/``last_key`` order trades by
(ts_event, seq) as ts_event·2^64 + seq."""


def partial_sql(trades: str) -> str:
    """Partial 1 s rows from a SQL source of trades (columns of the Trade schema)."""
    return f"""
        SELECT ts_event - (ts_event % {SECOND}) AS ts_event, symbol,
               arg_min(price, {KEY}) AS open, max(price) AS high, min(price) AS low,
               arg_max(price, {KEY}) AS close, sum(size) AS volume, count(*) AS trades,
               sum(price * size) AS pv,
               min({KEY})::DECIMAL(38, 0) AS first_key, max({KEY})::DECIMAL(38, 0) AS last_key
        FROM {trades} GROUP BY ALL
    """


def merge_sql(partials: str, step_ns: int) -> str:
    """Bars of ``step_ns`` (a multiple of 1 s) from partial rows."""
    return f"""
        SELECT symbol, ts_event - (ts_event % {step_ns}) AS time,
               arg_min(open, first_key) AS open, max(high) AS high, min(low) AS low,
               arg_max(close, last_key) AS close, sum(volume) AS volume,
               sum(trades)::BIGINT AS trades, sum(pv) / nullif(sum(volume), 0) AS vwap
        FROM {partials} GROUP BY ALL
    """


def rollup_table(trades: pa.Table) -> pa.Table:
    """A segment's partial 1 s rows (for the flusher)."""
    con = duckdb.connect(":memory:")
    try:
        con.register("trades", trades)
        return con.sql(partial_sql("trades")).to_arrow_table().cast(ROLLUP_SCHEMA)
    finally:
        con.close()
