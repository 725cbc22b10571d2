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

from typing import Any

import orjson

from tickpipe.errors import ParseError
from tickpipe.events import Kind
from tickpipe.sources.base import SeqCheckpoint
from tickpipe.sources.schwab.decoded import MS, Decoded, Reject, Response, Rows, dump
from tickpipe.sources.schwab.fields import (
    BAR_SECONDS,
    BOOK_LEVEL,
    META_KEYS,
    SERVICES,
    Service,
    Shape,
)
from tickpipe.sources.schwab.levelone import LAYOUTS, LevelOne

_NUMBER = (int, float)


class StreamParser:
    """Merges level-one deltas, numbers events, and turns frames into batches.

    State lives as long as the source object, so it spans reconnects: call
    ``new_connection()`` when a socket opens, and ``resume(ctx.sequences)`` once at start.
    """

    def __init__(self, *, equity_size_multiplier: float = 1.0) -> None:
        self._level_one = LevelOne(equity_size_multiplier=equity_size_multiplier)
        self._seqs: dict[Kind, dict[str, int]] = {kind: {} for kind in Kind}
        self._book_prices: dict[tuple[str, str], list[float]] = {}
        self._last_bar: dict[tuple[str, str], tuple[float, ...]] = {}

    @property
    def delayed(self) -> dict[str, bool]:
        """symbol -> the ``delayed`` flag of its latest level-one snapshot"""
        return self._level_one.delayed

    def resume(self, sequences: SeqCheckpoint) -> None:
        """Continue each (kind, symbol)'s seq after the last run's."""
        for (kind, symbol), (seq, _) in sequences.items():
            counters = self._seqs[kind]
            counters[symbol] = max(counters.get(symbol, 0), seq)

    def new_connection(self) -> None:
        """The next item per key is the server's snapshot of a fresh subscription."""
        self._level_one.new_connection()

    def merged(self, service: str, key: str) -> dict[str, Any]:
        """The merged level-one values of one key, by role (for tests and status)."""
        return self._level_one.merged(service, key)

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
                out.rejects.append(Reject(dump(item), "response without service and code"))
            else:
                out.responses.append(response)
        for item in _list(message.get("notify")):
            if isinstance(item, dict) and "heartbeat" in item:
                out.heartbeats += 1
                continue
            response = _response(item)
            if response is None:
                out.rejects.append(Reject(dump(item), "notify item not understood"))
            else:
                out.responses.append(response)
        data = message.get("data")
        if data is not None:
            collector = Rows(self._seqs)
            for entry in _list(data):
                self._entry(entry, recv_ns, collector, out)
            out.batches = collector.batches(recv_ns)
        return out

    def _entry(self, entry: Any, recv_ns: int, col: Rows, out: Decoded) -> None:
        if not isinstance(entry, dict):
            out.rejects.append(Reject(dump(entry), "data entry is not an object"))
            return
        name = entry.get("service")
        service = SERVICES.get(name) if isinstance(name, str) else None
        content = entry.get("content")
        if service is None:
            out.rejects.append(Reject(dump(entry), f"unknown service {name!r}"))
            return
        if not isinstance(content, list):
            out.rejects.append(Reject(dump(entry), f"{name} content is not a list"))
            return
        stamp = entry.get("timestamp")
        frame_ns = int(stamp) * MS if isinstance(stamp, int) and stamp > 0 else recv_ns
        shape = service.shape
        for item in content:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                out.rejects.append(Reject(dump(item), f"{name} item without a key"))
                continue
            if shape is Shape.LEVEL_ONE:
                problem = self._level_one.apply(LAYOUTS[service.name], item, frame_ns, col, out)
            elif shape is Shape.BOOK:
                problem = self._book(service, item, frame_ns, col)
            else:
                problem = self._chart(service, item, col, out)
            if problem is not None:
                kind = Kind.BAR if shape is Shape.CHART else None
                out.rejects.append(Reject(dump(item), f"{name}: {problem}", kind, item["key"]))

    # ---- book -----------------------------------------------------------------------

    def _book(self, service: Service, item: dict[str, Any], ts: int, col: Rows) -> str | None:
        """A whole snapshot: one BookUpdate per level; levels gone since the last one are
        sent once more with size 0."""
        key: str = item["key"]
        roles = service.roles
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

    def _chart(self, service: Service, item: dict[str, Any], col: Rows, out: Decoded) -> str | None:
        """One complete one-minute bar per item; an identical repeat is dropped."""
        key: str = item["key"]
        roles = service.roles
        bar: dict[str, float] = {}
        for role in ("time", "open", "high", "low", "close", "volume"):
            value = item.get(str(roles[role]))
            if value.__class__ is not int and value.__class__ is not float:
                return f"bar field {roles[role]} ({role}) missing or not a number"
            bar[role] = value
        for field in item:
            if field.isdigit() and int(field) not in service.names and field not in META_KEYS:
                out.unknown_fields += 1
        fingerprint = tuple(bar.values())
        if self._last_bar.get((service.name, key)) == fingerprint:
            return None  # the same bar again (a resubscription re-sends the latest)
        self._last_bar[(service.name, key)] = fingerprint
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
