"""DTC wire formats and their events. Pure: bytes in, messages and Arrow batches out.

Two encodings: binary (each message a little-endian struct that starts ``uint16 Size,
uint16 Type``; framed by Size) and JSON (one object per message, named fields, ``"Type"``
first, each followed by one NUL byte; JSON-compact's ``{"Type":N,"F":[...]}`` is read too).
A binary message shorter than the layout we know reads its missing fields as 0; a longer
one (a later protocol version) has its extra bytes skipped by Size.

Sample (JSON): ``{"Type":107,"SymbolID":1,"AtBidOrAsk":2,"Price":5900.25,"Volume":3,
"DateTime":1700000000.123}`` -> Trade(/ESZ25, 5900.25 x 3, aggressor "B").
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from typing import Any

import orjson
import pyarrow as pa

from tickpipe.errors import ParseError
from tickpipe.events import SCHEMAS, Kind, TradeFlag
from tickpipe.sources.base import Batches, SeqCheckpoint
from tickpipe.sources.sierra import dtc_messages as m

Message = dict[str, Any]
_HEADER = struct.Struct("<HH")
_TOKEN = re.compile(r"(\d*)([a-zA-Z?])")


def _codes_of(fmt: str) -> list[str]:
    """One struct code per field ("32s" is one field, "5d" five), Size and Type left out."""
    codes: list[str] = []
    for count, code in _TOKEN.findall(fmt[1:]):
        if code == "x":
            continue
        codes.extend([code] if code in "sp" else [code] * int(count or 1))
    return codes[2:]


MAX_JSON_BYTES = 1 << 20


class BinaryFramer:
    """Splits a byte stream into binary messages by their Size field."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        pos = 0
        buf = self._buffer
        while len(buf) - pos >= 4:
            size = buf[pos] | buf[pos + 1] << 8
            if size < 4:
                raise ParseError(
                    f"DTC binary message with Size {size}: the stream is out of step",
                    raw=bytes(buf[pos : pos + 64]),
                )
            if len(buf) - pos < size:
                break
            frames.append(bytes(buf[pos : pos + size]))
            pos += size
        del buf[:pos]
        return frames


class JsonFramer:
    """Splits a byte stream into JSON messages at their NUL terminators."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        if b"\0" not in data:
            if len(self._buffer) > MAX_JSON_BYTES:
                raise ParseError(
                    "DTC JSON message over 1 MiB without its NUL terminator",
                    raw=bytes(self._buffer[:256]),
                )
            return []
        *frames, rest = bytes(self._buffer).split(b"\0")
        self._buffer = bytearray(rest)
        return [f for f in frames if f.strip()]


def encode_binary(type_: int, **fields: Any) -> bytes:
    layout = m.LAYOUTS[type_]
    values = []
    for name, code in zip(layout.fields, _codes(layout), strict=True):
        value = fields.get(name, b"" if code == "s" else 0)
        values.append(value.encode() if isinstance(value, str) else value)
    return struct.pack(layout.fmt, layout.size, type_, *values)


def encode_json(type_: int, **fields: Any) -> bytes:
    return orjson.dumps({"Type": type_, **fields}) + b"\0"


_STRUCTS = {type_: struct.Struct(layout.fmt) for type_, layout in m.LAYOUTS.items()}
_TEXT_FIELDS = {
    type_: [i for i, code in enumerate(_codes_of(layout.fmt)) if code == "s"]
    for type_, layout in m.LAYOUTS.items()
}


def decode_binary(frame: bytes) -> Message:
    _, type_ = _HEADER.unpack_from(frame)
    layout = m.LAYOUTS.get(type_)
    if layout is None:
        return {"Type": type_}
    packer = _STRUCTS[type_]
    if len(frame) < packer.size:  # an older, shorter version: missing fields read as 0
        frame = frame.ljust(packer.size, b"\0")
    values = list(packer.unpack_from(frame))[2:]
    for i in _TEXT_FIELDS[type_]:
        values[i] = values[i].split(b"\0", 1)[0].decode("utf-8", "replace")
    message: Message = dict(zip(layout.fields, values, strict=True))
    message["Type"] = type_
    return message


def decode_json(frame: bytes) -> Message:
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"DTC JSON message is not JSON: {exc}", raw=frame) from exc
    if not isinstance(message, dict) or not isinstance(message.get("Type"), int):
        raise ParseError("DTC JSON message without an integer Type", raw=frame)
    compact = message.get("F")
    layout = m.LAYOUTS.get(message["Type"])
    if isinstance(compact, list) and layout is not None:
        message = {"Type": message["Type"], **dict(zip(layout.fields, compact, strict=False))}
    return message


def _codes(layout: m.Layout) -> list[str]:
    return _codes_of(layout.fmt)


def _time_ns(value: Any, kind: m.Time, recv_ns: int) -> int:
    """A DTC timestamp to ns; 0, missing or no timestamp at all: the receive time."""
    if kind is m.Time.NONE or not value:
        return recv_ns
    if kind is m.Time.MICROSECONDS:
        return int(value) * 1000
    if kind is m.Time.SECONDS:
        return int(value) * 1_000_000_000
    return round(float(value) * 1e6) * 1000  # a double of seconds carries µs at best


def _price(value: Any) -> float | None:
    if value is None:
        return None
    price = float(value)
    if not math.isfinite(price) or abs(price) >= m.UNSET_ABOVE:
        return None
    return price


@dataclasses.dataclass
class Facts:
    """What the client shows on /status: rejects, feed and symbol status, session figures."""

    rejected: dict[str, str] = dataclasses.field(default_factory=dict)
    feed_status: str | None = None
    symbols: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    heartbeats: int = 0
    logoff: Message | None = None
    unknown: dict[int, int] = dataclasses.field(default_factory=dict)
    errors: list[tuple[str | bytes, str]] = dataclasses.field(default_factory=list)
    """messages that could not become events: (raw, reason), for the quarantine"""
    changed: bool = False


class DtcDecoder:
    """Market-data messages of one connection to Trade and Quote batches.

    Holds what DTC leaves to the client: which SymbolID is which symbol, the last bid and
    ask (an update may set one side only: the other is the unset marker), and the seq per
    (kind, symbol), which continues from the pipeline's last accepted one."""

    def __init__(self, symbols: dict[int, str], sequences: SeqCheckpoint) -> None:
        self.symbols = symbols
        self._book: dict[str, list[float | None]] = {}
        self._seq = {key: last for key, (last, _) in sequences.items()}

    def _next_seq(self, kind: Kind, symbol: str) -> int:
        seq = self._seq.get((kind, symbol), 0) + 1
        self._seq[(kind, symbol)] = seq
        return seq

    def decode(self, messages: list[Message], recv_ns: int, facts: Facts) -> Batches:
        trades: dict[str, list[Any]] = {name: [] for name in SCHEMAS[Kind.TRADE].names}
        quotes: dict[str, list[Any]] = {name: [] for name in SCHEMAS[Kind.QUOTE].names}
        for message in messages:
            type_ = message["Type"]
            try:
                if type_ in m.TRADES:
                    self._trade(message, m.TRADES[type_], recv_ns, trades)
                elif type_ in m.BID_ASKS:
                    self._bid_ask(message, m.BID_ASKS[type_], recv_ns, quotes)
                elif type_ == m.T.MARKET_DATA_SNAPSHOT:
                    self._snapshot(message, recv_ns, quotes, facts)
                else:
                    self._fact(message, facts)
            except ParseError as exc:  # this message only; its neighbours still count
                facts.errors.append((exc.raw or orjson.dumps(message), str(exc)))
        batches: Batches = {}
        if trades["seq"]:
            batches[Kind.TRADE] = pa.RecordBatch.from_pydict(trades, schema=SCHEMAS[Kind.TRADE])
        if quotes["seq"]:
            batches[Kind.QUOTE] = pa.RecordBatch.from_pydict(quotes, schema=SCHEMAS[Kind.QUOTE])
        return batches

    def _symbol(self, message: Message) -> str:
        symbol_id = message.get("SymbolID")
        symbol = self.symbols.get(symbol_id) if isinstance(symbol_id, int) else None
        if symbol is None:
            raise ParseError(
                f"DTC message for SymbolID {symbol_id!r}, which we never requested",
                raw=orjson.dumps(message),
            )
        return symbol

    def _trade(self, msg: Message, stamp: m.Time, recv_ns: int, out: dict[str, list[Any]]) -> None:
        symbol = self._symbol(msg)
        side = msg.get("AtBidOrAsk")
        marker = msg.get("UnbundledTradeIndicator")  # JSON may leave out a field that is 0
        fields = m.LAYOUTS[msg["Type"]].fields
        flags = {
            m.FIRST_SUB_TRADE: TradeFlag.FIRST_SUB_TRADE,
            m.LAST_SUB_TRADE: TradeFlag.LAST_SUB_TRADE,
        }
        price = _price(msg.get("Price"))
        row = {
            "ts_event": _time_ns(msg.get("DateTime"), stamp, recv_ns),
            "ts_recv": recv_ns,
            "symbol": symbol,
            "price": float("nan") if price is None else price,
            "size": float(msg.get("Volume") or 0),
            "source": "",
            "seq": self._next_seq(Kind.TRADE, symbol),
            "exchange": None,
            "conditions": None,
            "aggressor": {m.AT_ASK: "B", m.AT_BID: "S"}.get(side)
            if isinstance(side, int)
            else None,
            "flags": flags.get(marker or 0, 0) if "UnbundledTradeIndicator" in fields else None,
        }
        for name, value in row.items():
            out[name].append(value)

    def _bid_ask(
        self, msg: Message, stamp: m.Time, recv_ns: int, out: dict[str, list[Any]]
    ) -> None:
        symbol = self._symbol(msg)
        ts = _time_ns(msg.get("DateTime"), stamp, recv_ns)
        self._quote(symbol, msg, "BidQuantity", "AskQuantity", ts, recv_ns, out)

    def _snapshot(
        self, msg: Message, recv_ns: int, out: dict[str, list[Any]], facts: Facts
    ) -> None:
        symbol = self._symbol(msg)
        ts = _time_ns(msg.get("BidAskDateTime"), m.Time.FLOAT_SECONDS, recv_ns)
        unset_zero = {k: msg.get(k) or None for k in ("BidPrice", "AskPrice")}
        self._quote(symbol, msg | unset_zero, "BidQuantity", "AskQuantity", ts, recv_ns, out)
        shown = facts.symbols.setdefault(symbol, {})
        for field, name in (
            ("SessionSettlementPrice", "settlement"),
            ("SessionOpenPrice", "session_open"),
            ("SessionHighPrice", "session_high"),
            ("SessionLowPrice", "session_low"),
            ("SessionVolume", "session_volume"),
            ("LastTradePrice", "last_trade_price"),
        ):
            value = _price(msg.get(field))
            if value is not None:
                shown[name] = value
        status = msg.get("TradingStatus")
        if isinstance(status, int) and status in m.TRADING_STATUS:
            shown["trading_status"] = m.TRADING_STATUS[status]
        shown["snapshot"] = True
        facts.changed = True

    def _quote(
        self,
        symbol: str,
        msg: Message,
        bid_qty: str,
        ask_qty: str,
        ts: int,
        recv_ns: int,
        out: dict[str, list[Any]],
    ) -> None:
        book = self._book.setdefault(symbol, [None, None, None, None])
        bid, ask = _price(msg.get("BidPrice")), _price(msg.get("AskPrice"))
        if bid is not None:
            book[0], book[1] = bid, _size(msg.get(bid_qty))
        if ask is not None:
            book[2], book[3] = ask, _size(msg.get(ask_qty))
        if None in book:
            return  # one side still unknown: no quote to show yet
        for name, value in (
            ("ts_event", ts),
            ("ts_recv", recv_ns),
            ("symbol", symbol),
            ("bid", book[0]),
            ("bid_size", book[1]),
            ("ask", book[2]),
            ("ask_size", book[3]),
            ("source", ""),
            ("seq", self._next_seq(Kind.QUOTE, symbol)),
        ):
            out[name].append(value)

    def _fact(self, msg: Message, facts: Facts) -> None:
        type_ = msg["Type"]
        if type_ == m.T.HEARTBEAT:
            facts.heartbeats += 1
            return
        facts.changed = True
        if type_ == m.T.MARKET_DATA_REJECT:
            symbol_id = msg.get("SymbolID")
            name = (
                self.symbols.get(symbol_id, str(symbol_id))
                if isinstance(symbol_id, int)
                else str(symbol_id)
            )
            facts.rejected[name] = str(msg.get("RejectText") or "rejected without a reason")
        elif type_ == m.T.MARKET_DATA_FEED_STATUS:
            facts.feed_status = m.FEED_STATUS.get(msg.get("Status", 0), str(msg.get("Status")))
        elif type_ == m.T.FEED_SYMBOL_STATUS:
            symbol = self._symbol(msg)
            facts.symbols.setdefault(symbol, {})["feed"] = m.FEED_STATUS.get(
                msg.get("Status", 0), "?"
            )
        elif type_ == m.T.TRADING_SYMBOL_STATUS:
            symbol = self._symbol(msg)
            facts.symbols.setdefault(symbol, {})["trading_status"] = m.TRADING_STATUS.get(
                msg.get("Status", 0), "?"
            )
        elif type_ in m.SESSION_FIELDS:
            field, name = m.SESSION_FIELDS[type_]
            value = msg.get(field)
            if isinstance(value, float):
                value = _price(value)
            facts.symbols.setdefault(self._symbol(msg), {})[name] = value
        elif type_ == m.T.LOGOFF:
            facts.logoff = msg
        else:
            facts.unknown[type_] = facts.unknown.get(type_, 0) + 1


def _size(value: Any) -> float | None:
    if value is None:
        return 0.0
    size = float(value)
    return 0.0 if not math.isfinite(size) or size >= m.UNSET_ABOVE else size
