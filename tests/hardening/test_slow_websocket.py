"""WebSocket readers that stop reading (issue 12, finding 6). The drop check used to run
only after a send completed, so a client that never read held its subscription until the
keepalive ping closed it (1011, 20-40 s later) and was never told why. Now a send that
cannot go out within ``SEND_TIMEOUT_S`` ends the subscription at once, and a client that
reads again finds ``slow_consumer`` and close code 1013."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from urllib.parse import urlsplit

import orjson
import pyarrow as pa
import pytest
import websockets

from tickpipe.api.routes import stream as stream_route
from tickpipe.clock import SystemClock
from tickpipe.events import Kind, Trade, to_batch

from .conftest import Api


class StalledClient:
    """A WebSocket client that can really stop reading: a raw socket with a small receive
    buffer (the websockets library keeps reading into its own queue, so a test built on it
    never fills the server's socket)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, api: Api, query: str) -> StalledClient:
        url = urlsplit(api.base_url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (url.hostname, url.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /api/v1/stream?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next whole message (server frames are unmasked)."""
        payload = b""
        while True:
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            payload += await self.reader.readexactly(length)
            if b0 & 0x80:
                return b0 & 0x0F, payload

    def close(self) -> None:
        self.writer.close()


def ws_url(api: Api, query: str) -> str:
    return api.base_url.replace("http://", "ws://") + "/api/v1/stream?" + query


async def one_subscriber(api: Api) -> object:
    async with asyncio.timeout(5):
        while len(api.pipeline.bus.subscribers) != 1:
            await asyncio.sleep(0.005)  # the server registers it on its own task
    return api.pipeline.bus.subscribers[0]


def big_batch(rows: int = 5000) -> pa.RecordBatch:
    t0 = SystemClock().now_ns()
    return to_batch(
        Kind.TRADE, [Trade(t0 + i, t0 + i, "SPY", 600.0 + i, 1, "feed", i + 1) for i in range(rows)]
    )


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_route, "SEND_TIMEOUT_S", 0.5)
    monkeypatch.setattr(stream_route, "NOTICE_GRACE_S", 1.0)


async def flood_until_gone(api: Api, sub: object, batch: pa.RecordBatch, limit_s: float) -> float:
    """Offer ``batch`` every 20 ms until the server drops the subscription; its age then."""
    started = time.monotonic()
    while sub in api.pipeline.bus.subscribers:
        if time.monotonic() - started > limit_s:
            raise AssertionError(f"subscription still held after {limit_s} s")
        sub.offer(Kind.TRADE, batch)  # type: ignore[attr-defined]
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_client_that_never_reads_is_dropped_within_the_send_timeout(
    served: Api, quick: None
) -> None:
    client = await StalledClient.connect(served, f"symbols=SPY&token={served.stream}")
    try:
        await client.recv()  # the hello; then this client reads nothing more
        sub = await one_subscriber(served)
        held = await flood_until_gone(served, sub, big_batch(), limit_s=15)
        # 0.5 s without progress, plus at most 1 s for the notice; the ping timeout is 20 s
        assert held < 8
    finally:
        client.close()


async def test_a_client_that_reads_again_finds_slow_consumer_and_1013(
    served: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_route, "SEND_TIMEOUT_S", 0.5)
    monkeypatch.setattr(stream_route, "NOTICE_GRACE_S", 20.0)
    client = await StalledClient.connect(served, f"symbols=SPY&token={served.stream}")
    try:
        await client.recv()
        sub = await one_subscriber(served)
        batch = big_batch()
        started = time.monotonic()
        while time.monotonic() - started < 3:  # well past the send timeout
            sub.offer(Kind.TRADE, batch)  # type: ignore[attr-defined]
            await asyncio.sleep(0.2)  # a few deliveries: the queue itself never overflows
        assert sub.dropped == 0  # type: ignore[attr-defined]
        notices = []
        async with asyncio.timeout(30):
            while True:
                opcode, payload = await client.recv()
                if opcode == 0x8:  # close
                    break
                if opcode == 0x1 and payload.startswith(b"{"):
                    notices.append(orjson.loads(payload))
    finally:
        client.close()
    assert [n["error"]["code"] for n in notices] == ["slow_consumer"]
    assert "read nothing for 0.5 s" in notices[0]["error"]["message"]
    assert int.from_bytes(payload[:2], "big") == 1013  # not the ping timeout's 1011


async def test_conflation_sends_the_latest_event_per_symbol_and_type(served: Api) -> None:
    async with websockets.connect(
        ws_url(served, f"symbols=SPY,QQQ&types=trade&conflate=200&token={served.stream}")
    ) as ws:
        hello = orjson.loads(await ws.recv())
        assert hello["conflate_ms"] == 200
        sub = await one_subscriber(served)
        t0 = SystemClock().now_ns()
        for i in range(50):
            for symbol in ("SPY", "QQQ"):
                trade = Trade(t0 + i, t0 + i, symbol, 100.0 + i, 1, "feed", i + 1)
                sub.offer(Kind.TRADE, to_batch(Kind.TRADE, [trade]))  # type: ignore[attr-defined]
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert sorted((e["symbol"], e["seq"], e["price"]) for e in frame) == [
        ("QQQ", 50, 149.0),
        ("SPY", 50, 149.0),
    ]


async def test_a_bad_conflate_value_is_refused(served: Api) -> None:
    async with websockets.connect(
        ws_url(served, f"symbols=SPY&conflate=3&token={served.stream}")
    ) as ws:
        message = orjson.loads(await ws.recv())
    assert message["error"]["code"] == "bad_parameter"


def test_clients_share_one_encoding_per_delivery_in_frames_a_client_accepts() -> None:
    shared = stream_route._SharedJson()
    batch = big_batch(3)
    first = shared.frames([(Kind.TRADE, batch)])
    assert shared.frames([(Kind.TRADE, batch)]) is first  # the second client: no new work
    assert [e["seq"] for e in orjson.loads(first[0])] == [1, 2, 3]
    assert shared.frames([(Kind.TRADE, big_batch(3))]) is not first  # a new delivery
    piled = [(Kind.TRADE, big_batch(5000))] * 4  # a slow client's backlog
    frames = shared.frames(piled)
    assert all(len(f) < 1 << 20 for f in frames)  # under websockets' default max_size
    assert sum(len(orjson.loads(f)) for f in frames) == 20_000
