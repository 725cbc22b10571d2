"""DXLink COMPACT decode throughput, and frame -> realtime API latency through the pipeline.

1. Decode: FEED_DATA frames of N events (Quote in tastytrade's 12-field order over 500
   symbols; TimeAndSale; option Quote+Greeks merged into OptionQuote), timed as
   ``orjson.loads`` alone (the floor) and ``orjson.loads`` + ``Decoder.feed_data`` (ours).
2. Latency: the local DXLink fake, a pipeline running the tastytrade source and the API
   on a loopback port, all in this process. Each sample: the fake sends one Quote frame;
   the clock stops when ``GET /api/v1/ticks/realtime`` returns it. The floor is the same
   route after ``pipeline.ingest`` of an already-decoded batch (no websocket, no decoding).

    python bench/parse_dxlink.py [--frames 2000] [--samples 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the local fake lives in tests/
from _util import RawHttp, percentiles

from tests.fakes.dxlink import FakeTastytrade
from tickpipe.api.app import create_app
from tickpipe.cli import _Server
from tickpipe.clock import SystemClock
from tickpipe.columnar import Grouped
from tickpipe.config import Settings
from tickpipe.events import Kind, Quote, to_batch
from tickpipe.pipeline import Pipeline, api_context
from tickpipe.sources.tastytrade import build
from tickpipe.sources.tastytrade.decoder import Decoder
from tickpipe.sources.tastytrade.parse import REQUESTED_FIELDS

SYMBOLS = [f"S{i:03d}" for i in range(500)]


def quote_frames(frames: int, per_frame: int) -> list[bytes]:
    out = []
    t = time.time_ns() // 1_000_000
    for f in range(frames):
        values: list[Any] = []
        for i in range(per_frame):
            k = f * per_frame + i
            bid = 100 + (k % 997) / 100
            values += [SYMBOLS[k % len(SYMBOLS)], t, k, 0, t, "Q", t, "Q", bid, bid + 0.01,
                       "NaN" if k % 50 == 0 else 100.0, 2.5E2]  # fmt: skip
        out.append(orjson.dumps({"type": "FEED_DATA", "channel": 3, "data": ["Quote", values]}))
    return out


def tape_frames(frames: int, per_frame: int) -> list[bytes]:
    fields = REQUESTED_FIELDS["TimeAndSale"]
    out = []
    t = time.time_ns() // 1_000_000
    for f in range(frames):
        values: list[Any] = []
        for i in range(per_frame):
            k = f * per_frame + i
            row = {"eventSymbol": SYMBOLS[k % 50], "time": t + k, "index": (t + k) << 22,
                   "price": 100 + (k % 97) / 100, "size": 100.0, "exchangeCode": "Q",
                   "aggressorSide": "BUY" if k % 2 else "SELL", "type": "NEW", "eventFlags": 0}  # fmt: skip
            values += [row.get(name, 0) for name in fields]
        out.append(
            orjson.dumps({"type": "FEED_DATA", "channel": 3, "data": ["TimeAndSale", values]})
        )
    return out


def option_frames(frames: int, per_frame: int) -> list[bytes]:
    contracts = [f".SPY261218{'CP'[i % 2]}{500 + i // 2}" for i in range(2000)]
    out = []
    for f in range(frames):
        quotes: list[Any] = []
        greeks: list[Any] = []
        for i in range(per_frame // 2):
            c = contracts[(f * per_frame + i) % len(contracts)]
            quotes += [c, 0, 0, 0, 0, "", 0, "", 1.0 + i % 7, 1.2 + i % 7, 10.0, 12.0]
            greeks += [c, 0, 0, 1, 0, 0, 1.1, 0.2, 0.5, 0.01, -0.1, 0.05, 0.2]
        out.append(orjson.dumps({"data": ["Quote", quotes, "Greeks", greeks]}))
    return out


def decode_bench(name: str, frames: list[bytes], per_frame: int, setup: Any = None) -> None:
    floor, ours, per = [], [], []
    for _ in range(3):
        decoder = Decoder()
        if setup is not None:
            setup(decoder)
        t0 = time.perf_counter()
        for frame in frames:
            orjson.loads(frame)
        floor.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for frame in frames:
            t = time.perf_counter()
            decoder.feed_data(orjson.loads(frame)["data"], time.time_ns())
            per.append(time.perf_counter() - t)
        ours.append(time.perf_counter() - t0)
    events = len(frames) * per_frame
    f, o = min(floor), min(ours)
    print(
        f"{name:<28} {events / o / 1e3:8.0f} k ev/s   (orjson.loads alone {events / f / 1e3:8.0f} k "
        f"ev/s, ours/floor {o / f:5.1f}x)   per frame: {percentiles(per)}"
    )


def with_summary(decoder: Decoder) -> None:
    """Open interest known for every contract, so option rows come out."""
    contracts = [f".SPY261218{'CP'[i % 2]}{500 + i // 2}" for i in range(2000)]
    decoder.fields.configure({"eventFields": {"Summary": ["eventSymbol", "openInterest"]}})
    decoder.feed_data(["Summary", [v for c in contracts for v in (c, 100.0)]], time.time_ns())


class Seen:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.want: float | None = None

    async def __call__(self, kind: Kind, grouped: Grouped) -> None:
        if kind is Kind.QUOTE and self.want in grouped.batch.column("bid").to_pylist():
            self.event.set()


async def latency_bench(samples: int, fsync: bool = True) -> None:
    data = Path(tempfile.mkdtemp()) / "data"
    port = _free_port()
    async with FakeTastytrade() as fake:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=data,
            simulator="false",
            tastytrade_enabled=True,
            tastytrade_client_secret=SecretStr(fake.client_secret),
            tastytrade_refresh_token=SecretStr(fake.refresh_token),
            tastytrade_api_base_url=fake.rest_url,
            tastytrade_symbols=["SPY"],
            journal_fsync=fsync,
        )
        pipeline = Pipeline(settings, sources=build(settings, SystemClock()))
        seen = Seen()
        pipeline.hub.add_listener("bench", seen)
        ctx = api_context(pipeline)
        stop = asyncio.Event()
        running = asyncio.create_task(pipeline.run(stop))
        await pipeline.ready.wait()
        token, _ = ctx.keys.create("bench", ["read"], 100_000)
        server = _Server(
            uvicorn.Config(create_app(ctx), port=port, log_level="warning", lifespan="off")
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"
        await fake.until(lambda: bool(fake.connections) and bool(fake.connections[0].subscriptions))
        http = RawHttp("127.0.0.1", port, {"Authorization": f"Bearer {token}"})
        await http.connect()
        path = "/api/v1/ticks/realtime?symbols=SPY&types=quote&limit=1"

        async def until_served(bid: float, started: float) -> float:
            await seen.event.wait()
            while True:
                status, body = await http.get(path)
                if status == 200 and orjson.loads(body)["data"][0]["bid"] == bid:
                    return time.perf_counter() - started

        ours, floor = [], []
        for i in range(samples):
            bid = 500 + i / 100
            seen.want, seen.event = bid, asyncio.Event()
            started = time.perf_counter()
            fake.publish("Quote", "SPY", bidPrice=bid, askPrice=bid + 0.02, bidSize=1, askSize=1,
                         bidTime=time.time_ns() // 1_000_000)  # fmt: skip
            ours.append(await until_served(bid, started))
        for i in range(samples):
            bid = 500 + (samples + i) / 100  # a steady walk: no outlier for the quality stage
            seen.want, seen.event = bid, asyncio.Event()
            now = time.time_ns()
            batch = to_batch(
                Kind.QUOTE, [Quote(now, now, "SPY", bid, 1, bid + 0.02, 1, "tastytrade", 10**6 + i)]
            )
            started = time.perf_counter()
            await pipeline.ingest("tastytrade", {Kind.QUOTE: batch})
            floor.append(await until_served(bid, started))
        await http.close()
        server.should_exit = True
        await serving
        stop.set()
        await running
    what = "journal fsync" if fsync else "journal without fsync"
    print(f"frame -> realtime API (websocket, decode, quality, {what}, hot store, HTTP)")
    print(f"  ours : {percentiles(ours)}")
    print(f"  floor: {percentiles(floor)}   (pipeline.ingest of a decoded batch, same route)")
    print(
        f"  p99 ratio ours/floor {_p(ours, 99) / _p(floor, 99):.2f}x, p50 ratio {_p(ours, 50) / _p(floor, 50):.2f}x"
    )


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--no-fsync", action="store_true", help="latency without journal fsync")
    args = parser.parse_args()
    print("COMPACT FEED_DATA decode (best of 3 passes)")
    for per_frame in (10, 100, 1000):
        frames = quote_frames(max(args.frames * 100 // per_frame, 20), per_frame)
        decode_bench(f"Quote, {per_frame:>4} per frame", frames, per_frame)
    decode_bench("TimeAndSale, 100 per frame", tape_frames(args.frames, 100), 100)
    decode_bench("option Quote+Greeks, 100", option_frames(args.frames, 100), 100, with_summary)
    asyncio.run(latency_bench(args.samples, fsync=not args.no_fsync))


if __name__ == "__main__":
    main()
