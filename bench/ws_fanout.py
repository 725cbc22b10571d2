"""WebSocket fan-out: many clients on /api/v1/stream while the simulator ingests 50 k ev/s.

Starts ``data-pipeline.py`` (simulator at ``--rate`` events/s), then from this process:
  - baseline: one client for ``--seconds``, with /api/v1/health polled beside it;
  - load: ``--clients`` clients on the same subscription for ``--seconds``, same polling;
  - the same load with permessage-deflate (what a default websockets client asks for:
    the server then compresses every frame once per client);
  - the same with ``conflate=250`` (latest event per symbol and type, 4 frames/s).
Lag is the client's receive time minus the newest ``ts_recv`` in each frame (the time the
pipeline received the event), so it includes quality checks, the journal's fsync and the
fan-out. "Keeping up" means the lag does not grow: the median lag of the last 2 s is
printed beside the first 2 s'. Clients find ``ts_recv`` with ``str.rfind``, not a JSON
parse, so the load generator (on the other core) is not what limits the measurement.

    python bench/ws_fanout.py [--clients 200] [--rate 50000] [--seconds 15]
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
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import RawHttp, percentiles

from tickpipe.config import Settings
from tickpipe.store.keystore import KeyStore

ROOT = Path(__file__).resolve().parents[1]
MARK = b'"ts_recv":'


class Client:
    def __init__(self) -> None:
        self.lags: list[tuple[float, float]] = []  # (seconds since start, lag s)
        self.events = 0
        self.frames = 0
        self.closed: str | None = None


async def client(
    url: str, token: str, stop: asyncio.Event, t0: float, into: Client, deflate: bool
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(
        url,
        additional_headers=headers,
        max_size=None,
        max_queue=64,
        compression="deflate" if deflate else None,
    ) as ws:
        await ws.recv()  # subscribed
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(ws.recv(decode=False), 0.5)
            except TimeoutError:
                continue
            except websockets.ConnectionClosed as exc:
                into.closed = f"{exc.rcvd.code if exc.rcvd else '?'}"
                return
            now = time.time_ns()
            assert isinstance(message, bytes)
            at = message.rfind(MARK)
            if at < 0:
                if b'"slow_consumer"' in message:
                    into.closed = "slow_consumer"
                    return
                continue
            end = message.find(b",", at)
            ts_recv = int(message[at + len(MARK) : end])
            into.lags.append((time.monotonic() - t0, (now - ts_recv) / 1e9))
            into.events += message.count(b'"type":')
            into.frames += 1


async def poll_health(port: int, stop: asyncio.Event, into: list[float]) -> None:
    conn = RawHttp("127.0.0.1", port, {})
    await conn.connect()
    while not stop.is_set():
        t = time.perf_counter()
        status, _ = await conn.get("/api/v1/health")
        into.append(time.perf_counter() - t)
        assert status == 200
        await asyncio.sleep(0.05)
    await conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def phase(
    label: str,
    port: int,
    token: str,
    query: str,
    n: int,
    seconds: float,
    pid: int,
    deflate: bool,
) -> dict[str, float]:
    url = f"ws://127.0.0.1:{port}/api/v1/stream?{query}"
    stop = asyncio.Event()
    t0 = time.monotonic()
    clients = [Client() for _ in range(n)]
    health: list[float] = []
    cpu0 = cpu_seconds(pid)
    own0 = time.process_time()
    tasks = [asyncio.create_task(client(url, token, stop, t0, c, deflate)) for c in clients]
    poller = asyncio.create_task(poll_health(port, stop, health))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks, poller)
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(pid) - cpu0) / elapsed
    own = (time.process_time() - own0) / elapsed
    lags = [lag for c in clients for _, lag in c.lags]
    early = [lag for c in clients for at, lag in c.lags if 1 <= at < 3]
    late = [lag for c in clients for at, lag in c.lags if at >= seconds - 2]
    events = sum(c.events for c in clients)
    frames = sum(c.frames for c in clients)
    closed = [c.closed for c in clients if c.closed]
    print(
        f"--- {label}: {n} client(s), {query.split('&token')[0]}, "
        f"permessage-deflate {'on' if deflate else 'off'}"
    )
    if not lags:
        print("  no frames received")
        return {"lag_p50": float("nan"), "health_p50": float(np.median(health))}
    print(f"  lag (receive - ts_recv):  {percentiles(lags)}")
    print(
        f"  lag drift: median {np.median(early) * 1000:.1f} ms at 1-3 s -> "
        f"{np.median(late) * 1000:.1f} ms in the last 2 s"
        if early and late
        else "  lag drift: not enough frames"
    )
    print(
        f"  delivered {events / elapsed:,.0f} events/s in {frames / elapsed:,.0f} frames/s "
        f"({events / elapsed / n:,.0f} events/s per client); closed early: {len(closed)} {sorted(set(closed))}"
    )
    print(f"  /api/v1/health meanwhile: {percentiles(health)}")
    print(
        f"  server process: {cpu * 100:.0f} % of a core, RSS {rss_mb(pid):.0f} MB; "
        f"these clients: {own * 100:.0f} % of a core"
    )
    return {
        "lag_p50": float(np.median(lags)) if lags else float("nan"),
        "health_p50": float(np.median(health)),
    }


async def measure(port: int, token: str, args: argparse.Namespace, pid: int) -> None:
    full = f"symbols={args.symbols}&types={args.types}&token={token}"
    n, seconds = args.clients, args.seconds
    base = await phase("baseline", port, token, full, 1, seconds, pid, deflate=False)
    load = await phase("load", port, token, full, n, seconds, pid, deflate=False)
    print(
        f"=> {n} clients vs 1: lag p50 x{load['lag_p50'] / base['lag_p50']:.2f}, "
        f"/health p50 x{load['health_p50'] / base['health_p50']:.2f}"
    )
    await phase("load, compressed", port, token, full, n, seconds, pid, deflate=True)
    conflated = f"symbols=SPY,QQQ,/ES,/NQ,$VIX&types=trade,quote&conflate=250&token={token}"
    await phase("conflated, compressed", port, token, conflated, n, seconds, pid, deflate=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=int, default=50_000, help="simulator events/s")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--symbols", default="SPY")
    parser.add_argument("--types", default="trade")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tickpipe-ws-bench-"))
    settings = Settings(_env_file=None, data_dir=data)  # type: ignore[call-arg]
    token, _ = KeyStore(settings.keys_path).create("bench", ["read", "stream"], 1_000_000)
    port = 18878
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")}
    env |= {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR_RATE": str(args.rate),
        "TICKPIPE_SIMULATOR_SILENCE_SHARE": "0",  # a symbol gone quiet would starve a phase
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
        before = httpx.get(f"{base}/api/v1/status").json()
        with asyncio.Runner(loop_factory=_loop()) as runner:
            runner.run(measure(port, token, args, server.pid))
        after = httpx.get(f"{base}/api/v1/status").json()
        rate = (after["accepted_total"] - before["accepted_total"]) / (
            after["uptime_s"] - before["uptime_s"]
        )
        print(f"ingest rate during the run: {rate:,.0f} events/s")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def _loop():  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
