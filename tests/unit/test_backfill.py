"""`tickpipe import` backfill: old history lands in the lake exactly once, resumably."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickpipe.backfill import run_backfill
from tickpipe.backfill_lake import UNFLUSHED_SEGMENTS
from tickpipe.clock import NS_PER_SECOND
from tickpipe.config import Settings
from tickpipe.errors import ConfigError, StorageError
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.sources.base import SourceContext, SourcePolicy
from tickpipe.store import lake
from tickpipe.store.held import HeldRows
from tickpipe.store.journal import Journal, closed_segments
from tickpipe.store.lake import LakeWriter
from tickpipe.store.lock import lock_data_dir
from tickpipe.store.query import Query

OLD_DAY_NS = int(dt.datetime(2021, 3, 4, 15, tzinfo=dt.UTC).timestamp()) * NS_PER_SECOND


class FileImporter:
    """Emits ``total`` trades from 2021 in chunks with a record-offset checkpoint; can be
    told to fail after a number of chunks (a stopped import)."""

    name = "history"
    policy = SourcePolicy(idle_timeout_s=None)

    def __init__(self, total: int, chunk: int, fail_after_chunks: int | None = None) -> None:
        self.total, self.chunk, self.fail_after = total, chunk, fail_after_chunks
        self.started_at: int | None = None

    async def run(self, ctx: SourceContext) -> None:
        offset = int((ctx.checkpoint or {}).get("offset", 0))
        self.started_at = offset
        ctx.info(progress_total=self.total)
        chunks = 0
        while offset < self.total:
            end = min(offset + self.chunk, self.total)
            rows = [
                Trade(
                    OLD_DAY_NS + i * 1000,
                    OLD_DAY_NS + i * 1000,
                    "/ESH21",
                    3800.0 + (i % 4) * 0.25,
                    1,
                    "x",
                    i + 1,
                )
                for i in range(offset, end)
            ]
            await ctx.emit({Kind.TRADE: to_batch(Kind.TRADE, rows)}, checkpoint={"offset": end})
            offset = end
            ctx.info(progress_done=offset)
            chunks += 1
            if self.fail_after is not None and chunks >= self.fail_after:
                raise OSError("disk unplugged")


def lake_trades(settings: Settings) -> list[tuple[int, int]]:
    query = Query(settings.lake_dir, settings.journal_dir, None)  # type: ignore[arg-type]
    table = query.sql(
        "SELECT seq, ts_event FROM read_parquet($f) ORDER BY seq",
        {"f": [p.as_posix() for p in settings.lake_dir.glob("trade/*/*.parquet")]},
    )
    return list(
        zip(table.column("seq").to_pylist(), table.column("ts_event").to_pylist(), strict=True)
    )


async def test_history_years_old_is_accepted_not_quarantined_as_ancient(settings: Settings) -> None:
    report = await run_backfill(settings, [FileImporter(5_000, 1_000)])
    (only,) = report.sources
    assert only.complete and only.accepted == {"trade": 5_000} and only.quarantined == 0
    assert [seq for seq, _ in lake_trades(settings)] == list(range(1, 5_001))


async def test_importing_the_same_history_twice_adds_nothing(settings: Settings) -> None:
    await run_backfill(settings, [FileImporter(3_000, 1_000)])
    again = FileImporter(3_000, 1_000)
    report = await run_backfill(settings, [again])
    assert again.started_at == 3_000  # resumed from its checkpoint: nothing left to read
    assert report.sources[0].accepted == {} and len(lake_trades(settings)) == 3_000


async def test_rows_the_lake_already_holds_are_skipped_even_without_a_checkpoint(
    settings: Settings,
) -> None:
    await run_backfill(settings, [FileImporter(2_000, 500)])
    forgetful = FileImporter(2_500, 500)
    forgetful.name = "history"
    (settings.lake_dir / "checkpoints").rename(settings.data_dir / "checkpoints-moved")
    report = await run_backfill(settings, [forgetful])
    assert report.sources[0].duplicates == 2_000 and report.sources[0].accepted == {"trade": 500}
    assert [seq for seq, _ in lake_trades(settings)] == list(range(1, 2_501))


async def test_a_stopped_import_resumes_to_the_same_result(settings: Settings) -> None:
    with pytest.raises(ExceptionGroup) as failed:
        await run_backfill(settings, [FileImporter(4_000, 1_000, fail_after_chunks=2)])
    assert failed.group_contains(OSError)
    assert len(lake_trades(settings)) == 2_000  # what was committed is in the lake
    resumed = FileImporter(4_000, 1_000)
    report = await run_backfill(settings, [resumed])
    assert resumed.started_at == 2_000 and report.sources[0].complete
    assert [seq for seq, _ in lake_trades(settings)] == list(range(1, 4_001))


def _trades(symbols: list[str], seqs: list[int], source: str = "history") -> pa.RecordBatch:
    rows = [
        Trade(OLD_DAY_NS + q * 1000, OLD_DAY_NS + q * 1000, sym, 3800.0, 1, source, q)
        for sym, q in zip(symbols, seqs, strict=True)
    ]
    return to_batch(Kind.TRADE, rows)


async def test_the_duplicate_check_reads_the_lake_only_where_a_footer_allows_a_match(
    settings: Settings,
) -> None:
    """The lake holds /ESH21 seq 1..2,000 of source "history". A delivery is read against
    it only if some row group's source, symbol and seq ranges overlap its own; then exactly
    the held (symbol, seq) pairs are dropped, whatever else the batch mixes in."""
    await run_backfill(settings, [FileImporter(2_000, 500)])
    held = HeldRows(settings.lake_dir)
    later = _trades(["/ESH21"] * 3, [2_001, 2_002, 5_000])
    assert held.drop_held("trade", "history", later).equals(later)
    other_source = _trades(["/ESH21"] * 2, [5, 6], source="other")
    assert held.drop_held("trade", "other", other_source).equals(other_source)
    other_symbol = _trades(["/NQH21"] * 2, [5, 6])
    assert held.drop_held("trade", "history", other_symbol).equals(other_symbol)
    assert held.lake_reads == 0

    mixed = _trades(
        ["/NQH21", "/ESH21", "/ESH21", "/ESH21", "/NQH21", "/ESH21"], [7, 7, 2_000, 2_001, 1, 1]
    )
    kept = held.drop_held("trade", "history", mixed)
    assert held.lake_reads == 1
    assert list(
        zip(kept.column("symbol").to_pylist(), kept.column("seq").to_pylist(), strict=True)
    ) == [
        ("/NQH21", 7),
        ("/ESH21", 2_001),
        ("/NQH21", 1),
    ]


async def test_a_failed_journal_write_stops_the_import_and_it_resumes_after_what_was_durable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk is checked while the one before it is written: a write that fails must
    still stop the import before anything after it counts, and leave its checkpoint out."""
    real_append = Journal.append
    appends = [0]

    def failing_third(self: Journal, items: list[tuple[str, pa.RecordBatch]]) -> None:
        appends[0] += 1
        if appends[0] == 3:
            raise StorageError("journal append failed: disk full")
        real_append(self, items)

    monkeypatch.setattr(Journal, "append", failing_third)
    with pytest.raises(ExceptionGroup) as failed:
        await run_backfill(settings, [FileImporter(5_000, 1_000)])
    assert failed.group_contains(StorageError)
    assert [seq for seq, _ in lake_trades(settings)] == list(range(1, 2_001))
    monkeypatch.setattr(Journal, "append", real_append)
    resumed = FileImporter(5_000, 1_000)
    report = await run_backfill(settings, [resumed])
    assert resumed.started_at == 2_000 and report.sources[0].complete
    assert report.sources[0].accepted == {"trade": 3_000}
    assert [seq for seq, _ in lake_trades(settings)] == list(range(1, 5_001))


async def test_an_import_waits_for_the_lake_while_segments_pile_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Parquet flush is an import's slowest stage: while more than a few segments wait
    for it, the importer waits for the flusher's next pass, so the journal holds a few
    segments, not the whole import."""
    settings = settings.model_copy(update={"journal_segment_bytes": 1})  # one per append
    real_flush, real_append = LakeWriter.flush_segment, Journal.append
    waiting: list[int] = []

    def slow_flush(self: LakeWriter, dataset: str, path: Path) -> int:
        time.sleep(0.02)
        return real_flush(self, dataset, path)

    def watched(self: Journal, items: list[tuple[str, pa.RecordBatch]]) -> None:
        waiting.append(len(closed_segments(settings.journal_dir, "trade")))
        real_append(self, items)

    monkeypatch.setattr(LakeWriter, "flush_segment", slow_flush)
    monkeypatch.setattr(Journal, "append", watched)
    report = await run_backfill(settings, [FileImporter(4_000, 100)])
    assert report.sources[0].complete and len(lake_trades(settings)) == 4_000
    assert len(waiting) == 40 and max(waiting) <= UNFLUSHED_SEGMENTS


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_the_import_command_can_tell_malloc_to_reuse_freed_memory() -> None:
    """Applied in a process of its own: it is for a command that imports and exits."""
    code = "from tickpipe.backfill import keep_freed_memory as k; raise SystemExit(not k())"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


async def test_an_import_refuses_while_the_pipeline_holds_the_data_dir(settings: Settings) -> None:
    held = lock_data_dir(settings.data_dir, "running the pipeline")
    try:
        with pytest.raises(ConfigError, match="in use by tickpipe process"):
            await run_backfill(settings, [FileImporter(10, 10)])
    finally:
        held.close()


async def test_imported_history_is_queryable_at_once(settings: Settings) -> None:
    await run_backfill(settings, [FileImporter(1_000, 1_000)])
    query = Query(settings.lake_dir, settings.journal_dir, None)  # type: ignore[arg-type]
    bars = await asyncio.to_thread(
        query.bars, ["/ESH21"], OLD_DAY_NS, OLD_DAY_NS + 60 * NS_PER_SECOND, "1m"
    )
    assert bars.column("volume").to_pylist() == [1_000]


_ROWS = st.lists(
    st.tuples(st.sampled_from(["/ESH21", "/NQH21", "SPY"]), st.integers(0, 3), st.integers(0, 3)),
    max_size=12,
)


def _table(rows: list[tuple[str, int, int]], chunk: int) -> pa.Table:
    """(symbol, day, seq) rows as a table in batches of ``chunk`` (as a segment is read)."""
    batches = [
        pa.record_batch(
            {
                "symbol": [r[0] for r in part],
                "ts_event": [OLD_DAY_NS + r[1] * 86_400 * NS_PER_SECOND for r in part],
                "seq": [r[2] for r in part],
            }
        )
        for part in (rows[i : i + chunk] for i in range(0, len(rows), chunk))
    ]
    schema = pa.schema({"symbol": pa.string(), "ts_event": pa.int64(), "seq": pa.int64()})
    return pa.Table.from_batches(batches, schema=schema)


@given(_ROWS, st.integers(1, 5), st.booleans())
def test_the_lake_writes_the_same_rows_whether_or_not_it_sorts_and_filters(
    rows: list[tuple[str, int, int]], chunk: int, presorted: bool
) -> None:
    """Skipping the sort of a segment already in order, and slicing days that come in
    order, are shortcuts: the files get exactly the rows a full sort and a filter per day
    would give them."""
    table = _table(sorted(rows) if presorted else rows, chunk)
    keys = [("symbol", "ascending"), ("ts_event", "ascending"), ("seq", "ascending")]
    assert lake.sort_for_lake(table).equals(table.sort_by(keys))
    if not rows:
        return
    ts = table.column("ts_event")
    days = pc.divide(ts, 86_400 * NS_PER_SECOND)
    expected = [
        (int(day), table.filter(pc.equal(days, day))) for day in sorted(set(days.to_pylist()))
    ]
    got = lake.split_by_day(table)
    assert [d for d, _ in got] == [d for d, _ in expected]
    assert all(g.equals(e) for (_, g), (_, e) in zip(got, expected, strict=True))
