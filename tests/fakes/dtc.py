"""A local DTC server speaking Sierra Chart's protocol on 127.0.0.1, binary or JSON.

Written from the fact sheet's struct offsets (``DTCProtocol.h`` v8), independently of the
client's tables: each message is packed field by field at its documented offset, so a
wrong offset on either side shows up as a wrong value in the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from typing import Any, Literal

# type -> (size, [(offset, struct code, field)]), as DTCProtocol.h lays them out
LAYOUTS: dict[int, tuple[int, list[tuple[int, str, str]]]] = {
    1: (284, [(4, "i", "ProtocolVersion"), (8, "32s", "Username"), (40, "32s", "Password"),
              (136, "i", "Integer_1"), (144, "i", "HeartbeatIntervalInSeconds"),
              (248, "32s", "ClientName")]),
    2: (256, [(4, "i", "ProtocolVersion"), (8, "i", "Result"), (12, "96s", "ResultText"),
              (176, "60s", "ServerName"), (252, "B", "MarketDataSupported")]),
    3: (16, [(4, "I", "NumDroppedMessages"), (8, "q", "CurrentDateTime")]),
    5: (104, [(4, "96s", "Reason"), (100, "B", "DoNotReconnect")]),
    6: (16, [(4, "i", "ProtocolVersion"), (8, "i", "Encoding"), (12, "4s", "ProtocolType")]),
    7: (16, [(4, "i", "ProtocolVersion"), (8, "i", "Encoding"), (12, "4s", "ProtocolType")]),
    100: (8, [(4, "i", "Status")]),
    101: (96, [(4, "i", "RequestAction"), (8, "I", "SymbolID"), (12, "64s", "Symbol"),
               (76, "16s", "Exchange")]),
    103: (104, [(4, "I", "SymbolID"), (8, "96s", "RejectText")]),
    104: (144, [(4, "I", "SymbolID"), (8, "d", "SessionSettlementPrice"),
                (16, "d", "SessionOpenPrice"), (24, "d", "SessionHighPrice"),
                (32, "d", "SessionLowPrice"), (40, "d", "SessionVolume"),
                (56, "d", "BidPrice"), (64, "d", "AskPrice"), (72, "d", "AskQuantity"),
                (80, "d", "BidQuantity"), (88, "d", "LastTradePrice"),
                (96, "d", "LastTradeVolume"), (112, "d", "BidAskDateTime"),
                (128, "b", "TradingStatus")]),
    107: (40, [(4, "I", "SymbolID"), (8, "H", "AtBidOrAsk"), (16, "d", "Price"),
               (24, "d", "Volume"), (32, "d", "DateTime")]),
    108: (40, [(4, "I", "SymbolID"), (8, "d", "BidPrice"), (16, "f", "BidQuantity"),
               (24, "d", "AskPrice"), (32, "f", "AskQuantity"), (36, "I", "DateTime")]),
    112: (24, [(4, "f", "Price"), (8, "f", "Volume"), (12, "I", "DateTime"),
               (16, "I", "SymbolID"), (20, "H", "AtBidOrAsk")]),
    114: (24, [(4, "I", "SymbolID"), (8, "d", "Price"), (16, "I", "TradingSessionDate")]),
    116: (12, [(4, "I", "SymbolID"), (8, "i", "Status")]),
    117: (28, [(4, "f", "BidPrice"), (8, "f", "BidQuantity"), (12, "f", "AskPrice"),
               (16, "f", "AskQuantity"), (20, "I", "DateTime"), (24, "I", "SymbolID")]),
    137: (40, [(4, "I", "SymbolID"), (8, "B", "AtBidOrAsk"), (9, "b", "UnbundledTradeIndicator"),
               (16, "d", "Price"), (24, "I", "Volume"), (32, "d", "DateTime")]),
    142: (19, [(4, "I", "SymbolID"), (8, "f", "Price"), (12, "I", "Volume"),
               (16, "B", "AtBidOrAsk"), (17, "b", "UnbundledTradeIndicator")]),
    143: (24, [(4, "I", "SymbolID"), (8, "f", "BidPrice"), (12, "I", "BidQuantity"),
               (16, "f", "AskPrice"), (20, "I", "AskQuantity")]),
    144: (32, [(4, "I", "SymbolID"), (8, "f", "BidPrice"), (12, "f", "BidQuantity"),
               (16, "f", "AskPrice"), (20, "f", "AskQuantity"), (24, "q", "DateTime")]),
    146: (27, [(4, "I", "SymbolID"), (8, "f", "Price"), (12, "I", "Volume"),
               (16, "q", "DateTime"), (24, "B", "AtBidOrAsk"), (25, "b", "UnbundledTradeIndicator")]),
    147: (35, [(4, "I", "SymbolID"), (8, "d", "Price"), (16, "d", "Volume"), (24, "q", "DateTime"),
               (32, "B", "AtBidOrAsk"), (33, "b", "UnbundledTradeIndicator")]),
    148: (48, [(4, "I", "SymbolID"), (8, "d", "BidPrice"), (16, "d", "BidQuantity"),
               (24, "d", "AskPrice"), (32, "d", "AskQuantity"), (40, "q", "DateTime")]),
}  # fmt: skip


def pack(message: dict[str, Any]) -> bytes:
    size, fields = LAYOUTS[message["Type"]]
    out = bytearray(size)
    struct.pack_into("<HH", out, 0, size, message["Type"])
    for offset, code, name in fields:
        value = message.get(name, b"" if code.endswith("s") else 0)
        struct.pack_into(
            "<" + code, out, offset, value.encode() if isinstance(value, str) else value
        )
    return bytes(out)


def unpack(frame: bytes) -> dict[str, Any]:
    _, type_ = struct.unpack_from("<HH", frame)
    message: dict[str, Any] = {"Type": type_}
    for offset, code, name in LAYOUTS.get(type_, (0, []))[1]:
        (value,) = struct.unpack_from("<" + code, frame, offset)
        message[name] = value.split(b"\0")[0].decode() if isinstance(value, bytes) else value
    return message


class FakeDtcServer:
    """Sierra Chart's DTC server as far as market data goes.

    ``encoding_request``: "binary" answers a binary ENCODING_REQUEST in binary (Sierra set to
    Automatic); "json" wants it in JSON and hangs up on a binary one; "ignored" is a server
    fixed to ``encoding`` that drops the request unanswered.
    """

    def __init__(
        self,
        encoding: Literal["binary", "json"] = "binary",
        *,
        encoding_request: Literal["binary", "json", "ignored"] = "binary",
        answer_encoding: int | None = None,
        logon_result: int = 1,
        logon_text: str = "Connected",
        rejects: dict[str, str] | None = None,
        snapshots: dict[str, dict[str, Any]] | None = None,
        heartbeat_s: float = 0.1,
    ) -> None:
        self.encoding = encoding
        self.encoding_request = encoding_request
        self.answer_encoding = answer_encoding
        self.logon_result = logon_result
        self.logon_text = logon_text
        self.rejects = rejects or {}
        self.snapshots = snapshots or {}
        self.heartbeat_s = heartbeat_s
        self.received: list[dict[str, Any]] = []
        self.subscribed: dict[str, int] = {}
        self.connections = 0
        self.silent = False
        self.changed = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeDtcServer:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def encode(self, message: dict[str, Any], *, json_: bool | None = None) -> bytes:
        use_json = self.encoding == "json" if json_ is None else json_
        return json.dumps(message).encode() + b"\0" if use_json else pack(message)

    async def push(self, *messages: dict[str, Any], raw: bytes = b"") -> None:
        """Send messages to every connected client (in the server's encoding)."""
        for writer in self._writers:
            writer.write(b"".join(self.encode(msg) for msg in messages) + raw)
            await writer.drain()

    def _note(self, message: dict[str, Any]) -> None:
        self.received.append(message)
        self.changed.set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._writers.append(writer)
        json_mode = False
        buffer = b""
        try:
            first = await reader.read(65_536)
            if first[:1] == b"{":
                json_mode = True
            elif self.encoding_request == "json":
                return  # wanted a JSON encoding request: hang up
            buffer = first
            heartbeats: asyncio.Task[None] | None = None
            while True:
                frames, buffer = _split(buffer, json_mode)
                for frame in frames:
                    msg = json.loads(frame) if json_mode else unpack(frame)
                    self._note(msg)
                    reply, json_mode = self._answer(msg, json_mode)
                    if reply:
                        writer.write(reply)
                    if msg["Type"] == 1 and heartbeats is None and self.logon_result == 1:
                        heartbeats = asyncio.create_task(self._heartbeats(writer, json_mode))
                        self._tasks.add(heartbeats)
                await writer.drain()
                data = await reader.read(65_536)
                if not data:
                    return
                buffer += data
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._writers.remove(writer)
            writer.close()
            self._tasks.discard(task)
            self.changed.set()

    def _answer(self, msg: dict[str, Any], json_mode: bool) -> tuple[bytes, bool]:
        type_ = msg["Type"]
        if type_ == 6:
            if self.encoding_request == "ignored":
                return b"", self.encoding == "json"
            encoding = self.answer_encoding if self.answer_encoding is not None else msg["Encoding"]
            reply = {"Type": 7, "ProtocolVersion": 8, "Encoding": encoding, "ProtocolType": "DTC"}
            return self.encode(reply, json_=json_mode), encoding == 2
        if type_ == 1:
            reply = {
                "Type": 2,
                "ProtocolVersion": 8,
                "Result": self.logon_result,
                "ResultText": self.logon_text,
                "ServerName": "SC DTC Server",
                "MarketDataSupported": 1,
            }
            return self.encode(reply, json_=json_mode), json_mode
        if type_ == 101:
            name, symbol_id = msg["Symbol"], msg["SymbolID"]
            self.subscribed[name] = symbol_id
            if name in self.rejects:
                out = {"Type": 103, "SymbolID": symbol_id, "RejectText": self.rejects[name]}
                return self.encode(out, json_=json_mode), json_mode
            snap = self.snapshots.get(name)
            if snap is not None:
                return self.encode(
                    {"Type": 104, "SymbolID": symbol_id, **snap}, json_=json_mode
                ), json_mode
        return b"", json_mode

    async def _heartbeats(self, writer: asyncio.StreamWriter, json_mode: bool) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while not writer.is_closing():
                if not self.silent:
                    writer.write(
                        self.encode(
                            {"Type": 3, "NumDroppedMessages": 0, "CurrentDateTime": 1},
                            json_=json_mode,
                        )
                    )
                    await writer.drain()
                await asyncio.sleep(self.heartbeat_s)


def _split(buffer: bytes, json_mode: bool) -> tuple[list[bytes], bytes]:
    if json_mode:
        *frames, rest = buffer.split(b"\0")
        return [f for f in frames if f.strip()], rest
    frames = []
    while len(buffer) >= 4:
        (size,) = struct.unpack_from("<H", buffer)
        if len(buffer) < size:
            break
        frames.append(buffer[:size])
        buffer = buffer[size:]
    return frames, buffer
