"""A small HTTP/1.1 load generator, run in its own process; prints one JSON object.

Open loop (the default): request i is *scheduled* at ``start + i / rate`` whatever happened
to the earlier ones, handed to an idle keep-alive connection or, when none is idle, queued
until one is; its latency runs from its scheduled time to the end of its answer, so a
stalled server shows up as queueing instead of as a generator that slowed down with it
(coordinated omission). Connections are opened and warmed (``--warmup`` seconds at the
same rate, discarded) before measuring.

Closed loop (``--closed``): each connection sends its next request as soon as the answer to
the last one arrives, for throughput when ``wrk`` is missing.

    python bench/loadgen.py --port 8000 --path /api/v1/health --rate 2000 --connections 100
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import threading
import time
from typing import Any

import numpy as np

MAX_BACKLOG_S = 5.0
"""a backlog of more than this many seconds of requests ends the run as overloaded"""


class Connection(asyncio.Protocol):
    """One keep-alive connection; answers framed by Content-Length only (every answer of
    the routes benchmarked has one)."""

    def __init__(self, on_done: Any) -> None:
        self.on_done = on_done
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.buffer = bytearray()
        self.need = -1
        self.status = 0
        self.token: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send(self, request: bytes, token: Any) -> None:
        self.token = token
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                self.status = int(head[9:12])
                at = head.find(b"content-length:")
                length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
                self.need = end + 4 + length
            if len(self.buffer) < self.need:
                return
            del self.buffer[: self.need]
            self.need = -1
            self.on_done(self, self.status, self.token)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.token is not None:
            self.on_done(self, 0, self.token)


async def open_loop(args: argparse.Namespace, request: bytes) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    idle: collections.deque[Connection] = collections.deque()
    backlog: collections.deque[tuple[float, bool]] = collections.deque()
    latencies: list[float] = []
    errors = collections.Counter[int]()
    lag: list[float] = []
    state = {"max_backlog": 0, "outstanding": 0}

    def done(conn: Connection, status: int, token: tuple[float, bool]) -> None:
        scheduled, measured = token
        conn.token = None
        state["outstanding"] -= 1
        if measured:
            if status == 200:
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors[status] += 1
        if status == 0:
            return  # the connection is gone
        if backlog:
            state["outstanding"] += 1
            conn.send(request, backlog.popleft())
        else:
            idle.append(conn)

    conns = []
    for _ in range(args.connections):
        _, conn = await loop.create_connection(lambda: Connection(done), args.host, args.port)
        conns.append(conn)
        idle.append(conn)
    rate = args.rate
    start = time.perf_counter() + 0.05
    warm_end = start + args.warmup
    total = int((args.warmup + args.duration) * rate)
    stop = threading.Event()
    finished = asyncio.Event()

    def fire(scheduled: float) -> None:
        token = (scheduled, scheduled >= warm_end)
        if idle:
            state["outstanding"] += 1
            idle.popleft().send(request, token)
        else:
            backlog.append(token)
            state["max_backlog"] = max(state["max_backlog"], len(backlog))
            if len(backlog) > rate * MAX_BACKLOG_S:
                stop.set()

    def schedule() -> None:
        """The clock: a thread sleeping to each request's time (the event loop's timers
        round to milliseconds, which would make the generator spin or send late)."""
        for i in range(total):
            if stop.is_set():
                break
            scheduled = start + i / rate
            wait = scheduled - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            lag.append(time.perf_counter() - scheduled)
            loop.call_soon_threadsafe(fire, scheduled)
        loop.call_soon_threadsafe(finished.set)

    clock = threading.Thread(target=schedule, daemon=True)
    clock.start()
    await finished.wait()
    overloaded = stop.is_set()
    deadline = time.perf_counter() + 10
    while (backlog or state["outstanding"]) and time.perf_counter() < deadline:
        await asyncio.sleep(0.005)
    unfinished = len(backlog) + state["outstanding"]
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    measured_count = int(args.duration * rate)
    clock.join()
    return {
        "mode": "open-loop",
        "rate": rate,
        "connections": args.connections,
        "duration_s": args.duration,
        "scheduled": measured_count,
        "samples": len(latencies),
        "errors": dict(errors),
        "unfinished": unfinished,
        "overloaded": overloaded,
        "max_backlog": state["max_backlog"],
        "latency_ms": _percentiles(latencies),
        "generator_lag_ms_p99": float(np.percentile(lag, 99) * 1000) if lag else None,
    }


async def closed_loop(args: argparse.Namespace, request: bytes) -> dict[str, Any]:
    """Each connection back to back; latency from send to answer."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = collections.Counter[int]()
    measuring = {"on": False, "stop": False}

    def done(conn: Connection, status: int, token: float) -> None:
        if measuring["on"]:
            if status == 200:
                latencies.append(time.perf_counter() - token)
            else:
                errors[status] += 1
        if status and not measuring["stop"]:
            conn.send(request, time.perf_counter())

    conns = []
    for _ in range(args.connections):
        _, conn = await loop.create_connection(lambda: Connection(done), args.host, args.port)
        conns.append(conn)
        conn.send(request, time.perf_counter())
    await asyncio.sleep(args.warmup)
    measuring["on"] = True
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    measuring["on"] = False
    elapsed = time.perf_counter() - started
    measuring["stop"] = True
    await asyncio.sleep(0.2)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return {
        "mode": "closed-loop",
        "connections": args.connections,
        "duration_s": elapsed,
        "samples": len(latencies),
        "errors": dict(errors),
        "requests_per_s": len(latencies) / elapsed,
        "latency_ms": _percentiles(latencies),
    }


def _percentiles(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    ms = np.array(samples) * 1000
    p50, p95, p99, p999 = np.percentile(ms, [50, 95, 99, 99.9])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "p99.9": float(p999),
        "max": float(ms.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s (open loop)")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--closed", action="store_true")
    args = parser.parse_args()
    headers = "".join(f"{h}\r\n" for h in args.header)
    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n{headers}\r\n".encode()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        run = closed_loop if args.closed else open_loop
        result = runner.run(run(args, request))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
