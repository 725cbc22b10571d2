"""API latency under load, against a real server process ingesting simulated data.

Starts ``data-pipeline.py`` (simulator at 50 k events/s) over a data dir pre-filled with a
2 M-trade SPY session, then measures from this process:
  - the real-time route, one client, sequential requests, beside /api/v1/health (floor);
  - the real-time route with 100 concurrent clients;
  - a 1-day 1-minute-bars request, and a 1 M-row Arrow download.

    python bench/api_latency.py [--requests 3000] [--clients 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import RawHttp, percentiles
from bars import session_trades

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.store.journal import Journal
from tickpipe.store.keystore import KeyStore
from tickpipe.store.lake import LakeWriter

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400 * NS_PER_SECOND


def prepare(data: Path) -> tuple[str, int]:
    clock = SystemClock()
    day = (clock.now_ns() - DAY) // DAY * DAY  # yesterday: away from the live simulator
    journal = Journal(data / "journal", clock, segment_seconds=3600, segment_bytes=1 << 40)
    batch = session_trades(2_000_000, day + int(14.5 * 3600) * NS_PER_SECOND, seed=2)
    for start in range(0, batch.num_rows, 65_536):
        journal.append([("trade", batch.slice(start, 65_536))])
    journal.roll()
    LakeWriter(data / "lake", data / "journal", 3).flush_closed()
    settings = Settings(_env_file=None, data_dir=data)  # type: ignore[call-arg]
    token, _ = KeyStore(settings.keys_path).create("bench", ["read", "stream"], 1_000_000)
    return token, day


async def sequential(client: httpx.AsyncClient, path: str, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        response = await client.get(path)
        samples.append(time.perf_counter() - t)
        assert response.status_code == 200, response.text
    return samples


async def concurrent(
    port: int, headers: dict[str, str], path: str, clients: int, total: int
) -> tuple[list[float], float]:
    """``clients`` keep-alive connections, each sending its share of ``total`` requests."""
    samples: list[float] = []
    per_client = total // clients
    conns = [RawHttp("127.0.0.1", port, headers) for _ in range(clients)]
    await asyncio.gather(*(c.connect() for c in conns))

    async def worker(conn: RawHttp) -> None:
        for _ in range(per_client):
            t = time.perf_counter()
            status, _ = await conn.get(path)
            samples.append(time.perf_counter() - t)
            assert status == 200, status

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.close() for c in conns))
    return samples, len(samples) / elapsed


async def measure(base: str, port: int, token: str, day: int, requests: int, clients: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    realtime = "/api/v1/ticks/realtime?symbols=SPY&limit=100&types=trade"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        await sequential(client, realtime, 200)  # warm-up
    conn = RawHttp("127.0.0.1", port, headers)
    await conn.connect()
    floor, single = [], []
    for _ in range(requests // 3):  # interleaved, so noise hits both alike
        for path, into in (("/api/v1/health", floor), (realtime, single)):
            t = time.perf_counter()
            status, _ = await conn.get(path)
            into.append(time.perf_counter() - t)
            assert status == 200
    await conn.close()
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        print(f"floor   /api/v1/health, 1 client:        {percentiles(floor)}")
        print(f"realtime limit=100, 1 client:            {percentiles(single)}")
        print(f"realtime / floor (p50) = {np.median(single) / np.median(floor):.2f}")

        bars_path = f"/api/v1/ticks/historical?symbols=SPY&start_time={day}&end_time={day + DAY}&interval=1m"
        await sequential(client, bars_path, 2)
        bars = await sequential(client, bars_path, 10)
        print(f"1-day 1m bars (2 M trades), 1 client:    {percentiles(bars)}")

        half = day + int(17.75 * 3600) * NS_PER_SECOND  # the second half of the session: ~1 M rows
        arrow_path = (
            f"/api/v1/ticks/historical?symbols=SPY&start_time={half}"
            f"&end_time={day + DAY}&format=arrow"
        )
        times, rows = [], 0
        for _ in range(3):
            t = time.perf_counter()
            response = await client.get(arrow_path)
            times.append(time.perf_counter() - t)
            rows = pa.ipc.open_stream(response.content).read_all().num_rows
        print(
            f"Arrow download of {rows:,} rows:         best {min(times) * 1000:.0f} ms, "
            f"median {np.median(times) * 1000:.0f} ms ({rows / min(times) / 1e6:.2f} M rows/s)"
        )

    lat, rps = await concurrent(port, headers, realtime, clients, requests)
    print(f"realtime, {clients} concurrent clients:     {percentiles(lat)}  {rps:,.0f} req/s")
    flat, frps = await concurrent(port, headers, "/api/v1/health", clients, requests)
    print(f"floor,    {clients} concurrent clients:     {percentiles(flat)}  {frps:,.0f} req/s")


def _loop():  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument(
        "--rate", type=int, default=50_000, help="simulator events/s while measuring"
    )
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tickpipe-api-bench-"))
    token, day = prepare(data)
    port = 18877
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")}
    env |= {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR_RATE": str(args.rate),
        "TICKPIPE_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "data-pipeline.py"), "--port", str(port)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=1).json().get("ready"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        time.sleep(3)  # let ingest reach its steady rate
        status = httpx.get(f"{base}/api/v1/status").json()
        print(f"server ingesting: {status['accepted_total']:,} events accepted so far")
        with asyncio.Runner(loop_factory=_loop()) as runner:
            runner.run(measure(base, port, token, day, args.requests, args.clients))
        status2 = httpx.get(f"{base}/api/v1/status").json()
        rate = (status2["accepted_total"] - status["accepted_total"]) / (
            status2["uptime_s"] - status["uptime_s"]
        )
        print(f"ingest rate during the run: {rate:,.0f} events/s")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
