"""One-second trade rollups: the lake keeps, beside each trade file, partial 1 s bars.

A bar over any interval is then an aggregate of at most 86,400 rows per symbol-day
instead of every trade (2 M for a busy symbol). Partial rows from different segments can
share a second; they merge exactly: open/close by the (ts_event, seq) of the first/last
trade, high/low by max/min, volume, trades and price·size by sum.

The flusher writes a segment's rollup *before* its trade file, under the same segment
name, so the query layer can tell which journal segments are already rolled up.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROLLUP = "bars_1s"
SECOND = 1_000_000_000
KEY = "ts_event::HUGEINT * 18446744073709551616 + seq"

_OHLCV = [
    ("open", pa.float64()),
    ("high", pa.float64()),
    ("low", pa.float64()),
    ("close", pa.float64()),
    ("volume", pa.float64()),
    ("trades", pa.int64()),
]

BARS_SCHEMA = pa.schema(
    [("symbol", pa.string()), ("time", pa.int64()), *_OHLCV, ("vwap", pa.float64())]
)
"""What ``Query.bars`` returns: ``time`` is the bucket's start, int ns."""

ROLLUP_SCHEMA = pa.schema(
    [
        ("ts_event", pa.int64()),
        ("symbol", pa.string()),
        *_OHLCV,
        ("pv", pa.float64()),
        ("first_ts", pa.int64()),
        ("first_seq", pa.int64()),
        ("last_ts", pa.int64()),
        ("last_seq", pa.int64()),
    ],
    metadata={b"tickpipe.kind": ROLLUP.encode()},
)
"""``ts_event`` is the second's start; (first_ts, first_seq) and (last_ts, last_seq)
identify the first and last trade, by which partial rows of one second are merged."""


def partial_sql(trades: str) -> str:
    """Partial 1 s rows from a SQL source of trades (columns of the Trade schema)."""
    return f"""
        SELECT ts_event - (ts_event % {SECOND}) AS ts_event, symbol,
               arg_min(price, {KEY}) AS open, max(price) AS high, min(price) AS low,
               arg_max(price, {KEY}) AS close, sum(size) AS volume, count(*) AS trades,
               sum(price * size) AS pv,
               min(ts_event) AS first_ts, arg_min(seq, {KEY}) AS first_seq,
               max(ts_event) AS last_ts, arg_max(seq, {KEY}) AS last_seq
        FROM {trades} GROUP BY ALL
    """


def merge_sql(partials: str, step_ns: int) -> str:
    """Bars of ``step_ns`` (a multiple of 1 s) from partial rows."""
    return f"""
        SELECT symbol, ts_event - (ts_event % {step_ns}) AS time,
               arg_min(open, {_key("first")}) AS open, max(high) AS high, min(low) AS low,
               arg_max(close, {_key("last")}) AS close, sum(volume) AS volume,
               sum(trades)::BIGINT AS trades, sum(pv) / nullif(sum(volume), 0) AS vwap
        FROM {partials} GROUP BY ALL
    """


def _key(which: str) -> str:
    return f"{which}_ts::HUGEINT * 18446744073709551616 + {which}_seq"


def rollup_table(trades: pa.Table) -> pa.Table:
    """A segment's partial 1 s rows, for the flusher. ``trades`` must be sorted by
    (symbol, ts_event, seq), as the flusher sorts them: then each (symbol, second) is a
    run, its first and last rows are open and close, and numpy's ``reduceat`` does the
    rest in one pass each (no GROUP BY, no second core taken from ingest)."""
    n = trades.num_rows
    if n == 0:
        return ROLLUP_SCHEMA.empty_table()
    codes = pc.dictionary_encode(trades.column("symbol")).combine_chunks().indices.to_numpy()
    ts = trades.column("ts_event").to_numpy()
    seq = trades.column("seq").to_numpy()
    price = trades.column("price").to_numpy()
    size = trades.column("size").to_numpy()
    second = ts // SECOND
    change = np.flatnonzero((np.diff(codes) != 0) | (np.diff(second) != 0)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n])) - 1
    return pa.table(
        {
            "ts_event": second[starts] * SECOND,
            "symbol": trades.column("symbol").take(pa.array(starts)),
            "open": price[starts],
            "high": np.maximum.reduceat(price, starts),
            "low": np.minimum.reduceat(price, starts),
            "close": price[ends],
            "volume": np.add.reduceat(size, starts),
            "trades": (ends - starts + 1).astype(np.int64),
            "pv": np.add.reduceat(price * size, starts),
            "first_ts": ts[starts],
            "first_seq": seq[starts],
            "last_ts": ts[ends],
            "last_seq": seq[ends],
        },
        schema=ROLLUP_SCHEMA,
    )
