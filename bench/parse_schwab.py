"""Schwab: level-one decode throughput, and frame-at-the-fake -> readable on the realtime API.

1. Decode: realistic LEVELONE_EQUITIES delta frames (20 items each: quote changes and
   trades, 2-5 fields per item) through ``StreamParser.parse`` (JSON, merge, trade
   derivation, Arrow batches), beside ``orjson.loads`` of the same frames alone (the floor
   every decoder pays). Target: >= 200 k field-updates/s.
2. Latency: ``data-pipeline.py`` as a process, streaming from the local fake Schwab (in
   this process); per sample the fake sends a trade and a keep-alive client polls
   ``/api/v1/ticks/realtime`` until it shows it. Beside it, the same route's own latency
   when nothing changes (the floor). Target: p99 <= 5 ms.

    python bench/parse_schwab.py [--frames 20000] [--samples 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fake lives in tests/
from _util import RawHttp, percentiles

from tests.fakes.schwab import FakeSchwab, ms_now
from tickpipe.config import Settings
from tickpipe.sources.schwab.parse import StreamParser
from tickpipe.store.keystore import KeyStore

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = [f"S{i:03d}" for i in range(200)]
ITEMS_PER_FRAME = 20


def frames(n: int, seed: int = 3) -> tuple[list[bytes], list[bytes]]:
    """A snapshot per symbol, then ``n`` delta frames of quote moves (60 %) and trades."""
    rng = random.Random(seed)
    now = 1_765_000_000_000
    state = {
        s: {
            "1": 100.0,
            "2": 100.02,
            "3": 100.01,
            "4": 3,
            "5": 4,
            "8": 1000,
            "9": 100,
            "34": now,
            "35": now,
            "41": "XNAS",
        }
        for s in SYMBOLS
    }

    def frame(content: list[dict[str, object]], ts: int) -> bytes:
        entry = {
            "service": "LEVELONE_EQUITIES",
            "timestamp": ts,
            "command": "SUBS",
            "content": content,
        }
        return orjson.dumps({"data": [entry]})

    snapshots = [
        frame([{"key": s, "delayed": False, **state[s]} for s in SYMBOLS[i : i + 50]], now)
        for i in range(0, len(SYMBOLS), 50)
    ]
    deltas = []
    for f in range(n):
        ts = now + f
        content: list[dict[str, object]] = []
        for symbol in rng.sample(SYMBOLS, ITEMS_PER_FRAME):
            values = state[symbol]
            item: dict[str, object] = {"key": symbol}
            if rng.random() < 0.6:
                for field in rng.sample(["1", "2", "4", "5"], rng.randint(1, 3)):
                    step = 0.01 if field in ("1", "2") else 1
                    values[field] = round(values[field] + rng.choice((-1, 1)) * step, 2)  # type: ignore[operator]
                    item[field] = values[field]
                item["34"] = ts
            else:
                size = rng.randint(1, 500)
                values["8"] += size  # type: ignore[operator]
                item["8"] = values["8"]
                if rng.random() < 0.5:  # a same-price trade: volume (and size, time) only
                    values["3"] = round(values["3"] + rng.choice((-1, 1)) * 0.01, 2)  # type: ignore[operator]
                    item["3"] = values["3"]
                item["9"], item["35"] = size, ts
            content.append(item)
        deltas.append(frame(content, ts))
    return snapshots, deltas


def decode(n: int, repeats: int) -> None:
    snapshots, deltas = frames(n)
    parse_s, json_s, per_frame = [], [], []
    updates = events = 0
    for _ in range(repeats):
        parser = StreamParser()
        for snap in snapshots:
            parser.parse(snap, 0)
        updates = events = 0
        started = time.perf_counter()
        for raw in deltas:
            t = time.perf_counter()
            decoded = parser.parse(raw, 0)
            per_frame.append(time.perf_counter() - t)
            updates += decoded.field_updates
            events += sum(b.num_rows for b in decoded.batches.values())
        parse_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        for raw in deltas:
            orjson.loads(raw)
        json_s.append(time.perf_counter() - started)
    best, floor = min(parse_s), min(json_s)
    per_update = np.median(per_frame) / (updates / n)
    print(
        f"decode: {n:,} frames x {ITEMS_PER_FRAME} items, {updates:,} field updates, "
        f"{events:,} events, best of {repeats} runs"
    )
    print(
        f"  StreamParser.parse  {best * 1000:8.1f} ms  {updates / best / 1e3:8.0f} k field-updates/s"
        f"  {events / best / 1e3:6.0f} k events/s"
    )
    print(
        f"  orjson.loads alone  {floor * 1000:8.1f} ms  {updates / floor / 1e3:8.0f} k field-updates/s"
    )
    print(f"  parse / orjson = {best / floor:.1f}x;  per frame: {percentiles(per_frame)}")
    print(
        f"  at the median frame: {1 / per_update / 1e3:.0f} k field-updates/s "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: others share them)"
    )


async def poll_until(conn: RawHttp, path: str, price: float, deadline: float) -> None:
    needle = f'"price":{price}'.encode()
    while time.perf_counter() < deadline:
        status, body = await conn.get(path)
        if status == 200 and needle in body:
            return
    raise TimeoutError(f"trade at {price} never showed on the realtime route")


async def latency(fake: FakeSchwab, port: int, token: str, samples: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    path = "/api/v1/ticks/realtime?symbols=SPY&types=trade&limit=1"
    conn = RawHttp("127.0.0.1", port, headers)
    await conn.connect()
    volume = 10_000
    for _ in range(50):  # warm-up of the route
        await conn.get(path)
    seen, floor = [], []
    for i in range(samples):
        price = round(600 + (i + 1) * 0.01, 2)
        volume += 100
        fields = {"3": price, "8": volume, "9": 100, "35": ms_now()}
        started = time.perf_counter()
        fake.call(fake.update("LEVELONE_EQUITIES", "SPY", fields))
        await poll_until(conn, path, price, started + 5)
        seen.append(time.perf_counter() - started)
        t = time.perf_counter()
        await conn.get(path)  # the same route when nothing changed: the floor
        floor.append(time.perf_counter() - t)
    await conn.close()
    print(f"frame at the fake -> readable on /api/v1/ticks/realtime ({samples} trades):")
    print(f"  fake -> API   {percentiles(seen)}")
    print(f"  route floor   {percentiles(floor)}")
    print(f"  p50 ratio = {np.median(seen) / np.median(floor):.1f}x the route alone")


def pipeline(samples: int, fsync: bool) -> None:
    data = Path(tempfile.mkdtemp(prefix="tickpipe-schwab-bench-"))
    token, _ = KeyStore(Settings(_env_file=None, data_dir=data).keys_path).create(  # type: ignore[call-arg]
        "bench", ["read"], 100_000
    )
    fake = FakeSchwab(heartbeat_s=1.0)
    with fake.in_thread():
        now = ms_now()
        snapshot = {
            "1": 599.99,
            "2": 600.01,
            "3": 600.0,
            "4": 3,
            "5": 4,
            "8": 10_000,
            "34": now,
            "35": now,
        }
        fake.call(fake.update("LEVELONE_EQUITIES", "SPY", snapshot))
        port = 18879
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKPIPE_", "SCHWAB_"))}
        env |= fake.settings_env() | {
            "TICKPIPE_DATA_DIR": str(data),
            "TICKPIPE_SIMULATOR": "false",
            "TICKPIPE_LOG_LEVEL": "WARNING",
            "TICKPIPE_JOURNAL_FSYNC": "true" if fsync else "false",
            "SCHWAB_SYMBOLS": "SPY",
            "SCHWAB_ENV_FILE": str(data / ".env"),
        }
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "data-pipeline.py"), "--port", str(port)], env=env, cwd=data
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    status = httpx.get(f"{base}/api/v1/status", timeout=1).json()
                    if any(s["phase"] == "streaming" for s in status.get("sources", [])):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.1)
            print(f"journal fsync {'on' if fsync else 'off'}:")
            asyncio.run(latency(fake, port, token, samples))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    decode(args.frames, args.repeats)
    for fsync in (True, False):
        pipeline(args.samples, fsync)


if __name__ == "__main__":
    main()
