"""Shared bench helpers: percentiles and a private redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import numpy as np


def percentiles(samples_s: list[float]) -> str:
    ms = np.array(samples_s) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return f"p50 {p50:.3f} ms  p95 {p95:.3f} ms  p99 {p99:.3f} ms  max {ms.max():.3f} ms  (n={ms.size})"


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free loopback port, or None if it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


class RawHttp:
    """A minimal HTTP/1.1 keep-alive GET client on asyncio streams.

    httpx's pool, not the server, limits throughput at 100 concurrent connections (measured:
    ~250 req/s against a route wrk drives at 6,800 req/s), so the latency benchmark uses
    this instead: one prepared request per connection, Content-Length framing only.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.headers}\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def figure(
    name: str,
    value: float | None,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_name: str = "",
    ratio: float | None = None,
    target: str = "",
    samples: int | None = None,
    limits: str = "",
) -> dict[str, object]:
    """One row of the benchmark table: a figure beside its same-run baseline."""
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    return {
        "figure": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": ratio,
        "target": target,
        "samples": samples,
        "limits": limits,
    }


def write_json(path: str | None, figures: list[dict[str, object]], **extra: object) -> None:
    if path:
        import json

        with open(path, "w") as f:
            json.dump({"figures": figures, **extra}, f, indent=1, default=str)
