"""Level-one services: merging "Change" deltas and deriving quotes, trades and options.

Each (service, key) keeps its merged values as a list indexed by role (see
``fields.Service.roles``); an item's fields are written into it and a bit mask records which
roles changed. Then: a changed bid/ask/size is a Quote (complete, from the merged values);
a change of last price, last size or trade time, or a rise of total volume, is a Trade
whose size is the volume's rise (a same-price trade can arrive as a volume-only delta),
else the last size; an option's changed prices or greeks are an OptionQuote. The first
item of a key on each connection is the server's snapshot: it may emit a changed quote,
never a trade, so a re-sent snapshot after a reconnect cannot invent one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

from tickpipe.events import Kind
from tickpipe.sources.schwab.decoded import (
    MS,
    NAN,
    Decoded,
    Rows,
    index_underlying,
    missing_as_nan,
    ny_date,
)
from tickpipe.sources.schwab.fields import META_KEYS, SERVICES, Service, Shape
from tickpipe.symbols import parse_occ

OPTION_ROLES = ("bid", "ask", "last", "volume", "open_interest", "iv_pct", "delta", "gamma")
"""a change in any of these is a new OptionQuote"""


@dataclasses.dataclass(frozen=True)
class Layout:
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
    def of(cls, service: Service) -> Layout:
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


LAYOUTS = {
    name: Layout.of(service)
    for name, service in SERVICES.items()
    if service.shape is Shape.LEVEL_ONE
}


@dataclasses.dataclass(frozen=True)
class OptionStatic:
    underlying: str
    expiry: dt.date
    strike: float
    right: str


class LevelOne:
    """Merged level-one state of every key, kept across connections."""

    def __init__(self, *, equity_size_multiplier: float = 1.0) -> None:
        self._size_mult = {"LEVELONE_EQUITIES": equity_size_multiplier}
        self._values: dict[str, dict[str, list[Any]]] = {name: {} for name in LAYOUTS}
        self._fresh: set[tuple[str, str]] = set()
        self._options: dict[str, OptionStatic | None] = {}
        self.delayed: dict[str, bool] = {}
        """symbol -> the ``delayed`` flag of its latest snapshot"""

    def new_connection(self) -> None:
        """The next item per key is the server's snapshot of a fresh subscription."""
        self._fresh.clear()

    def merged(self, service: str, key: str) -> dict[str, Any]:
        """The merged values of one key, by role (for tests and status)."""
        layout = LAYOUTS[service]
        values = self._values[service].get(key)
        if values is None:
            return {}
        return {role: values[i] for role, i in layout.index.items()}

    def apply(
        self, layout: Layout, item: dict[str, Any], frame_ns: int, col: Rows, out: Decoded
    ) -> str | None:
        """Merge one content item; append the events it makes. A reason when it is bad."""
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
            if value is None:  # no value: the field keeps what it had
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

    def _time(self, layout: Layout, values: list[Any], changed: int, role: str) -> int | None:
        i = layout.index.get(role)
        if i is None or not changed & (1 << i):
            return None
        ms = values[i]
        return int(ms) * MS if ms > 0 else None

    def _quote(
        self, layout: Layout, key: str, values: list[Any], changed: int, ts: int, col: Rows
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
        layout: Layout,
        key: str,
        values: list[Any],
        before: list[Any],
        changed: int,
        ts: int,
        col: Rows,
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
        layout: Layout,
        key: str,
        values: list[Any],
        changed: int,
        ts: int,
        col: Rows,
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

    def _option_static(self, layout: Layout, key: str, values: list[Any]) -> OptionStatic | None:
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
            return OptionStatic(underlying, ny_date(expiry_ms), float(strike), right)
        try:
            occ = parse_occ(key)
        except ValueError:
            return None
        name = underlying if isinstance(underlying, str) and underlying else occ.underlying
        return OptionStatic(index_underlying(name), occ.expiry, occ.strike, occ.right)
