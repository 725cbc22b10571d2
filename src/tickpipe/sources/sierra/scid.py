"""Sierra Chart ``.scid`` intraday files: exact, vectorised decoding. Pure: bytes in, Arrow out.

Layout (little-endian; Sierra's ``s_IntradayHeader`` / ``s_IntradayRecord``): a 56-byte
header (``"SCID"``, HeaderSize, RecordSize, Version, ...) then 40-byte records, oldest first::

    int64 DateTime   µs since 1899-12-30 UTC (+1 µs per extra record in the same millisecond)
    float32 Open High Low Close; uint32 NumTrades TotalVolume BidVolume AskVolume

A real tick (seandunaway/scid ``test.scid``, record 4): DateTime 3886173482105000
(2023-02-21 20:38:02.105 UTC), Open -1.99900095e+37 (first sub-trade marker), High 4048.25
(ask), Low 4047.75 (bid), Close 4047.75 (price), NumTrades 1, TotalVolume 1, BidVolume 1.

What a record becomes:

- tick (Open is 0.0 or an unbundled-trade marker): a Trade (price = Close, size =
  TotalVolume, aggressor "B" when AskVolume carries the volume, "S" for BidVolume, flags
  FIRST/LAST_SUB_TRADE from the marker) when TotalVolume > 0, and a Quote (bid = Low, ask =
  High) when both are set. Quote sizes come from Bid/AskVolume only on bid/ask-only records
  (TotalVolume 0); a trade's Bid/AskVolume split its own volume, so its quote sizes are 0.
- bar (Open is a real price): a Bar; bars carry no quotes.
- empty (DateTime 0, no prices, no trades): skipped, as Sierra's ``IsEmpty`` does.
- a DateTime that is no date between 1970 and 2100, either as µs or as the old format's OLE
  double days: rejected with its reason. Counts above INT_MAX read as 0 (Sierra's ``Fix``).

``seq`` is the record's number in its file (1-based) plus an optional offset, so the same
record imported and later tailed is the same (source, symbol, seq). Prices are float32:
rounded to the symbol's tick size, or without one to 7 significant digits.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tickpipe.errors import ParseError
from tickpipe.events import SCHEMAS, Kind, TradeFlag
from tickpipe.sources.base import Batches
from tickpipe.sources.sierra.columns import (
    aggressor_column,
    constant_strings,
    round_prices,
    unix_us_from_sierra,
)

MAGIC = b"SCID"
HEADER_SIZE = 56
RECORD_SIZE = 40

RECORD_DTYPE = np.dtype(
    [
        ("dt", "<i8"),
        ("open", "<f4"),
        ("high", "<f4"),
        ("low", "<f4"),
        ("close", "<f4"),
        ("num_trades", "<u4"),
        ("total_volume", "<u4"),
        ("bid_volume", "<u4"),
        ("ask_volume", "<u4"),
    ]
)
assert RECORD_DTYPE.itemsize == RECORD_SIZE

FIRST_SUB_TRADE = np.float32(-1.99900095e37)
LAST_SUB_TRADE = np.float32(-1.99900197e37)
_MARKER_RTOL = np.float32(1e-7)
"""the two markers differ by 5e-7 relative: 1e-7 tells them apart and absorbs rounding"""
MARKER_BELOW = np.float32(-1e37)
"""no price is this negative: an Open below it is one of the two markers"""
INT_MAX = 2**31 - 1
MAX_RAW_KEPT = 1000
"""raw bytes kept per kind of bad record in one decode; the indices cover them all"""


class ScidError(ParseError):
    """A file is not a .scid file this reader can decode; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class ScidHeader:
    header_size: int
    record_size: int
    version: int


def parse_header(data: bytes, *, where: str = "file") -> ScidHeader:
    """Check the 56-byte header; a clear ScidError for anything that is not a readable .scid."""
    if data[:4] != MAGIC:
        raise ScidError(
            f"{where} is not a Sierra Chart .scid file: it starts with {data[:4]!r}, not b'SCID'",
            raw=bytes(data[:HEADER_SIZE]),
        )
    if len(data) < HEADER_SIZE:
        raise ScidError(
            f"{where} is cut short: {len(data)} bytes, less than the {HEADER_SIZE}-byte header",
            raw=bytes(data),
        )
    header_size, record_size, version = struct.unpack_from("<IIH", data, 4)
    if header_size < HEADER_SIZE:
        raise ScidError(
            f"{where}: header size {header_size} is smaller than the {HEADER_SIZE} bytes of "
            "s_IntradayHeader; the file is damaged",
            raw=bytes(data[:HEADER_SIZE]),
        )
    if record_size != RECORD_SIZE:
        raise ScidError(
            f"{where}: record size {record_size}, but s_IntradayRecord is {RECORD_SIZE} bytes; "
            "this file was written by a format this reader does not know",
            raw=bytes(data[:HEADER_SIZE]),
        )
    return ScidHeader(header_size, record_size, version)


@dataclasses.dataclass(frozen=True, slots=True)
class BadRecords:
    """Records that could not become events: their indices in the file, raw bytes and why."""

    reason: str
    indices: npt.NDArray[np.int64]
    raw: list[bytes]


@dataclasses.dataclass(slots=True)
class Decoded:
    batches: Batches
    bad: list[BadRecords]
    skipped: int
    """empty records, and ticks with neither a trade nor a quote"""
    last_dt: int | None
    """the raw DateTime of the last record with a plausible time (the tail's resume mark)"""

    @property
    def rows(self) -> dict[Kind, int]:
        return {kind: batch.num_rows for kind, batch in self.batches.items()}


def as_records(data: bytes | bytearray | memoryview) -> npt.NDArray[np.void]:
    """Whole 40-byte records of a buffer as a structured array (no copy)."""
    usable = len(data) - len(data) % RECORD_SIZE
    return np.frombuffer(data, dtype=RECORD_DTYPE, count=usable // RECORD_SIZE)


def decode(
    records: npt.NDArray[np.void],
    *,
    symbol: str,
    first_index: int,
    recv_ns: int,
    tick_size: float | None = None,
    seq_offset: int = 0,
    source: str = "sierra",
) -> Decoded:
    """Records ``first_index ...`` of one file to a batch per kind, without a row loop.

    Each full pass over a field costs ~1 ms per million records, so the common case (every
    record a tick with a trade and a quote) takes no fancy indexing at all."""
    n = records.shape[0]
    raw_dt = records["dt"]
    unix_us, plausible = unix_us_from_sierra(raw_dt)
    o = records["open"]
    volume = _fix(records["total_volume"])
    zero_open = o == 0
    candidates = np.flatnonzero(o < MARKER_BELOW)
    first = last = None
    tick = zero_open
    if candidates.size:  # rare: compare only those rows with the two markers
        values = o[candidates]
        with np.errstate(invalid="ignore", over="ignore"):
            is_first = np.abs(values - FIRST_SUB_TRADE) <= _MARKER_RTOL * -FIRST_SUB_TRADE
            is_last = np.abs(values - LAST_SUB_TRADE) <= _MARKER_RTOL * -LAST_SUB_TRADE
        first = np.zeros(n, bool)
        last = np.zeros(n, bool)
        first[candidates[is_first]] = True
        last[candidates[is_last]] = True
        tick = zero_open | first | last
    empty = bad_time = None
    if not plausible.all():
        suspect = ~plausible & (raw_dt == 0) & zero_open & (records["num_trades"] == 0)
        suspect &= (records["high"] == 0) & (records["low"] == 0) & (records["close"] == 0)
        empty = suspect
        bad_time = ~plausible & ~empty
        tick &= plausible
    usable = plausible
    h = records["high"]
    lo = records["low"]
    has_trade = volume > 0
    is_trade = tick & has_trade
    is_quote = tick & (h != 0) & (lo != 0)
    is_bar = usable & ~tick if not tick.all() else None

    seq = np.arange(first_index + 1 + seq_offset, first_index + 1 + seq_offset + n, dtype=np.int64)
    ts_ns = unix_us * 1000
    const = _Constants(symbol, source, recv_ns)
    batches: Batches = {}
    if is_trade.any():
        rows = _rows(is_trade)
        bid_vol = _pick(records["bid_volume"], rows)  # only compared: no Fix() needed
        ask_vol = _pick(records["ask_volume"], rows)
        m = n if rows is None else rows.size
        flags = np.zeros(m, np.int64)
        if first is not None and last is not None:
            flags[_pick(first, rows)] = TradeFlag.FIRST_SUB_TRADE
            flags[_pick(last, rows)] = TradeFlag.LAST_SUB_TRADE
        batches[Kind.TRADE] = _batch(
            Kind.TRADE,
            ts_event=pa.array(_pick(ts_ns, rows)),
            ts_recv=const.recv(m),
            symbol=const.symbol(m),
            price=pa.array(round_prices(_pick(records["close"], rows), tick_size)),
            size=pa.array(_pick(volume, rows).astype(np.float64)),
            source=const.source(m),
            seq=pa.array(_pick(seq, rows)),
            exchange=pa.nulls(m, pa.string()),
            conditions=pa.nulls(m, pa.string()),
            aggressor=aggressor_column(bid_vol, ask_vol),
            flags=pa.array(flags),
        )
    if is_quote.any():
        rows = _rows(is_quote)
        m = n if rows is None else rows.size
        no_trade = ~_pick(has_trade, rows)
        bid_size = ask_size = const.zeros(m)  # a trade's Bid/AskVolume are no quote sizes
        if no_trade.any():
            bid_size, ask_size = np.zeros(m), np.zeros(m)
            bid_size[no_trade] = _fix(_pick(records["bid_volume"], rows)[no_trade])
            ask_size[no_trade] = _fix(_pick(records["ask_volume"], rows)[no_trade])
        batches[Kind.QUOTE] = _batch(
            Kind.QUOTE,
            ts_event=pa.array(_pick(ts_ns, rows)),
            ts_recv=const.recv(m),
            symbol=const.symbol(m),
            bid=pa.array(round_prices(_pick(lo, rows), tick_size)),
            bid_size=pa.array(bid_size),
            ask=pa.array(round_prices(_pick(h, rows), tick_size)),
            ask_size=pa.array(ask_size),
            source=const.source(m),
            seq=pa.array(_pick(seq, rows)),
        )
    if is_bar is not None and is_bar.any():
        rows = np.flatnonzero(is_bar)
        m = rows.size
        batches[Kind.BAR] = _batch(
            Kind.BAR,
            ts_event=pa.array(ts_ns[rows]),
            ts_recv=const.recv(m),
            symbol=const.symbol(m),
            open=pa.array(round_prices(o[rows], tick_size)),
            high=pa.array(round_prices(h[rows], tick_size)),
            low=pa.array(round_prices(lo[rows], tick_size)),
            close=pa.array(round_prices(records["close"][rows], tick_size)),
            volume=pa.array(volume[rows].astype(np.float64)),
            source=const.source(m),
            seq=pa.array(seq[rows]),
            trades=pa.array(_fix(records["num_trades"][rows]).astype(np.int64)),
            bid_volume=pa.array(_fix(records["bid_volume"][rows]).astype(np.float64)),
            ask_volume=pa.array(_fix(records["ask_volume"][rows]).astype(np.float64)),
            interval_s=pa.nulls(m, pa.float64()),
        )
    bad: list[BadRecords] = []
    if bad_time is not None and bad_time.any():
        rows = np.flatnonzero(bad_time)
        bad.append(
            BadRecords(
                "DateTime is no date between 1970 and 2100 (neither µs since 1899-12-30 "
                "nor the old format's OLE days)",
                rows.astype(np.int64) + first_index,
                [records[i : i + 1].tobytes() for i in rows[:MAX_RAW_KEPT]],
            )
        )
    skipped = int((tick & ~is_trade & ~is_quote).sum())
    if empty is not None:
        skipped += int(empty.sum())
    last_dt = None
    if n and usable[-1]:
        last_dt = int(raw_dt[-1])
    elif (good := np.flatnonzero(usable)).size:
        last_dt = int(raw_dt[good[-1]])
    return Decoded(batches=batches, bad=bad, skipped=skipped, last_dt=last_dt)


def _batch(kind: Kind, **columns: pa.Array) -> pa.RecordBatch:
    """A batch of ``kind`` from columns given by name, in its schema's order: a column the
    schema gains, loses or reorders is an error here, not a silently shifted field."""
    schema = SCHEMAS[kind]
    if set(columns) != set(schema.names):
        raise ValueError(
            f"{kind.value} columns {sorted(columns)} do not match its schema {schema.names}"
        )
    return pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema)


class _Constants:
    """Columns that hold one value, built once per length and shared by the kinds (Arrow
    arrays are immutable): fewer fresh pages to fault in per chunk."""

    def __init__(self, symbol: str, source: str, recv_ns: int) -> None:
        self._symbol, self._source, self._recv_ns = symbol, source, recv_ns
        self._cache: dict[tuple[str, int], Any] = {}

    def _get(self, what: str, n: int, make: Any) -> Any:
        key = (what, n)
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def symbol(self, n: int) -> pa.Array:
        return self._get("symbol", n, lambda: constant_strings(self._symbol, n))

    def source(self, n: int) -> pa.Array:
        return self._get("source", n, lambda: constant_strings(self._source, n))

    def recv(self, n: int) -> pa.Array:
        return self._get("recv", n, lambda: pa.array(np.full(n, self._recv_ns, np.int64)))

    def zeros(self, n: int) -> npt.NDArray[np.float64]:
        return self._get("zeros", n, lambda: np.zeros(n))  # type: ignore[no-any-return]


def _rows(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp] | None:
    """Row indices of a mask, or None when it selects every row (no copy needed)."""
    return None if mask.all() else np.flatnonzero(mask)


def _pick(values: npt.NDArray[Any], rows: npt.NDArray[np.intp] | None) -> npt.NDArray[Any]:
    return values if rows is None else values[rows]


def _fix(counts: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """Sierra's ``Fix()``: a count above INT_MAX is garbage and reads as 0."""
    if counts.size == 0 or counts.max() <= INT_MAX:
        return counts
    return np.where(counts > INT_MAX, np.uint32(0), counts)
