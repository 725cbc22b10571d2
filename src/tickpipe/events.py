"""The event model: every source turns its wire format into these records, nothing else.

All timestamps are int64 nanoseconds since the Unix epoch, UTC. ``ts_event`` is the
exchange or feed time, ``ts_recv`` the time tickpipe received the event. ``seq`` is a
per-(source, symbol) counter; (source, symbol, ts_event, seq) identifies an event.

Each record class is the single definition of its kind: the Arrow schema used by the
columnar (bulk) paths is derived from the dataclass fields, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any, ClassVar

import pyarrow as pa


class Kind(StrEnum):
    """Event kinds; the value names the lake dataset and the ``type`` field in the API."""

    TRADE = "trade"
    QUOTE = "quote"
    BOOK = "book"
    OPTION = "option"
    GEX = "gex"
    BAR = "bars"


class TradeFlag:
    """Bits of ``Trade.flags``."""

    FIRST_SUB_TRADE = 1
    """first print of a large trade the feed split into sub-trades (Sierra Chart unbundled)"""
    LAST_SUB_TRADE = 2
    """last print of such a split trade"""


@dataclasses.dataclass(frozen=True, slots=True)
class Trade:
    KIND: ClassVar[Kind] = Kind.TRADE
    ts_event: int
    ts_recv: int
    symbol: str
    price: float
    size: float
    source: str
    seq: int
    exchange: str | None = None
    conditions: str | None = None
    aggressor: str | None = None
    """"B" the buyer lifted the ask, "S" the seller hit the bid; None when the feed says not"""
    flags: int | None = None
    """feed-specific bits, see ``TradeFlag``"""


@dataclasses.dataclass(frozen=True, slots=True)
class Quote:
    """Top of book."""

    KIND: ClassVar[Kind] = Kind.QUOTE
    ts_event: int
    ts_recv: int
    symbol: str
    bid: float | None
    """None: the book has no bid (one-sided market); NaN is a bad value, not an absence"""
    bid_size: float | None
    """None: the feed did not say (DXLink sends NaN sizes), the price still stands"""
    ask: float | None
    ask_size: float | None
    source: str
    seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class BookUpdate:
    """One level-2 price level; ``side`` is "B" (bid) or "A" (ask), ``level`` 0 = best."""

    KIND: ClassVar[Kind] = Kind.BOOK
    ts_event: int
    ts_recv: int
    symbol: str
    side: str
    level: int
    price: float
    size: float
    source: str
    seq: int
    orders: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class OptionQuote:
    """One option line; ``symbol`` in OCC form, ``right`` "C" or "P", ``expiry`` a date."""

    KIND: ClassVar[Kind] = Kind.OPTION
    ts_event: int
    ts_recv: int
    symbol: str
    underlying: str
    expiry: dt.date
    strike: float
    right: str
    bid: float
    ask: float
    last: float
    volume: float
    open_interest: float
    iv: float
    delta: float
    gamma: float
    source: str
    seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class GexLevels:
    """Gamma-exposure summary for one underlying; per-strike arrays share one index."""

    KIND: ClassVar[Kind] = Kind.GEX
    ts_event: int
    ts_recv: int
    symbol: str
    spot: float
    zero_gamma: float | None
    call_wall: float | None
    put_wall: float | None
    total_gex_usd_per_1pct: float
    strikes: list[float]
    gex_usd_per_1pct: list[float]
    source: str
    seq: int
    category: str | None = None
    """which expiries the levels cover ("full", "zero", "one"...); None: tickpipe's full set"""
    major_pos_vol: float | None = None
    major_pos_oi: float | None = None
    major_neg_vol: float | None = None
    major_neg_oi: float | None = None
    net_gex_vol: float | None = None
    """net GEX summed over strikes by volume, in the same USD-per-1 % unit as the ladder"""
    net_gex_oi: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Bar:
    """An OHLCV bar a feed delivers as such (Sierra Chart bar records), not one we rolled up.

    ``ts_event`` is the bar's start; ``interval_s`` its length when the feed says (else None).
    """

    KIND: ClassVar[Kind] = Kind.BAR
    ts_event: int
    ts_recv: int
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    source: str
    seq: int
    trades: int | None = None
    bid_volume: float | None = None
    ask_volume: float | None = None
    interval_s: float | None = None


Event = Trade | Quote | BookUpdate | OptionQuote | GexLevels | Bar

RECORDS: dict[Kind, type[Any]] = {
    Kind.TRADE: Trade,
    Kind.QUOTE: Quote,
    Kind.BOOK: BookUpdate,
    Kind.OPTION: OptionQuote,
    Kind.GEX: GexLevels,
    Kind.BAR: Bar,
}

KEY_COLUMNS = ("source", "symbol", "ts_event", "seq")
PRICE_COLUMNS: dict[Kind, tuple[str, ...]] = {
    Kind.TRADE: ("price",),
    Kind.QUOTE: ("bid", "ask"),
    Kind.BOOK: ("price",),
    Kind.OPTION: ("bid", "ask"),
    Kind.GEX: ("spot",),
    Kind.BAR: ("open", "high", "low", "close"),
}
SIZE_COLUMNS: dict[Kind, tuple[str, ...]] = {
    Kind.TRADE: ("size",),
    Kind.QUOTE: ("bid_size", "ask_size"),
    Kind.BOOK: ("size",),
    Kind.OPTION: ("volume", "open_interest"),
    Kind.GEX: (),
    Kind.BAR: ("volume",),
}

_ARROW_TYPES: dict[Any, pa.DataType] = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    dt.date: pa.date32(),
    list[float]: pa.list_(pa.float64()),
}


def _arrow_field(name: str, annotation: Any) -> pa.Field:
    nullable = False
    if isinstance(annotation, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable, annotation = True, args[0]
    return pa.field(name, _ARROW_TYPES[annotation], nullable=nullable)


def _schema_of(record: type[Any]) -> pa.Schema:
    hints = typing.get_type_hints(record)
    return pa.schema(
        [_arrow_field(f.name, hints[f.name]) for f in dataclasses.fields(record)],
        metadata={b"tickpipe.kind": record.KIND.value.encode()},
    )


SCHEMAS: dict[Kind, pa.Schema] = {kind: _schema_of(rec) for kind, rec in RECORDS.items()}


def to_batch(kind: Kind, records: Sequence[Event]) -> pa.RecordBatch:
    """Records of one kind to a columnar batch (for adapters that parse frame by frame)."""
    schema = SCHEMAS[kind]
    columns = {name: [getattr(r, name) for r in records] for name in schema.names}
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def from_batch(kind: Kind, batch: pa.RecordBatch | pa.Table) -> list[Any]:
    """A batch back to records; for tests and small paths, never the hot path."""
    record = RECORDS[kind]
    return [record(**row) for row in batch.to_pylist()]


def group_by_kind(events: Iterable[Event]) -> dict[Kind, pa.RecordBatch]:
    """Mixed records to one batch per kind, keeping arrival order within each kind."""
    grouped: dict[Kind, list[Event]] = {}
    for event in events:
        grouped.setdefault(event.KIND, []).append(event)
    return {kind: to_batch(kind, recs) for kind, recs in grouped.items()}
