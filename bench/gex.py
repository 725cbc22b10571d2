"""GEX: full recompute of a 15 k-contract SPX-size chain, cached serving over HTTP at 100
concurrent clients, and the cache hit rate while option updates stream in.

    python bench/gex.py [--requests 5000] [--clients 100]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import RawHttp, percentiles

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.columnar import group_by_symbol
from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.gex.engine import GexEngine
from tickpipe.gex.exposure import compute_all
from tickpipe.sources.simulator import Simulator
from tickpipe.store.keystore import KeyStore

ROOT = Path(__file__).resolve().parents[1]
SPX_ENV = {
    "TICKPIPE_SIMULATOR_SYMBOLS": "$SPX",
    "TICKPIPE_SIMULATOR_OPTION_UNDERLYING": "$SPX",
    "TICKPIPE_SIMULATOR_OPTION_STRIKES": "601",
    "TICKPIPE_SIMULATOR_OPTION_EXPIRIES": "12",
}


def in_process(runs: int) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        simulator_symbols=["$SPX"],
        simulator_option_underlying="$SPX",
        simulator_option_strikes=601,
        simulator_option_expiries=12,
        simulator_seed=1,
        simulator_bad_share=0,
    )
    clock = SystemClock()
    sim = Simulator(
        settings.model_copy(update={"simulator_start_ns": clock.now_ns() - 600 * NS_PER_SECOND}),
        clock,
    )
    engine = GexEngine(settings, clock)
    total = len(sim._chain.symbols) if sim._chain else 0
    loop = asyncio.new_event_loop()
    while not engine.books or engine.books["$SPX"].size < total:
        for kind, batch in sim.step(400_000, NS_PER_SECOND).items():
            if kind in (Kind.OPTION, Kind.QUOTE):
                loop.run_until_complete(engine.accept(kind, group_by_symbol(batch)))
    book = engine.books["$SPX"]
    spot = engine.spots["$SPX"][0]
    chain = book.snapshot(spot, clock.now_ns(), engine.params)
    compute_all(chain, engine.params)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        compute_all(chain, engine.params)
        samples.append(time.perf_counter() - t)
    print(
        f"chain: {book.size:,} contracts, {np.unique(chain.expiry_ns).size} expiries, spot {spot:.2f}"
    )
    print(f"compute_all (6 category x basis results):   {percentiles(samples)}")
    full = []
    for _ in range(runs):
        t = time.perf_counter()
        engine.recompute("$SPX")
        full.append(time.perf_counter() - t)
    print(f"full recompute (snapshot + compute + JSON): {percentiles(full)}")
    book._f["iv"][: book.size] = np.nan  # a feed without IV: solve every contract from its mid
    t = time.perf_counter()
    engine.recompute("$SPX")
    print(
        f"first recompute solving every IV from mid:  {(time.perf_counter() - t) * 1000:.1f} ms "
        "(solved IVs are cached until a contract's mid changes)"
    )


async def load(
    port: int, token: str, clients: int, total: int, path: str = "/api/v1/gex/$SPX"
) -> tuple[list[float], float, list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    conns = [RawHttp("127.0.0.1", port, headers) for _ in range(clients)]
    await asyncio.gather(*(c.connect() for c in conns))
    samples: list[float] = []
    ages: list[float] = []

    async def worker(conn: RawHttp) -> None:
        for i in range(total // clients):
            t = time.perf_counter()
            status, body = await conn.get(path)
            samples.append(time.perf_counter() - t)
            assert status == 200, body[:200]
            if i % 10 == 0 and body.startswith(b'{"chain_age_s"'):
                ages.append(float(body[15 : body.index(b",")]))  # {"chain_age_s":x,...

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    rps = len(samples) / (time.perf_counter() - started)
    await asyncio.gather(*(c.close() for c in conns))
    return samples, rps, ages


def over_http(requests: int, clients: int, rate: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="tickpipe-gex-bench-"))
    token, _ = KeyStore(Settings(_env_file=None, data_dir=data).keys_path).create(
        "b", ["read"], 10**9
    )  # type: ignore[call-arg]
    port = 18879
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")}
        | SPX_ENV
        | {
            "TICKPIPE_DATA_DIR": str(data),
            "TICKPIPE_SIMULATOR_RATE": str(rate),
            "TICKPIPE_LOG_LEVEL": "WARNING",
        }
    )
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "data-pipeline.py"), "--port", str(port)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = httpx.get(
                    f"{base}/api/v1/gex/$SPX",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=2,
                )
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        before = httpx.get(f"{base}/api/v1/status").json()
        samples, rps, ages = asyncio.run(load(port, token, clients, requests))
        after = httpx.get(f"{base}/api/v1/status").json()
        floor, floor_rps, _ = asyncio.run(load(port, token, clients, requests, "/api/v1/health"))
        g0, g1 = before["gex"], after["gex"]
        hits, misses = g1["cache_hits"] - g0["cache_hits"], g1["cache_misses"] - g0["cache_misses"]
        current = g1["cache_hits_current_version"] - g0["cache_hits_current_version"]
        updates = after["accepted"].get("option", 0) - before["accepted"].get("option", 0)
        seconds = after["uptime_s"] - before["uptime_s"]
        print(f"GET /api/v1/gex/$SPX, {clients} clients: {percentiles(samples)}  {rps:,.0f} req/s")
        print(
            f"floor: GET /api/v1/health, same load:  {percentiles(floor)}  {floor_rps:,.0f} req/s"
        )
        print(
            f"served from precomputed results: {hits:,} of {hits + misses:,} "
            f"({100 * hits / max(hits + misses, 1):.2f} %) while {updates / seconds:,.0f} option updates/s streamed in"
        )
        print(
            f"of those, computed from the chain version current at serve time: "
            f"{current:,} ({100 * current / max(hits, 1):.2f} %)"
        )
        print(
            f"recomputes during the run: {g1['recomputes'] - g0['recomputes']}, "
            f"last {g1['recompute_ms_last']:.1f} ms, max {g1['recompute_ms_max']:.1f} ms; "
            f"chain age at serve time: median {np.median(ages):.3f} s, max {max(ages):.3f} s"
        )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--rate", type=int, default=20_000, help="simulator events/s (10 % are option quotes)"
    )
    args = parser.parse_args()
    in_process(args.runs)
    over_http(args.requests, args.clients, args.rate)


if __name__ == "__main__":
    main()
