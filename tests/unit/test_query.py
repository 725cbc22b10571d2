"""Range queries read the journal and the lake as one, and bars match an independent count."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.errors import QueryError
from tickpipe.events import Kind, Trade, from_batch, to_batch
from tickpipe.store.hot_memory import MemoryHotStore
from tickpipe.store.journal import Journal
from tickpipe.store.lake import LakeWriter
from tickpipe.store.query import Query


@pytest.fixture
def parts(tmp_path: Path, clock: FakeClock) -> tuple[Journal, LakeWriter, Query]:
    journal = Journal(tmp_path / "journal", clock, segment_seconds=60, segment_bytes=1 << 30)
    lake = LakeWriter(tmp_path / "lake", tmp_path / "journal", 3)
    return journal, lake, Query(tmp_path / "lake", tmp_path / "journal", MemoryHotStore(100))


def trades(start: int, n: int, step_ns: int, seq0: int, symbol: str = "SPY") -> list[Trade]:
    return [
        Trade(
            start + i * step_ns,
            start + i * step_ns,
            symbol,
            600 + (i % 17) / 100,
            1 + i % 5,
            "t",
            seq0 + i,
        )
        for i in range(n)
    ]


def test_events_span_lake_and_journal_without_loss_or_duplicates(
    parts: tuple[Journal, LakeWriter, Query], clock: FakeClock
) -> None:
    journal, lake, query = parts
    t0 = clock.now_ns()
    flushed = trades(t0, 50, NS_PER_SECOND // 10, 1)
    pending = trades(t0 + 5 * NS_PER_SECOND, 50, NS_PER_SECOND // 10, 51)
    journal.append([("trade", to_batch(Kind.TRADE, flushed))])
    journal.roll()
    lake.flush_closed()
    journal.append([("trade", to_batch(Kind.TRADE, pending))])  # still open, not in the lake
    got = query.events(Kind.TRADE, ["SPY"], t0, t0 + 60 * NS_PER_SECOND)
    assert from_batch(Kind.TRADE, got) == flushed + pending
    window = query.events(Kind.TRADE, ["SPY"], t0 + 4 * NS_PER_SECOND, t0 + 6 * NS_PER_SECOND)
    assert window.column("seq").to_pylist() == list(range(41, 61))


def test_a_segment_caught_mid_flush_is_not_counted_twice(
    parts: tuple[Journal, LakeWriter, Query], clock: FakeClock, tmp_path: Path
) -> None:
    journal, lake, query = parts
    t0 = clock.now_ns()
    journal.append([("trade", to_batch(Kind.TRADE, trades(t0, 20, 1000, 1)))])
    (segment,) = journal.roll()
    backup = tmp_path / "backup"
    shutil.copy(segment, backup)
    lake.flush_closed()
    shutil.copy(backup, segment)  # the flusher wrote Parquet but has not deleted the segment
    got = query.events(Kind.TRADE, ["SPY"], t0, t0 + NS_PER_SECOND)
    assert got.num_rows == 20


def test_bars_equal_bars_computed_by_hand(
    parts: tuple[Journal, LakeWriter, Query], clock: FakeClock
) -> None:
    journal, lake, query = parts
    minute = 60 * NS_PER_SECOND
    t0 = clock.now_ns() // minute * minute
    events = trades(t0 + 7, 400, NS_PER_SECOND // 2, 1) + trades(
        t0 + 9, 100, NS_PER_SECOND, 1, "QQQ"
    )
    journal.append([("trade", to_batch(Kind.TRADE, events[:250]))])
    journal.roll()
    lake.flush_closed()
    journal.append([("trade", to_batch(Kind.TRADE, events[250:]))])
    bars = query.bars(["SPY", "QQQ"], t0, t0 + 10 * minute, "1m").to_pylist()

    expected: dict[tuple[str, int], list[Trade]] = defaultdict(list)
    for e in sorted(events, key=lambda e: (e.ts_event, e.seq)):
        expected[(e.symbol, e.ts_event // minute * minute)].append(e)
    assert len(bars) == len(expected)
    for bar in bars:
        group = expected[(bar["symbol"], bar["time"])]
        assert bar["open"] == group[0].price and bar["close"] == group[-1].price
        assert bar["high"] == max(e.price for e in group) and bar["low"] == min(
            e.price for e in group
        )
        assert bar["volume"] == sum(e.size for e in group) and bar["trades"] == len(group)
        vwap = sum(e.price * e.size for e in group) / sum(e.size for e in group)
        assert bar["vwap"] == pytest.approx(vwap)


def test_unknown_interval_is_refused(parts: tuple[Journal, LakeWriter, Query]) -> None:
    with pytest.raises(QueryError, match="1s, 5s, 1m"):
        parts[2].bars(["SPY"], 0, 1, "2m")


def test_an_empty_store_answers_with_empty_tables(parts: tuple[Journal, LakeWriter, Query]) -> None:
    _, _, query = parts
    assert query.events(Kind.QUOTE, ["SPY"], 0, 10**19).num_rows == 0
    assert query.bars(["SPY"], 0, 10**19, "1m").num_rows == 0
    assert isinstance(query.bars(["SPY"], 0, 10**19, "1m"), pa.Table)


def by_hand(
    events: list[Trade], start: int, end: int, step: int
) -> dict[tuple[str, int], tuple[float, ...]]:
    groups: dict[tuple[str, int], list[Trade]] = defaultdict(list)
    for e in sorted(events, key=lambda e: (e.ts_event, e.seq)):
        if start <= e.ts_event < end:
            groups[(e.symbol, e.ts_event // step * step)].append(e)
    return {
        key: (
            g[0].price,
            max(e.price for e in g),
            min(e.price for e in g),
            g[-1].price,
            sum(e.size for e in g),
            len(g),
        )
        for key, g in groups.items()
    }


def test_bars_over_a_range_that_cuts_seconds_count_only_trades_inside(
    parts: tuple[Journal, LakeWriter, Query], clock: FakeClock
) -> None:
    journal, lake, query = parts
    t0 = clock.now_ns() // NS_PER_SECOND * NS_PER_SECOND
    events = trades(t0, 300, NS_PER_SECOND // 20, 1)  # 20 a second for 15 s
    journal.append([("trade", to_batch(Kind.TRADE, events[:150]))])
    journal.roll()
    lake.flush_closed()
    journal.append([("trade", to_batch(Kind.TRADE, events[150:]))])
    start, end = t0 + NS_PER_SECOND // 3, t0 + 12 * NS_PER_SECOND + NS_PER_SECOND // 7
    for interval, step in (("1s", NS_PER_SECOND), ("5s", 5 * NS_PER_SECOND)):
        bars = query.bars(["SPY"], start, end, interval).to_pylist()
        got = {
            (b["symbol"], b["time"]): (
                b["open"],
                b["high"],
                b["low"],
                b["close"],
                b["volume"],
                b["trades"],
            )
            for b in bars
        }
        assert got == by_hand(events, start, end, step)


def test_a_segment_rolled_up_but_not_yet_in_the_lake_is_counted_once(
    parts: tuple[Journal, LakeWriter, Query], clock: FakeClock, tmp_path: Path
) -> None:
    journal, lake, query = parts
    t0 = clock.now_ns() // NS_PER_SECOND * NS_PER_SECOND
    events = trades(t0, 100, NS_PER_SECOND // 10, 1)
    journal.append([("trade", to_batch(Kind.TRADE, events))])
    (segment,) = journal.roll()
    shutil.copy(segment, tmp_path / "seg")
    lake.flush_closed()
    # a crash after the rollup file and before the trade file: the segment is still journaled
    shutil.copy(tmp_path / "seg", segment)
    for f in (tmp_path / "lake" / "trade").rglob("*.parquet"):
        f.unlink()
    end = t0 + 20 * NS_PER_SECOND
    assert query.events(Kind.TRADE, ["SPY"], t0, end).num_rows == 100
    bars = query.bars(["SPY"], t0, end, "1m").to_pylist()
    assert sum(b["trades"] for b in bars) == 100


def test_the_flushers_rollup_equals_the_sql_rollup(clock: FakeClock) -> None:
    import duckdb

    from tickpipe.store.lake import sort_for_lake
    from tickpipe.store.rollup import ROLLUP_SCHEMA, partial_sql, rollup_table

    t0 = clock.now_ns()
    events = trades(t0, 500, NS_PER_SECOND // 37, 1) + trades(
        t0 + 3, 200, NS_PER_SECOND // 11, 1, "QQQ"
    )
    table = sort_for_lake(pa.Table.from_batches([to_batch(Kind.TRADE, events)]))
    con = duckdb.connect()
    con.register("t", table)
    keys = [("symbol", "ascending"), ("ts_event", "ascending")]
    via_sql = con.sql(partial_sql("t")).to_arrow_table().cast(ROLLUP_SCHEMA).sort_by(keys)
    ours = rollup_table(table).sort_by(keys)
    exact = [c for c in ROLLUP_SCHEMA.names if c != "pv"]  # pv: float sums in another order
    assert ours.select(exact).equals(via_sql.select(exact))
    assert ours.column("pv").to_pylist() == pytest.approx(
        via_sql.column("pv").to_pylist(), rel=1e-12
    )
