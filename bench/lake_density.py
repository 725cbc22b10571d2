"""Lake bytes per trade for a realistic multi-symbol session, as the pipeline writes it.

One 6.5-hour session of six symbols (``_session.py``: µs event stamps, receive times per
frame, bursts, odd lots with conditions, venues, aggressor sides) goes through the real
path: journal segments of ``--segment-s`` seconds of market time, the flusher (sorted zstd
Parquet plus 1 s rollups per segment), then the compactor. Prints bytes per trade of the
small per-segment files, after compaction, per column, and with the rollups; beside the
same rows written once by ``pyarrow.parquet.write_table`` with its defaults (the baseline:
what our encodings buy) and the worst case of a receive time per trade.

    python bench/lake_density.py [--trades 5000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _session import session
from _util import figure, write_json

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.store import layout
from tickpipe.store.compact import Compactor
from tickpipe.store.journal import Journal
from tickpipe.store.lake import LakeWriter, sort_for_lake

OPEN_NS = (1_795_000_000 // 86_400 * 86_400 + int(14.5 * 3600)) * NS_PER_SECOND
"""09:30 New York (winter) on a fixed day"""


def lake_size(lake: Path, dataset: str) -> tuple[int, int, dict[str, int]]:
    """(bytes, files, compressed bytes per column) of a dataset's visible files."""
    files = layout.lake_files(lake, dataset)
    columns: dict[str, int] = {}
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                col = meta.row_group(g).column(c)
                columns[col.path_in_schema] = (
                    columns.get(col.path_in_schema, 0) + col.total_compressed_size
                )
    return sum(f.stat().st_size for f in files), len(files), columns


def through_pipeline(table: pa.Table, data: Path, segment_s: float) -> dict[str, object]:
    journal = Journal(data / "journal", SystemClock(), segment_seconds=1e9, segment_bytes=1 << 40)
    ts = table.column("ts_event").to_numpy()
    step = int(segment_s * NS_PER_SECOND)
    edges = list(range(int(ts[0]), int(ts[-1]) + step, step))
    bounds = np.searchsorted(ts, edges)
    lake = data / "lake"
    writer = LakeWriter(lake, data / "journal", 3)
    started = time.perf_counter()
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            journal.append([("trade", table.slice(lo, hi - lo).combine_chunks().to_batches()[0])])
            journal.roll()
            writer.flush_closed()
    flush_s = time.perf_counter() - started
    n = table.num_rows
    small, small_files, _ = lake_size(lake, "trade")
    small_roll, _, _ = lake_size(lake, "bars_1s")
    compactor = Compactor(lake, data / "journal", min_files=2, max_rows=20_000_000, zstd_level=3)
    started = time.perf_counter()
    while compactor.run_once():
        pass
    compact_s = time.perf_counter() - started
    big, big_files, columns = lake_size(lake, "trade")
    roll, roll_files, roll_columns = lake_size(lake, "bars_1s")
    return {
        "small": small / n,
        "small_files": small_files,
        "small_rollup": small_roll / n,
        "compacted": big / n,
        "compacted_files": big_files,
        "rollup": roll / n,
        "rollup_files": roll_files,
        "columns": {k: v / n for k, v in columns.items()},
        "rollup_columns": {k: v / n for k, v in roll_columns.items()},
        "flush_s": flush_s,
        "compact_s": compact_s,
    }


def default_parquet(table: pa.Table) -> float:
    sink = io.BytesIO()
    pq.write_table(sort_for_lake(table), sink)
    return len(sink.getvalue()) / table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--trades", type=int, default=5_000_000, help="about a real day of these six symbols"
    )
    parser.add_argument("--segment-s", type=float, default=60.0, help="market seconds")
    parser.add_argument("--json")
    args = parser.parse_args()
    table = session(args.trades, OPEN_NS, seed=3)
    n = table.num_rows
    symbols = len(set(table.column("symbol").unique().to_pylist()))
    result = through_pipeline(
        table, Path(tempfile.mkdtemp(prefix="tickpipe-lake-")), args.segment_s
    )
    worst = through_pipeline(
        session(args.trades, OPEN_NS, seed=3, frame_ms=0),
        Path(tempfile.mkdtemp(prefix="tickpipe-lake-")),
        args.segment_s,
    )
    base = default_parquet(table)
    total = float(result["compacted"]) + float(result["rollup"])  # type: ignore[arg-type]
    print(f"{n:,} trades, {symbols} symbols, one 6.5 h session, {args.segment_s:g} s segments")
    print(
        f"  per-segment files: {result['small']:.2f} B/trade ({result['small_files']} files) "
        f"+ {result['small_rollup']:.2f} rollups  (flushed in {result['flush_s']:.1f} s)"
    )
    print(
        f"  compacted:         {result['compacted']:.2f} B/trade ({result['compacted_files']} "
        f"files) + {result['rollup']:.2f} rollups = {total:.2f}  "
        f"(compacted in {result['compact_s']:.1f} s)"
    )
    cols = result["columns"]
    assert isinstance(cols, dict)
    print("  per column: " + ", ".join(f"{k} {v:.2f}" for k, v in cols.items()))
    rcols = result["rollup_columns"]
    assert isinstance(rcols, dict)
    print("  rollup columns: " + ", ".join(f"{k} {v:.2f}" for k, v in rcols.items()))
    worst_total = float(worst["compacted"]) + float(worst["rollup"])  # type: ignore[arg-type]
    print(f"  worst case, a receive time per trade: {worst_total:.2f} B/trade")
    print(f"  baseline, pyarrow write_table defaults (snappy): {base:.2f} B/trade")
    limits = (
        "ts_event and ts_recv stay int64 ns for every reader, so µs stamps carry ~10 bits "
        f"Parquet's encodings cannot drop: {cols.get('ts_event', 0):.2f} + "
        f"{cols.get('ts_recv', 0):.2f} B of the total; rollups are "
        f"{result['rollup']:.2f} B/trade at {symbols} symbols"
    )
    figures = [
        figure(
            f"lake bytes/trade, {symbols} symbols, compacted + rollups",
            total,
            "B",
            baseline=base,
            baseline_name="pyarrow write_table defaults, same rows",
            target="≤ 8 (aim 6)",
            samples=n,
            limits=limits,
        ),
        figure(
            "lake bytes/trade before compaction (per-segment files + rollups)",
            float(result["small"]) + float(result["small_rollup"]),  # type: ignore[arg-type]
            "B",
            baseline=total,
            baseline_name="the same rows compacted",
            samples=n,
            limits=f"{result['small_files']} files of {args.segment_s:g} s of market time",
        ),
        figure(
            "lake bytes/trade, a receive time per trade (worst case)",
            worst_total,
            "B",
            baseline=base,
            baseline_name="pyarrow write_table defaults, same rows",
            samples=n,
            limits="no feed stamps per trade: adapters stamp once per frame",
        ),
    ]
    write_json(args.json, figures, detail=result, worst=worst)


if __name__ == "__main__":
    main()
