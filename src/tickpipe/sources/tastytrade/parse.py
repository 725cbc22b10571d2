"""DXLink FEED_DATA, pure: a decoded message in, one column set per event type out.

COMPACT data alternates event types and flat value arrays, each array the concatenation
of whole events in the field order the *server* confirmed in FEED_CONFIG (the requested
order only until one arrives); several (type, values) runs may share a message::

    {"type":"FEED_DATA","channel":3,"data":["Trade",["Trade","SPY",559.36,1.3743299E7,100.0,
     "Trade","BTC/USD:CXTALP",58356.71,"NaN","NaN"]]}

Tolerated because real sessions show them: FULL data (objects with named fields) on a
COMPACT channel, a nested ``[type, [fields...]]`` header that also declares the fields,
doubles as ``"NaN"`` / ``"Infinity"`` strings and in exponent notation, and integers past
2^53 (event indices). Values stay in per-column Python lists (one slice per field, no
per-event objects); ``floats`` / ``ints`` / ``texts`` turn a column into arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.errors import ParseError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# What we ask for. The server may answer with another order or fewer fields; only names
# matter to the decoder. "eventType" is not asked for: it would repeat in every event.
REQUESTED_FIELDS: dict[str, list[str]] = {
    "Quote": [
        "eventSymbol", "eventTime", "sequence", "timeNanoPart", "bidTime", "bidExchangeCode",
        "askTime", "askExchangeCode", "bidPrice", "askPrice", "bidSize", "askSize",
    ],
    "Trade": [
        "eventSymbol", "eventTime", "time", "timeNanoPart", "sequence", "exchangeCode",
        "price", "change", "size", "dayVolume",
    ],
    "TimeAndSale": [
        "eventSymbol", "eventTime", "eventFlags", "index", "time", "timeNanoPart", "sequence",
        "exchangeCode", "price", "size", "bidPrice", "askPrice", "exchangeSaleConditions",
        "aggressorSide", "extendedTradingHours", "validTick", "type",
    ],
    "Greeks": [
        "eventSymbol", "eventTime", "eventFlags", "index", "time", "sequence", "price",
        "volatility", "delta", "gamma", "theta", "rho", "vega",
    ],
    "Summary": [
        "eventSymbol", "eventTime", "dayId", "openInterest", "dayOpenPrice", "dayHighPrice",
        "dayLowPrice", "prevDayClosePrice",
    ],
}  # fmt: skip


class FeedFields:
    """The field list per event type on one channel: requested, then as the server says."""

    def __init__(self, requested: Mapping[str, Sequence[str]] = REQUESTED_FIELDS) -> None:
        self.requested = {k: list(v) for k, v in requested.items()}
        self.confirmed: dict[str, list[str]] = {}

    def configure(self, message: Mapping[str, Any]) -> None:
        """Apply a FEED_CONFIG; one without ``eventFields`` keeps what we had."""
        fields = message.get("eventFields")
        if not isinstance(fields, Mapping):
            return
        for event_type, names in fields.items():
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                self.confirmed[str(event_type)] = list(names)

    def of(self, event_type: str) -> list[str] | None:
        return self.confirmed.get(event_type) or self.requested.get(event_type)

    def whole(self, data: Any) -> bool:
        """COMPACT data of known event types, each run a whole number of events: what can
        be merged with the next message's and decoded together without changing what
        decoding each alone would give."""
        if not isinstance(data, list) or not data or len(data) % 2:
            return False
        for i in range(0, len(data), 2):
            event_type, values = data[i], data[i + 1]
            names = self.of(event_type) if isinstance(event_type, str) else None
            if not names or not isinstance(values, list) or len(values) % len(names):
                return False
        return True

    def reset(self) -> None:
        """A new connection negotiates again."""
        self.confirmed.clear()


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """The events of one type from one message, as columns of raw JSON values."""

    event_type: str
    columns: dict[str, list[Any]]
    size: int

    def column(self, name: str) -> list[Any] | None:
        return self.columns.get(name)


@dataclasses.dataclass(frozen=True, slots=True)
class Decoded:
    runs: list[Run]
    problems: list[str]
    """why runs of this message could not be decoded (the rest still was)"""
    unknown_types: list[str]
    """event types with no field list: counted and skipped"""


def decode_feed_data(data: Any, fields: FeedFields) -> Decoded:
    """Split FEED_DATA ``data`` (COMPACT or FULL) into runs; never raises on content."""
    if not isinstance(data, list) or not data:
        return Decoded([], [f"FEED_DATA data is not a non-empty list: {type(data).__name__}"], [])
    if isinstance(data[0], dict):
        return _decode_full(data)
    runs: list[Run] = []
    problems: list[str] = []
    unknown: list[str] = []
    i = 0
    while i < len(data):
        head = data[i]
        values = data[i + 1] if i + 1 < len(data) else None
        i += 2
        event_type, names = _header(head, fields)
        if event_type is None:
            problems.append(f"expected an event type at position {i - 2}, got {head!r:.80}")
            continue
        if not isinstance(values, list):
            problems.append(f"{event_type}: no value array after the event type")
            continue
        if names is None:
            unknown.append(event_type)
            continue
        width = len(names)
        if width == 0 or len(values) % width:
            problems.append(
                f"{event_type}: {len(values)} values are not whole events of "
                f"{width} fields ({', '.join(names)})"
            )
            continue
        columns = {name: values[j::width] for j, name in enumerate(names)}
        runs.append(Run(event_type, columns, len(values) // width))
    return Decoded(runs, problems, unknown)


def _header(head: Any, fields: FeedFields) -> tuple[str | None, list[str] | None]:
    """``"Quote"``, or the nested ``["Quote", [fields...]]`` that also declares fields."""
    if isinstance(head, str):
        return head, fields.of(head)
    if isinstance(head, list) and head and isinstance(head[0], str):
        names = head[1] if len(head) > 1 else None
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            fields.confirmed[head[0]] = list(names)
        return head[0], fields.of(head[0])
    return None, None


def _decode_full(data: list[Any]) -> Decoded:
    """FULL format: one object per event with named fields (absent fields are null)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    problems: list[str] = []
    for event in data:
        kind = event.get("eventType") if isinstance(event, dict) else None
        if not isinstance(kind, str):
            problems.append(f"FULL event without an eventType: {event!r:.80}")
            continue
        grouped.setdefault(kind, []).append(event)
    runs = []
    for kind, events in grouped.items():
        names: dict[str, None] = {}
        for event in events:
            names.update(dict.fromkeys(event))
        columns = {name: [e.get(name) for e in events] for name in names}
        runs.append(Run(kind, columns, len(events)))
    return Decoded(runs, problems, [])


def floats(values: list[Any] | None, size: int) -> FloatArray:
    """JSONDouble column: numbers, ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; null -> NaN.
    Raises ParseError on anything else (text in a price, a nested list)."""
    if values is None:
        return np.full(size, np.nan)
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        out = np.empty(size)
        for i, value in enumerate(values):
            out[i] = _float(value)
        return out


def _float(value: Any) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ParseError(f"not a number: {value!r:.40}")
    try:
        return float(value)
    except ValueError:
        raise ParseError(f"not a number: {value!r:.40}") from None


def ints(values: list[Any] | None, size: int) -> IntArray:
    """Integer column (times in ms, flags, indices past 2^53 kept exact); null/NaN -> 0."""
    if values is None:
        return np.zeros(size, np.int64)
    try:
        return np.array(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        out = np.zeros(size, np.int64)
        for i, value in enumerate(values):
            number = value if isinstance(value, int) else _float(value)
            if isinstance(number, float) and not np.isfinite(number):
                continue
            if not -(2**63) <= number < 2**63:
                raise ParseError(f"integer out of range: {value!r:.40}") from None
            out[i] = int(number)
        return out


def texts(values: list[Any] | None, size: int) -> pa.Array:
    """String column; empty strings and NUL (index quotes send ``"\\x00"``) are null."""
    if values is None:
        return pa.nulls(size, pa.string())
    try:
        array = pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        values = [None if v is None else str(v) for v in values]
        array = pa.array(values, pa.string())
    if "" not in values and "\x00" not in values:  # the usual case: no compute kernels
        return array
    blank = pc.or_(pc.equal(array, ""), pc.equal(array, "\x00"))
    return pc.if_else(blank, pa.scalar(None, pa.string()), array)
