"""The attacks of issue 20, finding 1, on the real process: one 100 MB header and six 60 MB
ones, then 500 slowloris connections (half of them WebSocket handshakes). Each is refused
(431, 408) within the limits; /health, timed all along from its own connection, keeps
answering fast; the process's memory stays where it was; and afterwards a normal client
and a WebSocket client are served. Before the limits: /health p99 3.4 s and RSS +200 MB
(one 100 MB header), RSS +450 MB (six of 60 MB); slowloris connections stayed open for as
long as they trickled."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from tickpipe.api.protocol import HEAD_TIMEOUT_S
from tickpipe.store.keystore import KeyStore

from ..conftest import free_port
from ..e2e.helpers import PipelineProcess

pytestmark = pytest.mark.slow

HEALTH_P99_MS = 250
"""/health's p99 during an attack: the goal is 50 ms; this leaves room for a shared 2-core
machine, and the unbounded server measured 3,400 ms"""
RSS_GROWTH_MB = 64


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class HealthProbe:
    """/health every 20 ms on one keep-alive connection, from its own thread, and the
    process's RSS beside it."""

    def __init__(self, proc: PipelineProcess) -> None:
        self.proc = proc
        self.latencies: list[float] = []
        self.rss_peak = rss_mb(proc.proc.pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe")

    def _run(self) -> None:
        with httpx.Client(base_url=self.proc.base, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get("/api/v1/health").status_code == 200
                self.latencies.append(time.perf_counter() - started)
                self.rss_peak = max(self.rss_peak, rss_mb(self.proc.proc.pid))
                self._stop.wait(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def p99_ms(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000

    def max_ms(self) -> float:
        return max(self.latencies) * 1000


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[PipelineProcess]:
    env = {"TICKPIPE_DATA_DIR": str(tmp_path / "data"), "TICKPIPE_SIMULATOR_SEED": "5"}
    process = PipelineProcess(free_port(), env, tmp_path / "pipeline.log")
    process.wait_ready()
    yield process
    process.stop(15)


def huge_headers(port: int, megabytes: int, until: float, answers: list[bytes]) -> None:
    """Until ``until``, connect and send a header of ``megabytes`` MB; keep each answer the
    server gave (when the reset after it let us read it)."""
    chunk = b"a" * (1 << 20)
    while time.monotonic() < until:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\nX-Big: ")
                for _ in range(megabytes):
                    sock.sendall(chunk)
            answer = b""
            with contextlib.suppress(OSError):
                while part := sock.recv(65536):
                    answer += part
            answers.append(answer)


def test_oversized_headers_are_refused_without_stalling_the_server(
    proc: PipelineProcess, tmp_path: Path
) -> None:
    """For 3 s, one attacker sending 100 MB headers and six sending 60 MB ones, each
    reconnecting as soon as it is cut off."""
    answers: list[bytes] = []
    baseline = rss_mb(proc.proc.pid)
    with HealthProbe(proc) as probe:
        time.sleep(0.3)  # a few quiet samples first
        until = time.monotonic() + 3
        attackers = [
            threading.Thread(target=huge_headers, args=(proc.port, mb, until, answers))
            for mb in (100, 60, 60, 60, 60, 60, 60)
        ]
        for attacker in attackers:
            attacker.start()
        for attacker in attackers:
            attacker.join(60)
        time.sleep(0.3)
    print(
        f"100 MB and 6 x 60 MB headers for 3 s: {len(answers)} connections; /health "
        f"n={len(probe.latencies)} p99 {probe.p99_ms():.1f} ms, max {probe.max_ms():.0f} ms; "
        f"RSS {baseline:.0f} -> peak {probe.rss_peak:.0f} MB"
    )
    read = [a for a in answers if a]
    assert read, "no attacker could read the server's answer"
    for answer in read:
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        body = orjson.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] == "headers_too_large"
    assert probe.p99_ms() < HEALTH_P99_MS
    assert probe.rss_peak - baseline < RSS_GROWTH_MB
    log = (tmp_path / "pipeline.log").read_text()
    assert log.count("431 headers_too_large") == 1, log[-2000:]  # counted, not a line each
    assert_still_serves(proc, tmp_path)


async def slowloris(port: int, websocket: bool, deadline: float) -> tuple[float, bytes]:
    """Trickle a header line a second until the server answers or closes; how long that took
    and what it said."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if websocket:
        head = (
            b"GET /api/v1/stream?symbols=SPY HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        )
    else:
        head = b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n"
    answer = b""
    try:
        writer.write(head)
        while loop.time() < deadline:
            try:
                first = await asyncio.wait_for(reader.read(65536), 1.0)
            except TimeoutError:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                continue
            answer = first + await reader.read()
            break
    except OSError:
        pass
    finally:
        writer.close()
    return loop.time() - started, answer


def test_slowloris_connections_are_answered_408_within_the_head_timeout(
    proc: PipelineProcess, tmp_path: Path
) -> None:
    n = 500

    async def attack() -> list[tuple[float, bytes]]:
        deadline = asyncio.get_running_loop().time() + HEAD_TIMEOUT_S + 20
        return await asyncio.gather(*(slowloris(proc.port, i % 2 == 1, deadline) for i in range(n)))

    baseline = rss_mb(proc.proc.pid)
    with HealthProbe(proc) as probe:
        results = asyncio.run(attack())
    held = sorted(seconds for seconds, _ in results)
    print(
        f"{n} slowloris connections held {held[0]:.1f}-{held[-1]:.1f} s; /health "
        f"n={len(probe.latencies)} p99 {probe.p99_ms():.1f} ms, max {probe.max_ms():.0f} ms; "
        f"RSS {baseline:.0f} -> peak {probe.rss_peak:.0f} MB"
    )
    for seconds, answer in results:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
        assert HEAD_TIMEOUT_S - 1 < seconds < HEAD_TIMEOUT_S + 5
    assert probe.p99_ms() < HEALTH_P99_MS
    assert probe.rss_peak - baseline < RSS_GROWTH_MB
    log = (tmp_path / "pipeline.log").read_text()
    assert log.count("408 request_timeout") <= 2, log[-2000:]  # counted, not a line each
    assert_still_serves(proc, tmp_path)


def assert_still_serves(proc: PipelineProcess, tmp_path: Path) -> None:
    """A normal client and a WebSocket client, after the attack."""
    token, _ = KeyStore(tmp_path / "data" / "keys.sqlite").create(
        f"after-{time.monotonic_ns()}", ["read", "stream"], 100
    )
    response = httpx.get(
        proc.base + "/api/v1/ticks/realtime?symbols=SPY&limit=1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text

    async def stream() -> None:
        url = proc.base.replace("http://", "ws://") + "/api/v1/stream?symbols=SPY,QQQ"
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
            events = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            assert events and events[0]["symbol"] in ("SPY", "QQQ")

    asyncio.run(stream())
