"""Long ranges read in pages (``store/pages.py``) give exactly what one query over the whole
range gives: raw events, replay lines across kinds, trades with prevailing quotes, and
bars with and without fill, whatever the page size, over bursts of equal timestamps,
days without data, and rows split between the lake and the journal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store.hot_memory import MemoryHotStore
from tickpipe.store.journal import Journal
from tickpipe.store.lake import LakeWriter
from tickpipe.store.pages import (
    KeysetPages,
    asof_pages,
    bar_pages,
    event_pages,
    replay_pages,
)
from tickpipe.store.query import INTERVALS, Query

DAY = 86_400 * NS_PER_SECOND
SYMBOLS = ["IWM", "QQQ", "SPY"]


def _times(rng: np.random.Generator, start: int, n: int) -> np.ndarray:
    """Bursts (equal times), ordinary gaps of up to 0.3 s, and two days of silence."""
    gaps = rng.integers(1, NS_PER_SECOND * 3 // 10, n)
    gaps[rng.random(n) < 0.25] = 0
    gaps[n // 3] = gaps[2 * n // 3] = DAY + 12_345
    return start + np.cumsum(gaps)


def _batch(kind: Kind, rng: np.random.Generator, ts: np.ndarray) -> pa.RecordBatch:
    n = len(ts)
    symbols = rng.choice(SYMBOLS, n)
    sources = rng.choice(["a", "b"], n)
    seq = np.zeros(n, dtype=np.int64)
    for key in {(s, o) for s, o in zip(symbols, sources, strict=True)}:
        mask = (symbols == key[0]) & (sources == key[1])
        seq[mask] = np.arange(1, mask.sum() + 1)
    columns: dict[str, object] = {}
    for field in SCHEMAS[kind]:
        if field.name in ("ts_event", "ts_recv"):
            columns[field.name] = ts
        elif field.name == "symbol":
            columns[field.name] = symbols
        elif field.name == "source":
            columns[field.name] = sources
        elif field.name == "seq":
            columns[field.name] = seq
        elif pa.types.is_floating(field.type):
            columns[field.name] = np.round(100 + rng.normal(0, 1, n), 2)
        else:
            columns[field.name] = pa.nulls(n, field.type)
    return pa.RecordBatch.from_pydict(columns, schema=SCHEMAS[kind])


@pytest.fixture
def query(tmp_path: Path, clock: FakeClock) -> Query:
    """3,000 trades and 3,000 quotes over about two days: the first two thirds flushed to
    the lake (with their 1 s rollups), the rest still in the journal."""
    rng = np.random.default_rng(11)
    journal = Journal(tmp_path / "journal", clock, segment_seconds=60, segment_bytes=1 << 30)
    lake = LakeWriter(tmp_path / "lake", tmp_path / "journal", 3)
    start = clock.now_ns() - 4 * DAY
    for kind in (Kind.TRADE, Kind.QUOTE):
        ts = _times(rng, start, 3000)
        if kind is Kind.QUOTE:
            ts = ts + 7  # quotes never share a time with each other per symbol by chance
            ts += np.arange(len(ts))  # strictly increasing: as-of picks are unambiguous
        batch = _batch(kind, rng, ts)
        journal.append([(kind.value, batch.slice(0, 2000))])
        journal.roll()
        lake.flush_closed()
        journal.append([(kind.value, batch.slice(2000))])
    return Query(tmp_path / "lake", tmp_path / "journal", MemoryHotStore(100))


def _whole(pages: object) -> pa.Table:
    tables = list(pages)  # type: ignore[call-overload]
    assert all(t.num_rows for t in tables), "no empty page is handed out"
    return pa.concat_tables(tables) if tables else pa.table({})


def _range(query: Query) -> tuple[int, int]:
    span = query.span(Kind.TRADE.value)
    assert span is not None
    return span[0] + 1_234_567, span[1] - 7_654_321  # neither end on a whole second


@pytest.mark.parametrize("rows", [41, 5000])
def test_event_pages_equal_one_query(query: Query, rows: int) -> None:
    start, end = _range(query)
    for kind in (Kind.TRADE, Kind.QUOTE):
        expected = query.events(kind, SYMBOLS[:2], start, end)
        for hint in (None, expected.num_rows):
            pages = event_pages(query, kind, SYMBOLS[:2], start, end, rows=rows, expected_rows=hint)
            assert _whole(pages).equals(expected)


def test_windows_follow_the_density(query: Query) -> None:
    """About one query per page: windows are sized to hold a page, sparse ones grow."""
    start, end = _range(query)
    expected = query.events(Kind.TRADE, SYMBOLS, start, end).num_rows
    pages = event_pages(query, Kind.TRADE, SYMBOLS, start, end, rows=50, expected_rows=expected)
    count = sum(1 for _ in pages)
    assert count >= expected // 50
    assert pages.queries <= 2 * count + 20, (pages.queries, count)


@pytest.mark.parametrize("rows", [37, 1000])
def test_replay_pages_equal_one_ordered_query(query: Query, rows: int) -> None:
    start, end = _range(query)
    kinds = [Kind.TRADE, Kind.QUOTE]
    expected = query.replay_page(["quote", "trade"], SYMBOLS, start, end, None, 10**9)
    got = _whole(replay_pages(query, kinds, SYMBOLS, start, end, rows=rows))
    assert got.equals(expected)
    assert expected.num_rows > 5000
    line = expected.column("line")[0].as_py()
    assert line.startswith('{"type":') and line.endswith("}\n")


@pytest.mark.parametrize("rows", [29, 1000])
def test_asof_pages_equal_one_as_of_join(query: Query, rows: int) -> None:
    start, end = _range(query)
    expected = query.trades_with_quotes(SYMBOLS, start, end)
    got = _whole(
        asof_pages(query, SYMBOLS, start, end, lookback_ns=3600 * NS_PER_SECOND, rows=rows)
    )
    assert got.equals(expected)
    assert 0 < expected.column("bid").null_count < expected.num_rows


@pytest.mark.parametrize("interval", list(INTERVALS))
@pytest.mark.parametrize("fill", [False, True])
def test_bar_pages_equal_bars(query: Query, interval: str, fill: bool) -> None:
    """Pages of several symbols when the range fits, else windows per symbol (5 or 40 per
    symbol and range): the same bars, carried closes and all."""
    start, end = _range(query)
    expected = query.bars(SYMBOLS, start, end, interval, fill=fill)
    intervals = (end - start) // (INTERVALS[interval] * NS_PER_SECOND) + 1
    for rows in (3 * intervals, max(intervals // 5, 2), max(intervals // 40, 2)):
        got = _whole(bar_pages(query, SYMBOLS, start, end, interval, fill=fill, rows=rows))
        assert got.equals(expected), (interval, fill, rows)


def test_a_page_boundary_inside_repeated_keys_loses_nothing() -> None:
    """Keys never repeat in stored data (the duplicate rule), but if they did, a page
    never ends between two rows of one key: the next page starts with all of them."""
    rows = [
        (1, "A", "s", 1),
        (2, "A", "s", 2),
        (2, "A", "s", 2),
        (2, "A", "s", 2),
        (3, "A", "s", 3),
    ]
    table = pa.table(
        {
            "ts_event": [r[0] for r in rows],
            "symbol": [r[1] for r in rows],
            "source": [r[2] for r in rows],
            "seq": [r[3] for r in rows],
            "n": list(range(len(rows))),
        }
    )

    def fetch(lo: int, hi: int, after: object, limit: int) -> pa.Table:
        keys = [(r[0], r[1], r[2], r[3]) for r in rows]
        start = 0
        if after is not None:
            cursor = (after[0], after[2], after[3], after[4])  # type: ignore[index]
            start = sum(1 for k in keys if k <= cursor)
        picked = [i for i in range(start, len(rows)) if lo <= rows[i][0] < hi][:limit]
        return table.take(pa.array(picked, pa.int64()))

    pages = KeysetPages(fetch, 0, 10, kind="trade", rows=2)
    assert _whole(pages).column("n").to_pylist() == [0, 1, 2, 3, 4]


def test_pages_read_nothing_until_the_first_page_is_asked(
    query: Query, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages are made where a request is routed (the event loop); the journal is read only
    with the first page, in the worker thread that asks for it."""
    asked: list[str] = []
    monkeypatch.setattr(query, "span", lambda dataset: asked.append(dataset))
    pages = [
        event_pages(query, Kind.TRADE, SYMBOLS, 0, 10**19),
        replay_pages(query, [Kind.TRADE, Kind.QUOTE], SYMBOLS, 0, 10**19),
        asof_pages(query, SYMBOLS, 0, 10**19, lookback_ns=1),
    ]
    assert asked == []
    assert [p.next_page() for p in pages] == [None, None, None]  # nothing stored, by span
    assert asked == ["trade", "quote", "trade", "trade"]
