"""1-minute OHLCV bars over one symbol-day of 2 M trades, from the Parquet lake via DuckDB.

Builds a real lake (journal -> flusher -> zstd Parquet) holding one 6.5-hour session of
SPY trades, then times ``Query.bars`` after a warm-up and prints percentiles, beside a
trivial ``count(*)`` over the same files as the floor.

    python bench/bars.py [--trades 2000000] [--runs 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import percentiles

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store.hot_memory import MemoryHotStore
from tickpipe.store.journal import Journal
from tickpipe.store.lake import LakeWriter
from tickpipe.store.query import Query

SESSION_S = 6.5 * 3600


def session_trades(n: int, open_ns: int, seed: int = 1) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    ts = open_ns + np.sort(rng.integers(0, int(SESSION_S * 1e6), size=n)) * 1000
    price = np.round(600 * np.exp(np.cumsum(rng.normal(0, 2e-5, size=n))), 2)
    return pa.RecordBatch.from_pydict(
        {
            "ts_event": ts,
            "ts_recv": ts + rng.integers(50, 900, size=n) * 1000,
            "symbol": pa.array(["SPY"] * n),
            "price": price,
            "size": np.ceil(rng.lognormal(3, 1.2, size=n)),
            "source": pa.array(["bench"] * n),
            "seq": np.arange(1, n + 1),
            "exchange": pa.nulls(n, pa.string()),
            "conditions": pa.nulls(n, pa.string()),
        },
        schema=SCHEMAS[Kind.TRADE],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tickpipe-bars-"))
    clock = SystemClock()
    day = clock.now_ns() // (86_400 * NS_PER_SECOND) * 86_400 * NS_PER_SECOND
    open_ns = day + int(14.5 * 3600) * NS_PER_SECOND  # 09:30 New York in UTC (winter)
    journal = Journal(data / "journal", clock, segment_seconds=3600, segment_bytes=1 << 40)
    batch = session_trades(args.trades, open_ns)
    for start in range(0, batch.num_rows, 65_536):
        journal.append([("trade", batch.slice(start, 65_536))])
    journal.roll()
    lake = LakeWriter(data / "lake", data / "journal", 3)
    lake.flush_closed()
    trade_bytes = sum(p.stat().st_size for p in (data / "lake" / "trade").rglob("*.parquet"))
    rollup_bytes = sum(p.stat().st_size for p in (data / "lake" / "bars_1s").rglob("*.parquet"))
    print(
        f"lake: {args.trades:,} trades, {trade_bytes / args.trades:.2f} bytes/trade "
        f"(+ {rollup_bytes / args.trades:.2f} bytes/trade of 1 s rollups)"
    )

    query = Query(data / "lake", data / "journal", MemoryHotStore(1))
    start, end = day, day + 86_400 * NS_PER_SECOND
    files = [str(p) for p in sorted((data / "lake" / "trade").rglob("*.parquet"))]

    def timed(fn: object, runs: int) -> list[float]:
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()  # type: ignore[operator]
            samples.append(time.perf_counter() - t)
        return samples

    bars = query.bars(["SPY"], start, end, "1m")
    assert bars.num_rows == 390 and sum(bars.column("trades").to_pylist()) == args.trades
    timed(lambda: query.bars(["SPY"], start, end, "1m"), 3)
    bar_times = timed(lambda: query.bars(["SPY"], start, end, "1m"), args.runs)
    floor = timed(
        lambda: query.sql("SELECT count(*) FROM read_parquet($f)", {"f": files}), args.runs
    )
    print(f"1m bars, 1 symbol-day ({bars.num_rows} bars): {percentiles(bar_times)}")
    print(f"floor, count(*) over the same files:  {percentiles(floor)}")
    print(f"bars / floor (p50) = {np.median(bar_times) / np.median(floor):.1f}")


if __name__ == "__main__":
    main()
