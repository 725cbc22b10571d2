"""Long ranges read as pages: each page is one short query of at most ``rows`` rows, so a
download or a replay holds one page in memory and no query between pages.

Why: a download or a replay used to be one ``ORDER BY`` over the whole range, read through
a record-batch reader for as long as the client took. DuckDB materialises such a sort
before the first batch and keeps it until the reader is closed, so twelve replays of a
4 M-event range (each held open for hours at ``speed=1``) took the whole memory limit and
failed with ``OutOfMemoryException``, and twenty unread downloads held 825 MB.

A page of raw events is a top-N query (``ORDER BY key LIMIT rows``: DuckDB keeps ``rows``
rows, not the range) over a time window ``[lo, hi)``, resumed strictly after the last key
of the previous page (keyset paging on ``(ts_event, type, symbol, source, seq)``, the
order every reader of ranges uses). The window is sized so it holds about ``rows`` rows:
first from the range's row count, then from what each page found (halved when a page
fills before the window's end, grown up to 8x when a window is sparse), so no page scans
much more than it returns and no window is re-read from its start. Every page lists the
journal and the lake again, so the flusher and the compactor may run between pages: each
page is exact on its own (see ``query.py``), and the key order makes their sequence exact.

Bars page by symbol and by time windows aligned to the interval (a bucket never spans two
pages); ``fill=prev`` carries the last close from one page to the next.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.events import Kind
from tickpipe.store.layout import NS_PER_DAY
from tickpipe.store.query import MAX_NS, PageKey, Query, interval_ns
from tickpipe.store.rollup import BARS_SCHEMA

PAGE_ROWS = 32_768
"""rows of a download's page: about 3 MB of trades in Arrow"""
REPLAY_PAGE_ROWS = 16_384
"""rows of a replay's page: about 4 MB of JSON lines (two pages are held: one paced, one
read ahead); as fast as 32,768 at speed=0, 8,192 took twice as long (4 M events)"""
GROWTH = 8.0
"""a sparse window grows at most this much for the next page"""
FIRST_WIDTH_NS = 60_000_000_000
"""the first window when the range's row count is not known"""
OOM_RETRIES = 5
"""a page that meets a full DuckDB (other queries' peaks) waits and tries again"""
OOM_WAIT_S = 0.2

Fetch = Callable[[int, int, PageKey | None, int], pa.Table]
"""(lo, hi, after, limit) -> at most ``limit`` rows in [lo, hi) after ``after``, in key
order, with ``ts_event``, ``symbol``, ``source``, ``seq`` and (across kinds) ``type``"""


class KeysetPages:
    """Pages of one key-ordered range, each one ``fetch``; iterate, or call ``next_page``
    (from a worker thread: each call is a DuckDB query)."""

    def __init__(
        self,
        fetch: Fetch,
        start_ns: int,
        end_ns: int,
        *,
        kind: str | None,
        rows: int = PAGE_ROWS,
        expected_rows: int | None = None,
        after: PageKey | None = None,
        stored: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        """``kind``: the ``type`` of every row when the pages hold one kind (the rows then
        carry no ``type`` column). ``expected_rows``: the range's row count if known (the
        first window is sized from it; else it spans ``FIRST_WIDTH_NS`` and grows).
        ``after``: resume strictly after this key (a cursor). ``stored``: the [first, last]
        ns that may hold rows, asked with the first page (it reads the journal: in the
        worker thread, never where the pages are made)."""
        self._fetch = fetch
        self._kind = kind
        self._rows = max(int(rows), 2)
        self._lo = max(int(start_ns), 0)
        self._end = min(int(end_ns), MAX_NS)
        self._after = after
        self._expected = expected_rows
        self._stored = stored
        self._width = 0
        self.queries = 0
        """page queries run so far (a test measures that windows are sized well)"""

    def _begin(self) -> None:
        if self._stored is not None:
            span = self._stored()
            if span is None:
                self._end = self._lo
            else:
                self._lo, self._end = max(self._lo, span[0]), min(self._end, span[1] + 1)
        if self._after is not None and self._after[0] >= self._lo:
            self._lo = self._after[0]
        span_ns = self._end - self._lo
        if self._expected:
            self._width = max(span_ns * self._rows // max(self._expected, 1), 1)
        else:
            self._width = max(min(span_ns, FIRST_WIDTH_NS), 1)

    def __iter__(self) -> Iterator[pa.Table]:
        while (page := self.next_page()) is not None:
            yield page

    def take(self, rows: int) -> list[pa.Table]:
        """Pages holding the next ``rows`` rows (fewer at the end of the range)."""
        pages: list[pa.Table] = []
        while rows > 0 and (page := self.next_page()) is not None:
            pages.append(page.slice(0, rows))
            rows -= page.num_rows
        return pages

    def next_page(self) -> pa.Table | None:
        """The next non-empty page, or None at the end of the range."""
        if not self._width:
            self._begin()
        while self._lo < self._end:
            hi = min(self._end, self._lo + self._width)
            limit = self._rows
            while True:
                page = self._query(self._lo, hi, limit)
                found = page.num_rows
                keep = _without_last_key(page, self._kind) if found >= limit else found
                if keep or found < limit:
                    break
                limit *= 2  # one key fills the page (never in stored data): read all of it
            if found >= limit:
                page = page.slice(0, keep)
                self._after = _key_at(page, keep - 1, self._kind)
                covered = self._after[0] - self._lo
                self._lo = self._after[0]
                # the window held more than a page: the next one spans what this page did
                self._width = max(covered, 1)
                return page
            self._lo, self._after = hi, None
            factor = self._rows * 0.8 / max(found, 1)
            self._width = max(int(self._width * min(max(factor, 0.5), GROWTH)), 1)
            if found:
                return page
        return None

    def _query(self, lo: int, hi: int, limit: int) -> pa.Table:
        self.queries += 1
        for attempt in range(OOM_RETRIES):
            try:
                return self._fetch(lo, hi, self._after, limit)
            except duckdb.OutOfMemoryException:
                if attempt == OOM_RETRIES - 1:
                    raise
                time.sleep(OOM_WAIT_S * (attempt + 1))
        raise AssertionError("unreachable")


def _key_at(page: pa.Table, row: int, kind: str | None) -> PageKey:
    get = page.column
    return (
        int(get("ts_event")[row].as_py()),
        kind if kind is not None else str(get("type")[row].as_py()),
        str(get("symbol")[row].as_py()),
        str(get("source")[row].as_py()),
        int(get("seq")[row].as_py()),
    )


def _without_last_key(page: pa.Table, kind: str | None) -> int:
    """Rows of a full page to keep: all but those sharing the last row's key, so the next
    page (strictly after the kept rows) starts with all of them, should a key ever repeat
    (the quality stage's duplicate rule means it never does). 0 when one key fills the
    page."""
    columns = ["ts_event", "symbol", "source", "seq"] + ([] if kind is not None else ["type"])
    last = page.num_rows - 1
    same = pa.array([True] * page.num_rows)
    for name in columns:
        column = page.column(name)
        same = pc.and_(same, pc.equal(column, column[last]))
    return int(page.num_rows) - int(pc.sum(same).as_py() or 0)


def _stored(query: Query, datasets: list[str]) -> Callable[[], tuple[int, int] | None]:
    """[first, last] ns where ``datasets`` may hold rows (cheap: no Parquet file opened)."""

    def span() -> tuple[int, int] | None:
        spans = [s for s in (query.span(d) for d in datasets) if s is not None]
        if not spans:
            return None
        return min(s[0] for s in spans), max(s[1] for s in spans)

    return span


def _data_bounds(query: Query, datasets: list[str], start_ns: int, end_ns: int) -> tuple[int, int]:
    """[start, end) narrowed to where ``datasets`` may hold rows."""
    span = _stored(query, datasets)()
    if span is None:
        return start_ns, start_ns
    return max(start_ns, span[0]), min(end_ns, span[1] + 1)


def event_pages(
    query: Query,
    kind: Kind,
    symbols: list[str],
    start_ns: int,
    end_ns: int,
    *,
    rows: int = PAGE_ROWS,
    expected_rows: int | None = None,
    after: tuple[int, str, str, int] | None = None,
) -> KeysetPages:
    """Raw events of one kind in (ts_event, symbol, source, seq) order, under its schema,
    strictly after ``after`` (ts_event, symbol, source, seq) if given."""

    def fetch(lo: int, hi: int, after: PageKey | None, limit: int) -> pa.Table:
        return query.events(kind, symbols, lo, hi, limit, after=after and after_of(after))

    return KeysetPages(
        fetch,
        start_ns,
        end_ns,
        kind=kind.value,
        rows=rows,
        expected_rows=expected_rows,
        after=after and key_of(kind.value, after),
        stored=_stored(query, [kind.value]),
    )


def key_of(kind: str, after: tuple[int, str, str, int]) -> PageKey:
    """The page key of one kind's (ts_event, symbol, source, seq) cursor."""
    return after[0], kind, after[1], after[2], after[3]


def after_of(key: PageKey) -> tuple[int, str, str, int]:
    """One kind's (ts_event, symbol, source, seq) cursor from a page key."""
    return key[0], key[2], key[3], key[4]


def replay_pages(
    query: Query,
    kinds: list[Kind],
    symbols: list[str],
    start_ns: int,
    end_ns: int,
    *,
    rows: int = REPLAY_PAGE_ROWS,
    expected_rows: int | None = None,
) -> KeysetPages:
    """Events of several kinds in (ts_event, type, symbol, source, seq) order, each as
    ``line`` (a JSON object with its ``type``, built by DuckDB), beside ``ts_event``."""
    datasets = sorted(k.value for k in kinds)

    def fetch(lo: int, hi: int, after: PageKey | None, limit: int) -> pa.Table:
        return query.replay_page(datasets, symbols, lo, hi, after, limit)

    return KeysetPages(
        fetch,
        start_ns,
        end_ns,
        kind=None,
        rows=rows,
        expected_rows=expected_rows,
        stored=_stored(query, datasets),
    )


class _Prevailing:
    """The quote prevailing per symbol at the start of the next trade page: carried from
    page to page, so a page joins its trades with that and its own window's quotes only
    (never the whole look-back again)."""

    def __init__(self, query: Query, symbols: list[str], start_ns: int, lookback_ns: int) -> None:
        self._query = query
        self._symbols = symbols
        self._floor = max(start_ns - lookback_ns, 0)
        self.at = start_ns
        self.quotes = query.prevailing_quotes(symbols, self._floor, start_ns, None)

    def advance(self, lo: int) -> None:
        if lo > self.at:
            self.quotes = self._query.prevailing_quotes(
                self._symbols, max(self.at, self._floor), lo, self.quotes
            )
            self.at = lo


def asof_pages(
    query: Query,
    symbols: list[str],
    start_ns: int,
    end_ns: int,
    *,
    lookback_ns: int,
    rows: int = PAGE_ROWS,
    expected_rows: int | None = None,
    after: tuple[int, str, str, int] | None = None,
) -> KeysetPages:
    """Trades with the bid/ask prevailing at each (``Query.trades_with_quotes``: quotes up
    to ``lookback_ns`` before ``start`` count), paged; strictly after ``after`` if given."""
    prevailing: list[_Prevailing] = []

    def fetch(lo: int, hi: int, after: PageKey | None, limit: int) -> pa.Table:
        if not prevailing:  # in the worker thread, with the first page
            prevailing.append(_Prevailing(query, symbols, start_ns, lookback_ns))
        carried = prevailing[0]
        carried.advance(lo)
        return query.trades_with_quotes_page(
            symbols, lo, hi, after and after_of(after), limit, carried.quotes
        )

    return KeysetPages(
        fetch,
        start_ns,
        end_ns,
        kind=Kind.TRADE.value,
        rows=rows,
        expected_rows=expected_rows,
        after=after and key_of(Kind.TRADE.value, after),
        stored=_stored(query, [Kind.TRADE.value]),
    )


def bar_pages(
    query: Query,
    symbols: list[str],
    start_ns: int,
    end_ns: int,
    interval: str,
    *,
    fill: bool,
    rows: int = PAGE_ROWS,
) -> Iterator[pa.Table]:
    """``Query.bars`` in pages of at most about ``rows`` bars, in (symbol, time) order.

    When the whole range fits, a page holds as many symbols as fit; otherwise each
    symbol is read in windows of ``rows`` intervals, aligned to the interval (every
    interval divides a day), skipping days with no stored trades. With ``fill``, each
    symbol's grid runs from its first bar to the last bar of any symbol, the close carried
    across pages (and across days without trades): what ``Query.bars(fill=True)``
    returns, in pieces."""
    step = interval_ns(interval)
    lo, hi = _data_bounds(query, [Kind.TRADE.value], start_ns, end_ns)
    if hi <= lo:
        return
    last = MAX_NS
    if fill:
        newest = query.last_trade_ns(symbols, lo, hi)
        if newest is None:
            return
        last = newest - newest % step
    intervals = -(-(hi - lo) // step) + 1
    ordered = sorted(symbols)
    if intervals <= rows:
        per_page = max(rows // intervals, 1)
        for i in range(0, len(ordered), per_page):
            group = ordered[i : i + per_page]
            table = query.bars(group, lo, hi, interval)
            if fill:
                parts = [
                    _fill(
                        table.filter(pc.equal(table.column("symbol"), s)),
                        s,
                        lo,
                        last,
                        step,
                        _Carry(),
                    )
                    for s in group
                ]
                table = pa.concat_tables(parts)
            if table.num_rows:
                yield table
        return
    days = query.trade_days(lo, hi)
    for symbol in ordered:
        carry = _Carry()
        w_lo = lo
        while w_lo < hi:
            if carry.close is None:  # nothing to carry yet: skip to a day with trades
                index = bisect.bisect_right(days, w_lo // NS_PER_DAY - 1)
                if index == len(days):
                    break
                w_lo = max(w_lo, days[index] * NS_PER_DAY)
            elif w_lo > last:
                break
            w_hi = min(hi, (w_lo + rows * step) // step * step)
            if w_hi <= w_lo:
                w_hi = min(hi, w_lo - w_lo % step + step)
            index = bisect.bisect_right(days, w_lo // NS_PER_DAY - 1)
            if index < len(days) and days[index] * NS_PER_DAY < w_hi:
                table = query.bars([symbol], w_lo, w_hi, interval)
            else:  # a stretch without trades: only carried closes, no query
                table = BARS_SCHEMA.empty_table()
            if fill:
                table = _fill(table, symbol, w_lo, min(w_hi - 1, last), step, carry)
            if table.num_rows:
                yield table
            w_lo = w_hi


class _Carry:
    """What ``fill`` carries from one page of a symbol to the next: its last close."""

    def __init__(self) -> None:
        self.close: float | None = None


def _fill(bars: pa.Table, symbol: str, w_lo: int, upto: int, step: int, carry: _Carry) -> pa.Table:
    """One symbol's bars of one window with every interval from its first bar (or the
    window's first interval, once there is a close to carry) to ``upto``: an empty one
    holds the latest close, zero volume and zero trades, as ``Query.bars(fill=True)``
    (there, too, a bar's missing vwap is its close)."""
    times = bars.column("time").to_numpy()
    if carry.close is None:
        if len(times) == 0:
            return bars
        first = int(times[0])
    else:
        first = -(-w_lo // step) * step
    if upto < first:
        return bars
    grid = np.arange(first, upto + 1, step, dtype=np.int64)
    at = np.searchsorted(times, grid)
    hit = at < len(times)
    present = np.zeros(len(grid), dtype=bool)
    present[hit] = times[at[hit]] == grid[hit]
    row = np.where(present, at, 0)
    nothing = np.nan if carry.close is None else carry.close
    if len(times) == 0:
        carried = np.full(len(grid), nothing)
    else:
        closes = _floats(bars, "close")
        latest = np.maximum.accumulate(np.where(present, np.arange(len(grid)), -1))
        carried = np.where(latest >= 0, closes[row[np.maximum(latest, 0)]], nothing)
        carry.close = float(closes[-1])

    def prices(name: str) -> pa.Array:
        if len(times) == 0:
            return pa.array(carried)
        values = _floats(bars, name)[row]
        return pa.array(np.where(present & ~np.isnan(values), values, carried))

    def counts(name: str, kind: type) -> pa.Array:
        if len(times) == 0:
            return pa.array(np.zeros(len(grid), dtype=kind))
        values = bars.column(name).to_numpy(zero_copy_only=False)[row]
        return pa.array(np.where(present, values, 0).astype(kind))

    return pa.table(
        {
            "symbol": pa.array([symbol] * len(grid), pa.string()),
            "time": pa.array(grid),
            "open": prices("open"),
            "high": prices("high"),
            "low": prices("low"),
            "close": prices("close"),
            "volume": counts("volume", np.float64),
            "trades": counts("trades", np.int64),
            "vwap": prices("vwap"),
        },
        schema=BARS_SCHEMA,
    )


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
