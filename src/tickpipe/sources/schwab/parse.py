"""Schwab streamer frames -> columnar event batches. Pure: no I/O, the clock is a parameter.

A frame is a JSON object with any of ``response`` (command acknowledgements), ``notify``
(heartbeats, admin notices) and ``data`` (market data), each a list. Level-one services send
the full field set for a key first, then only the fields that changed; ``StreamParser`` keeps
the merged values per (service, key) across connections, so every Quote / OptionQuote it
emits is complete, and trades are derived from what changed::

    {"data":[{"service":"LEVELONE_EQUITIES","timestamp":1755118712559,"command":"SUBS",
      "content":[{"key":"AAPL","1":233.33,"2":233.39,"3":233.34,"5":1,"8":69784498}]}]}

is a quote (bid 233.33, ask 233.39, bid size kept from before) and a trade at 233.34 whose
size is the rise of total volume (field 8): a same-price trade can arrive as a volume-only
delta. The first item for a key on each connection is a snapshot: it updates the merged
state and may emit a changed quote, never a trade (a re-sent snapshot after a reconnect
must not invent one). Book services send whole snapshots; chart services one bar per item.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa

from tickpipe.errors import ParseError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.sources.base import Batches, SeqCheckpoint
from tickpipe.sources.schwab.fields import (
    BAR_SECONDS,
    BOOK_LEVEL,
    INDEX_OPTION_ROOTS,
    META_KEYS,
    SERVICES,
    Service,
    Shape,
)
from tickpipe.symbols import parse_occ

MS = 1_000_000
NAN = math.nan
MISSING = -999.0
"""Schwab's "could not compute" value for greeks and volatility"""
NEW_YORK = ZoneInfo("America/New_York")
_NUMBER = (int, float)
OPTION_ROLES = ("bid", "ask", "last", "volume", "open_interest", "iv_pct", "delta", "gamma")
"""a change in any of these is a new OptionQuote"""


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """A ``response`` item, or a ``notify`` item that carries a code (an admin notice)."""

    service: str
    command: str
    requestid: str
    code: int
    msg: str


@dataclasses.dataclass(frozen=True, slots=True)
class Reject:
    raw: str
    reason: str
    kind: Kind | None = None
    symbol: str = ""


@dataclasses.dataclass
class Decoded:
    batches: Batches = dataclasses.field(default_factory=dict)
    responses: list[Response] = dataclasses.field(default_factory=list)
    heartbeats: int = 0
    rejects: list[Reject] = dataclasses.field(default_factory=list)
    unknown_fields: int = 0
    field_updates: int = 0


def missing_as_nan(value: float) -> float:
    """-999 (and anything below) means "not computed"."""
    return NAN if value <= MISSING else value


def index_underlying(name: str) -> str:
    """``SPXW`` / ``SPX`` -> ``$SPX``; other roots and equities unchanged."""
    return INDEX_OPTION_ROOTS.get(name.lstrip("$"), name)


def ny_date(ms: float) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, NEW_YORK).date()


class _Collector:
    """Column lists per kind for one frame, with seq numbers per (kind, symbol)."""

    def __init__(self, seqs: dict[Kind, dict[str, int]]) -> None:
        self.cols: dict[Kind, dict[str, list[Any]]] = {}
        self._seqs = seqs

    def add(self, kind: Kind, symbol: str, **values: Any) -> None:
        cols = self.cols.get(kind)
        if cols is None:
            cols = self.cols[kind] = {name: [] for name in SCHEMAS[kind].names}
        counters = self._seqs[kind]
        seq = counters.get(symbol, 0) + 1
        counters[symbol] = seq
        cols["symbol"].append(symbol)
        cols["seq"].append(seq)
        for name, value in values.items():
            cols[name].append(value)

    def batches(self, recv_ns: int) -> Batches:
        out: Batches = {}
        for kind, cols in self.cols.items():
            n = len(cols["symbol"])
            cols["ts_recv"] = [recv_ns] * n
            cols["source"] = [""] * n  # set to the source's name by the context
            schema = SCHEMAS[kind]
            arrays = [
                pa.array(cols[f.name], f.type) if cols[f.name] else pa.nulls(n, f.type)
                for f in schema
            ]
            out[kind] = pa.RecordBatch.from_arrays(arrays, schema=schema)
        return out


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Per service: where each role sits in a key's merged value list, and change masks."""

    service: Service
    col_of: dict[str, int]
    known: frozenset[str]
    is_text: tuple[bool, ...]
    index: dict[str, int]
    quote_mask: int
    print_mask: int
    last_mask: int
    option_mask: int
    is_option: bool

    @classmethod
    def of(cls, service: Service) -> _Layout:
        roles = list(service.roles)
        index = {r: i for i, r in enumerate(roles)}

        def mask(*names: str) -> int:
            return sum(1 << index[n] for n in names if n in index)

        return cls(
            service=service,
            col_of={str(service.roles[r]): i for i, r in enumerate(roles)},
            known=frozenset(str(n) for n in service.names),
            is_text=tuple(r in service.text_roles for r in roles),
            index=index,
            quote_mask=mask("bid", "ask", "bid_size", "ask_size"),
            print_mask=mask("last_size", "trade_time"),
            last_mask=mask("last"),
            option_mask=mask(*OPTION_ROLES),
            is_option="iv_pct" in index or "strike" in index,
        )


_LAYOUTS = {name: _Layout.of(service) for name, service in SERVICES.items()}


@dataclasses.dataclass(frozen=True)
class _OptionStatic:
    underlying: str
    expiry: dt.date
    strike: float
    right: str


class StreamParser:
    """Merges level-one deltas, numbers events, and turns frames into batches.

    State lives as long as the source object, so it spans reconnects: call
    ``new_connection()`` when a socket opens, and ``resume(ctx.sequences)`` once at start.
    """

    def __init__(self, *, equity_size_multiplier: float = 1.0) -> None:
        self._size_mult = {"LEVELONE_EQUITIES": equity_size_multiplier}
        self._values: dict[str, dict[str, list[Any]]] = {name: {} for name in SERVICES}
        self._fresh: set[tuple[str, str]] = set()
        self._seqs: dict[Kind, dict[str, int]] = {kind: {} for kind in Kind}
        self._options: dict[str, _OptionStatic | None] = {}
        self._book_prices: dict[tuple[str, str], list[float]] = {}
        self._last_bar: dict[tuple[str, str], tuple[float, ...]] = {}
        self.delayed: dict[str, bool] = {}
        """symbol -> the ``delayed`` flag of its latest snapshot"""

    def resume(self, sequences: SeqCheckpoint) -> None:
        """Continue each (kind, symbol)'s seq after the last run's."""
        for (kind, symbol), (seq, _) in sequences.items():
            counters = self._seqs[kind]
            counters[symbol] = max(counters.get(symbol, 0), seq)

    def new_connection(self) -> None:
        """The next item per key is the server's snapshot of a fresh subscription."""
        self._fresh.clear()

    def merged(self, service: str, key: str) -> dict[str, Any]:
        """The merged level-one values of one key, by role (for tests and status)."""
        layout = _LAYOUTS[service]
        values = self._values[service].get(key)
        if values is None:
            return {}
        return {role: values[i] for role, i in layout.index.items()}

    def parse(self, frame: str | bytes, recv_ns: int) -> Decoded:
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {exc}", source="schwab", raw=frame) from exc
        if not isinstance(message, dict):
            raise ParseError("a frame must be a JSON object", source="schwab", raw=frame)
        out = Decoded()
        for item in _list(message.get("response")):
            response = _response(item)
            if response is None:
                out.rejects.append(Reject(_dump(item), "response without service and code"))
            else:
                out.responses.append(response)
        for item in _list(message.get("notify")):
            if isinstance(item, dict) and "heartbeat" in item:
                out.heartbeats += 1
                continue
            response = _response(item)
            if response is None:
                out.rejects.append(Reject(_dump(item), "notify item not understood"))
            else:
                out.responses.append(response)
        data = message.get("data")
        if data is not None:
            collector = _Collector(self._seqs)
            for entry in _list(data):
                self._entry(entry, recv_ns, collector, out)
            out.batches = collector.batches(recv_ns)
        return out

    def _entry(self, entry: Any, recv_ns: int, col: _Collector, out: Decoded) -> None:
        if not isinstance(entry, dict):
            out.rejects.append(Reject(_dump(entry), "data entry is not an object"))
            return
        name = entry.get("service")
        layout = _LAYOUTS.get(name) if isinstance(name, str) else None
        content = entry.get("content")
        if layout is None:
            out.rejects.append(Reject(_dump(entry), f"unknown service {name!r}"))
            return
        if not isinstance(content, list):
            out.rejects.append(Reject(_dump(entry), f"{name} content is not a list"))
            return
        stamp = entry.get("timestamp")
        frame_ns = int(stamp) * MS if isinstance(stamp, int) and stamp > 0 else recv_ns
        shape = layout.service.shape
        for item in content:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                out.rejects.append(Reject(_dump(item), f"{name} item without a key"))
                continue
            if shape is Shape.LEVEL_ONE:
                problem = self._level_one(layout, item, frame_ns, col, out)
            elif shape is Shape.BOOK:
                problem = self._book(layout, item, frame_ns, col)
            else:
                problem = self._chart(layout, item, col, out)
            if problem is not None:
                kind = Kind.BAR if shape is Shape.CHART else None
                out.rejects.append(Reject(_dump(item), f"{name}: {problem}", kind, item["key"]))

    # ---- level one ------------------------------------------------------------------

    def _level_one(
        self, layout: _Layout, item: dict[str, Any], frame_ns: int, col: _Collector, out: Decoded
    ) -> str | None:
        service = layout.service.name
        key: str = item["key"]
        states = self._values[service]
        values = states.get(key)
        if values is None:
            values = states[key] = [NAN] * len(layout.is_text)
        before = values.copy()
        col_of, is_text = layout.col_of, layout.is_text
        changed = 0
        for field, value in item.items():
            i = col_of.get(field)
            if i is None:
                if field not in layout.known and field not in META_KEYS:
                    out.unknown_fields += 1
                continue
            if is_text[i]:
                if value.__class__ is not str:
                    if value.__class__ is int:  # IDs seen as ASCII codes: 63 for "?"
                        value = chr(value) if 0 < value < 128 else str(value)
                    else:
                        values[:] = before
                        return f"field {field} should be text, got {value!r}"
            elif value.__class__ is not float and value.__class__ is not int:
                values[:] = before
                return f"field {field} should be a number, got {value!r}"
            out.field_updates += 1
            if values[i] != value:
                values[i] = value
                changed |= 1 << i
        delayed = item.get("delayed")
        if delayed.__class__ is bool:
            self.delayed[key] = delayed
        snapshot = (service, key) not in self._fresh
        if snapshot:
            self._fresh.add((service, key))
        if not changed:
            return None
        if layout.is_option:
            return self._option(layout, key, values, changed, frame_ns, col)
        self._quote(layout, key, values, changed, frame_ns, col)
        if not snapshot:
            self._trade(layout, key, values, before, changed, frame_ns, col)
        return None

    def _time(self, layout: _Layout, values: list[Any], changed: int, role: str) -> int | None:
        i = layout.index.get(role)
        if i is None or not changed & (1 << i):
            return None
        ms = values[i]
        return int(ms) * MS if ms > 0 else None

    def _quote(
        self, layout: _Layout, key: str, values: list[Any], changed: int, ts: int, col: _Collector
    ) -> None:
        ix = layout.index
        if not changed & layout.quote_mask:
            return
        bid, ask = values[ix["bid"]], values[ix["ask"]]
        if math.isnan(bid) or math.isnan(ask) or (bid <= 0 and ask <= 0):
            return  # never quoted (an index has a value, not a bid and ask)
        mult = self._size_mult.get(layout.service.name, 1.0)
        bid_size, ask_size = values[ix["bid_size"]], values[ix["ask_size"]]
        col.add(
            Kind.QUOTE,
            key,
            ts_event=self._time(layout, values, changed, "quote_time") or ts,
            bid=float(bid),
            bid_size=0.0 if math.isnan(bid_size) else bid_size * mult,
            ask=float(ask),
            ask_size=0.0 if math.isnan(ask_size) else ask_size * mult,
        )

    def _trade(
        self,
        layout: _Layout,
        key: str,
        values: list[Any],
        before: list[Any],
        changed: int,
        ts: int,
        col: _Collector,
    ) -> None:
        ix = layout.index
        last = values[ix["last"]]
        if math.isnan(last):
            return
        rise = values[ix["volume"]] - before[ix["volume"]]  # NaN until both are known
        print_bits = layout.print_mask
        if not (rise > 0 or changed & (print_bits | layout.last_mask)):
            return
        if rise > 0:
            size = float(rise)
        elif changed & print_bits and not math.isnan(values[ix["last_size"]]):
            size = float(values[ix["last_size"]])
        else:
            size = 0.0  # a new last price without volume: an index value
        exchange = values[ix["exchange"]] if "exchange" in ix else None
        col.add(
            Kind.TRADE,
            key,
            ts_event=self._time(layout, values, changed, "trade_time") or ts,
            price=float(last),
            size=size,
            exchange=exchange if isinstance(exchange, str) else None,
            conditions="index" if key.startswith("$") else None,
        )

    def _option(
        self,
        layout: _Layout,
        key: str,
        values: list[Any],
        changed: int,
        ts: int,
        col: _Collector,
    ) -> str | None:
        ix = layout.index
        if not changed & layout.option_mask:
            return None
        bid, ask = values[ix["bid"]], values[ix["ask"]]
        if math.isnan(bid) or math.isnan(ask):
            return None
        static = self._options.get(key)
        if static is None:
            static = self._option_static(layout, key, values)
            if static is None:
                return "option without underlying, expiry, strike and right"
            self._options[key] = static

        def num(role: str, default: float = NAN) -> float:
            i = ix.get(role)
            v = NAN if i is None else values[i]
            return default if math.isnan(v) else float(v)

        iv = num("iv_pct")
        col.add(
            Kind.OPTION,
            key,
            ts_event=self._time(layout, values, changed, "quote_time") or ts,
            underlying=static.underlying,
            expiry=static.expiry,
            strike=static.strike,
            right=static.right,
            bid=float(bid),
            ask=float(ask),
            last=num("last"),
            volume=num("volume", 0.0),
            open_interest=num("open_interest", 0.0),
            iv=missing_as_nan(iv) / 100,
            delta=missing_as_nan(num("delta")),
            gamma=missing_as_nan(num("gamma")),
        )
        return None

    def _option_static(self, layout: _Layout, key: str, values: list[Any]) -> _OptionStatic | None:
        ix = layout.index
        underlying = values[ix["underlying"]]
        if "strike" in ix:  # futures options: the fields say it all
            strike, expiry_ms, right = (
                values[ix["strike"]],
                values[ix["expiry_time"]],
                values[ix["right"]],
            )
            if not isinstance(underlying, str) or not isinstance(right, str):
                return None
            if math.isnan(strike) or math.isnan(expiry_ms) or right not in ("C", "P"):
                return None
            return _OptionStatic(underlying, ny_date(expiry_ms), float(strike), right)
        try:
            occ = parse_occ(key)
        except ValueError:
            return None
        name = underlying if isinstance(underlying, str) and underlying else occ.underlying
        return _OptionStatic(index_underlying(name), occ.expiry, occ.strike, occ.right)

    # ---- book -----------------------------------------------------------------------

    def _book(self, layout: _Layout, item: dict[str, Any], ts: int, col: _Collector) -> str | None:
        key: str = item["key"]
        roles = layout.service.roles
        stamp = item.get(str(roles["time"]))
        if stamp.__class__ is int and stamp > 0:
            ts = stamp * MS
        sides: list[tuple[str, list[tuple[float, float, int | None]]]] = []
        for side, role in (("B", "bids"), ("A", "asks")):
            levels = item.get(str(roles[role]), [])
            if not isinstance(levels, list):
                return f"{role} is not a list"
            parsed = []
            for level in levels:
                if not isinstance(level, dict):
                    return f"a {role} level is not an object"
                price, size = level.get(BOOK_LEVEL["price"]), level.get(BOOK_LEVEL["size"])
                orders = level.get(BOOK_LEVEL["orders"])
                if not isinstance(price, _NUMBER) or not isinstance(size, _NUMBER):
                    return f"a {role} level without a numeric price and size"
                parsed.append(
                    (float(price), float(size), orders if orders.__class__ is int else None)
                )
            sides.append((side, parsed))
        for side, parsed in sides:
            for level, (price, size, orders) in enumerate(parsed):
                col.add(
                    Kind.BOOK,
                    key,
                    ts_event=ts,
                    side=side,
                    level=level,
                    price=price,
                    size=size,
                    orders=orders,
                )
            # levels the previous snapshot had and this one lacks: gone (size 0)
            previous = self._book_prices.get((key, side), [])
            for level in range(len(parsed), len(previous)):
                col.add(
                    Kind.BOOK,
                    key,
                    ts_event=ts,
                    side=side,
                    level=level,
                    price=previous[level],
                    size=0.0,
                    orders=0,
                )
            self._book_prices[(key, side)] = [p for p, _, _ in parsed]
        return None

    # ---- charts ---------------------------------------------------------------------

    def _chart(
        self, layout: _Layout, item: dict[str, Any], col: _Collector, out: Decoded
    ) -> str | None:
        key: str = item["key"]
        roles = layout.service.roles
        bar: dict[str, float] = {}
        for role in ("time", "open", "high", "low", "close", "volume"):
            value = item.get(str(roles[role]))
            if value.__class__ is not int and value.__class__ is not float:
                return f"bar field {roles[role]} ({role}) missing or not a number"
            bar[role] = value
        for field in item:
            if field not in layout.known and field not in META_KEYS:
                out.unknown_fields += 1
        fingerprint = tuple(bar.values())
        if self._last_bar.get((layout.service.name, key)) == fingerprint:
            return None  # the same bar again (a resubscription re-sends the latest)
        self._last_bar[(layout.service.name, key)] = fingerprint
        col.add(
            Kind.BAR,
            key,
            ts_event=int(bar["time"]) * MS,
            open=float(bar["open"]),
            high=float(bar["high"]),
            low=float(bar["low"]),
            close=float(bar["close"]),
            volume=float(bar["volume"]),
            interval_s=BAR_SECONDS,
        )
        return None


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _dump(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _response(item: Any) -> Response | None:
    if not isinstance(item, dict):
        return None
    content = item.get("content")
    code = content.get("code") if isinstance(content, dict) else None
    if not isinstance(code, int):
        return None
    msg = content.get("msg") if isinstance(content, dict) else ""
    return Response(
        service=str(item.get("service", "")),
        command=str(item.get("command", "")),
        requestid=str(item.get("requestid", "")),
        code=code,
        msg=msg if isinstance(msg, str) else str(msg),
    )
