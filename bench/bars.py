"""1-minute OHLCV bars for one symbol-day, beside raw-trade baselines in the same run.

Builds a real lake (journal -> flusher -> zstd Parquet + 1 s rollups) holding one 6.5-hour
session of SPY trades (``_session.py``: µs stamps, bursts, odd lots, venues), then times:

  - ``Query.bars`` (what the API runs): it aggregates the 1 s rollup rows, not the trades
    (the per-second work was paid at ingest); the rows it reads are printed;
  - DuckDB over the raw trade Parquet files (arg_min/arg_max on (ts_event, seq));
  - Polars ``group_by_dynamic`` over the same raw trades (``scan_parquet``).

All three must agree on every bar (open, high, low, close, volume, trades), and each
timing is reported with its sample count and its ratio to the raw-trade baselines.

    python bench/bars.py [--trades 2000000] [--runs 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _session import SESSION_S, session_trades
from _util import figure, percentiles, write_json

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.store.hot_memory import MemoryHotStore
from tickpipe.store.journal import Journal
from tickpipe.store.lake import LakeWriter
from tickpipe.store.query import Query

__all__ = ["SESSION_S", "session_trades"]

RAW_SQL = """
    SELECT time_bucket(INTERVAL 1 MINUTE, make_timestamp(ts_event // 1000)) AS t,
           arg_min(price, ts_event::HUGEINT * 18446744073709551616 + seq) AS open,
           max(price) AS high, min(price) AS low,
           arg_max(price, ts_event::HUGEINT * 18446744073709551616 + seq) AS close,
           sum(size) AS volume, count(*) AS trades
    FROM read_parquet($files) WHERE symbol = 'SPY' GROUP BY t ORDER BY t
"""


def polars_bars(files: list[str]) -> pl.DataFrame:
    return (
        pl.scan_parquet(files)
        .filter(pl.col("symbol") == "SPY")
        .sort("ts_event", "seq")
        .with_columns(pl.from_epoch("ts_event", time_unit="ns").alias("t"))
        .group_by_dynamic("t", every="1m")
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("size").sum().alias("volume"),
            pl.len().alias("trades"),
        )
        .collect()
    )


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def build_lake(data: Path, trades: int) -> tuple[int, pa.RecordBatch]:
    clock = SystemClock()
    day = clock.now_ns() // (86_400 * NS_PER_SECOND) * 86_400 * NS_PER_SECOND
    open_ns = day + int(14.5 * 3600) * NS_PER_SECOND  # 09:30 New York in UTC (winter)
    journal = Journal(data / "journal", clock, segment_seconds=3600, segment_bytes=1 << 40)
    batch = session_trades(trades, open_ns)
    for start in range(0, batch.num_rows, 65_536):
        journal.append([("trade", batch.slice(start, 65_536))])
    journal.roll()
    LakeWriter(data / "lake", data / "journal", 3).flush_closed()
    return day, batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tickpipe-bars-"))
    day, _ = build_lake(data, args.trades)
    trade_files = [str(p) for p in sorted((data / "lake" / "trade").rglob("*.parquet"))]
    rollup_files = [str(p) for p in sorted((data / "lake" / "bars_1s").rglob("*.parquet"))]
    rollup_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in rollup_files)
    trade_bytes = sum(Path(f).stat().st_size for f in trade_files)
    rollup_bytes = sum(Path(f).stat().st_size for f in rollup_files)
    print(
        f"lake: {args.trades:,} SPY trades, {trade_bytes / args.trades:.2f} bytes/trade "
        f"(+ {rollup_bytes / args.trades:.2f} of 1 s rollups: {rollup_rows:,} rows)"
    )

    query = Query(data / "lake", data / "journal", MemoryHotStore(1))
    start, end = day, day + 86_400 * NS_PER_SECOND
    con = duckdb.connect()
    ours = query.bars(["SPY"], start, end, "1m")
    raw = con.sql(RAW_SQL, params={"files": trade_files}).to_arrow_table()
    pol = polars_bars(trade_files)
    assert sum(ours.column("trades").to_pylist()) == args.trades
    check = ("open", "high", "low", "close", "volume", "trades")
    for name in check:
        a = ours.column(name).to_numpy()
        assert np.array_equal(a, raw.column(name).to_numpy()), name
        assert np.array_equal(a, pol[name].to_numpy()), name
    times = ours.column("time").to_numpy()
    expected = pol["t"].dt.epoch("ns").to_numpy()
    assert np.array_equal(times, expected)
    print(f"{ours.num_rows} bars, identical in Query.bars, DuckDB over raw trades and Polars")

    ours_t = timed(lambda: query.bars(["SPY"], start, end, "1m"), args.runs)
    raw_t = timed(
        lambda: con.sql(RAW_SQL, params={"files": trade_files}).to_arrow_table(), args.runs
    )
    pol_t = timed(lambda: polars_bars(trade_files), args.runs)
    print(f"Query.bars over {rollup_rows:,} rollup rows:      {percentiles(ours_t)}")
    print(f"DuckDB over {args.trades:,} raw trades:     {percentiles(raw_t)}")
    print(f"Polars group_by_dynamic, raw trades:   {percentiles(pol_t)}")
    p50 = float(np.median(ours_t)) * 1000
    duck, polars_ms = float(np.median(raw_t)) * 1000, float(np.median(pol_t)) * 1000
    print(f"Query.bars / DuckDB raw (p50) = {p50 / duck:.2f}; / Polars raw = {p50 / polars_ms:.2f}")
    limits = (
        f"aggregates {rollup_rows:,} rollup rows, not {args.trades:,} trades; "
        f"DuckDB and Polars use both cores; {dt.date.today()}"
    )
    figures = [
        figure(
            "1m bars, 2 M-trade symbol-day, p50 (Query.bars)",
            p50,
            "ms",
            baseline=duck,
            baseline_name="DuckDB over the raw trades",
            target="≤ 50 ms",
            samples=len(ours_t),
            limits=limits + f"; Polars raw {polars_ms:.1f} ms ({p50 / polars_ms:.2f}×)",
        ),
        figure(
            "lake bytes per trade, 1 symbol",
            (trade_bytes + rollup_bytes) / args.trades,
            "B",
            baseline=trade_bytes / args.trades,
            baseline_name="trade files alone",
            samples=args.trades,
            limits="one symbol, one 6.5 h session, one segment",
        ),
    ]
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
