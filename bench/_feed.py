"""A real feed at a set frame rate: the DXLink fake (another process) -> the tastytrade
source -> the pipeline, with each frame's send-to-visible delay.

"Visible" is when a hub listener receives the frame's quotes: the moment the hot store,
the bus and WebSocket readers are offered them (they are sinks like it). The sender
records each frame's send time; the listener records when each frame number (carried in
``askSize``) is first seen; both read CLOCK_REALTIME.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

from tickpipe.clock import SystemClock
from tickpipe.columnar import Grouped
from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.pipeline import Pipeline
from tickpipe.sources.tastytrade import build

HERE = Path(__file__).resolve().parent
SYMBOLS = ["SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "AMZN", "META", "TSLA", "GOOGL"]


class Visible:
    """A hub listener: when each frame number was first offered to the sinks."""

    def __init__(self, frames: int) -> None:
        self.at = np.zeros(frames, np.int64)
        self.decoded = np.zeros(frames, np.int64)
        self.seen = 0
        self.all_seen = asyncio.Event()

    async def __call__(self, kind: Kind, grouped: Grouped) -> None:
        if kind is not Kind.QUOTE:
            return
        now = time.time_ns()
        all_numbers = grouped.batch.column("ask_size").to_numpy().astype(np.int64)
        numbers, first = np.unique(all_numbers, return_index=True)
        ok = (numbers >= 0) & (numbers < self.at.size)
        numbers, first = numbers[ok], first[ok]
        new = self.at[numbers] == 0
        fresh = numbers[new]
        self.at[fresh] = now
        self.decoded[fresh] = grouped.batch.column("ts_recv").to_numpy()[first[new]]
        self.seen += fresh.size
        if self.seen == self.at.size:
            self.all_seen.set()


async def run_at(
    rate: float, seconds: float, per_frame: int, redis_url: str | None = None
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tickpipe-feed-"))
    sent_file = work / "sent.npy"
    frames = int(rate * seconds)
    sender = subprocess.Popen(
        [
            *(sys.executable, str(HERE / "_dxlink_blast.py"), "--rate", str(rate)),
            *("--seconds", str(seconds), "--per-frame", str(per_frame), "--out", str(sent_file)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sender.stdout is not None
        rest = (await asyncio.to_thread(sender.stdout.readline)).strip()
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=work / "data",
            redis_url=redis_url,
            simulator="false",
            tastytrade_enabled=True,
            tastytrade_client_secret=SecretStr("test-secret"),
            tastytrade_refresh_token=SecretStr("test-refresh"),
            tastytrade_api_base_url=rest,
            tastytrade_symbols=SYMBOLS,
        )
        pipeline = Pipeline(settings, sources=build(settings, SystemClock()))
        visible = Visible(frames)
        pipeline.hub.add_listener("bench", visible)
        stop = asyncio.Event()
        running = asyncio.create_task(pipeline.run(stop))
        done = (await asyncio.to_thread(sender.stdout.readline)).split()
        send_s = float(done[2])
        try:
            async with asyncio.timeout(30):
                await visible.all_seen.wait()
        except TimeoutError:
            pass
        status = pipeline.status()
        stop.set()
        await running
    finally:
        sender.kill()
        sender.wait()
    sent = np.load(sent_file)
    seen = visible.at > 0
    delay_ms = (visible.at[seen] - sent[seen]) / 1e6
    to_decode_ms = (visible.decoded[seen] - sent[seen]) / 1e6
    source = next(s for s in status["sources"] if s["name"] == "tastytrade")
    p50, p99 = np.percentile(delay_ms, [50, 99]) if delay_ms.size else (np.nan, np.nan)
    return {
        "rate": rate,
        "sent_per_s": frames / send_s,
        "frames": frames,
        "seen": int(seen.sum()),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": float(delay_ms.max()) if delay_ms.size else float("nan"),
        "to_decode_p50_ms": float(np.median(to_decode_ms)) if delay_ms.size else float("nan"),
        "to_decode_p99_ms": float(np.percentile(to_decode_ms, 99))
        if delay_ms.size
        else float("nan"),
        "backlog_max_bytes": source["backlog_max_bytes"],
        "behind_episodes": source["behind_episodes"],
        "ticks": pipeline.intake.ticks,
        "deliveries_per_tick": pipeline.intake.deliveries / max(pipeline.intake.ticks, 1),
    }
