"""What a client may send before its request is complete (issue 20, finding 1), on both of
uvicorn's HTTP implementations: a head (request line and headers) over 64 KiB or with more
than 100 fields is refused in JSON, one that does not arrive within the head timeout gets
a 408, a connection that sends nothing is closed; ordinary requests, keep-alive and
WebSockets are served as before. (tests/hardening/test_hostile_clients.py runs the real
attacks against a real process and times /health during them.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
import uvicorn
import websockets

from tickpipe.api import protocol
from tickpipe.api.app import create_app
from tickpipe.cli import _Server

from ..conftest import free_port
from .conftest import Api

try:
    import httptools  # noqa: F401

    IMPLEMENTATIONS = ["httptools", "h11"]
except ImportError:
    IMPLEMENTATIONS = ["h11"]


def protocol_class(name: str) -> type:
    if name == "h11":
        return protocol.LimitedH11Protocol
    return protocol.HttpProtocol


@pytest.fixture(params=IMPLEMENTATIONS)
async def server(request: pytest.FixtureRequest, api: Api) -> AsyncIterator[Api]:
    port = free_port()
    config = uvicorn.Config(
        create_app(api.ctx),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        http=protocol_class(request.param),
    )
    srv = _Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"
    api.base_url = f"http://127.0.0.1:{port}"
    yield api
    srv.should_exit = True
    await asyncio.wait_for(task, 10)


async def exchange(api: Api, head: bytes, *, read_timeout: float = 5) -> bytes:
    """Send ``head`` on a new connection; everything the server sends until it closes."""
    port = int(api.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            return await reader.read()
    finally:
        writer.close()


def status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    return int(head.split()[1]), orjson.loads(body)["error"]["code"]


def get(path: str = "/api/v1/health", *headers: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + b"".join(headers)


async def test_a_head_over_64_kib_is_431_in_json(server: Api) -> None:
    big = b"X-Big: " + b"a" * (70 * 1024) + b"\r\n"
    assert status_and_error(await exchange(server, get("/api/v1/health", big) + b"\r\n")) == (
        431,
        "headers_too_large",
    )


async def test_a_request_line_over_64_kib_is_414(server: Api) -> None:
    answer = await exchange(server, get("/api/v1/health?x=" + "a" * (70 * 1024)) + b"\r\n")
    assert status_and_error(answer) == (414, "uri_too_long")


async def test_more_than_100_header_fields_is_431(server: Api) -> None:
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    answer = await exchange(server, get("/api/v1/health", many) + b"\r\n")
    assert status_and_error(answer) == (431, "too_many_headers")
    fine = b"".join(b"X-%d: 1\r\n" % i for i in range(98))  # + Host + Connection: 100
    answer = await exchange(server, get("/api/v1/health", fine, b"Connection: close\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_a_malformed_request_is_400_in_json(server: Api) -> None:
    assert status_and_error(await exchange(server, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")) == (
        400,
        "bad_request",
    )


@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/stream?symbols=SPY"])
async def test_a_head_not_complete_within_the_timeout_is_408(
    server: Api, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setattr(protocol, "HEAD_TIMEOUT_S", 0.5)
    upgrade = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    head = get(path, upgrade if "stream" in path else b"")  # no blank line: never complete
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert status_and_error(await exchange(server, head)) == (408, "request_timeout")
    assert 0.4 < loop.time() - started < 3


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    server: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "HEAD_TIMEOUT_S", 0.5)
    assert await exchange(server, b"") == b""


async def test_keep_alive_requests_and_websockets_are_served_as_before(
    server: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "HEAD_TIMEOUT_S", 0.5)
    port = int(server.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):  # one connection, three requests, a pause longer than the timeout
            writer.write(get() + b"\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert orjson.loads(await reader.readexactly(length))["status"] in ("ok", "degraded")
            await asyncio.sleep(0.7)
    finally:
        writer.close()
    url = server.base_url.replace("http://", "ws://") + "/api/v1/stream?symbols=SPY"
    headers = {"Authorization": f"Bearer {server.stream}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await asyncio.sleep(0.7)  # past the head timeout: a WebSocket is not a request head
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"
        await ws.ping()


async def test_refusals_are_logged_at_most_once_per_interval_with_their_count(
    server: Api, caplog: pytest.LogCaptureFixture
) -> None:
    big = b"X-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    before = protocol.refusals()["headers_too_large"]
    protocol._THROTTLES["headers_too_large"].recover()  # a fresh streak: its first is logged
    with caplog.at_level("WARNING", logger="tickpipe.api.protocol"):
        for _ in range(5):
            await exchange(server, get("/api/v1/health", big))
    assert protocol.refusals()["headers_too_large"] == before + 5
    lines = [r.getMessage() for r in caplog.records if r.name == "tickpipe.api.protocol"]
    assert len(lines) == 1 and "431 headers_too_large" in lines[0], lines
    metrics = (await server.client.get("/metrics")).text
    assert f'tickpipe_http_refused_total{{code="headers_too_large"}} {before + 5}.0' in metrics
