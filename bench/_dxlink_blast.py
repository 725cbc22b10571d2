"""The DXLink fake in a process of its own, sending Quote frames at a set rate.

Run by ``bench/ingest.py --mode feed``: it prints the fake's REST address, waits for the
pipeline's tastytrade source to connect and subscribe, then sends ``--rate`` FEED_DATA
frames a second of ``--per-frame`` quotes (COMPACT, the field order the client asked
for) for ``--seconds``, paced per millisecond. Each frame's quotes carry the frame number
in ``askSize`` and its send time is written to ``--out`` (int64 ns, CLOCK_REALTIME, which
both processes read), so the other side can tell each frame's send-to-visible delay. A
process of its own, so the sender never competes with the pipeline for the GIL.

    python bench/_dxlink_blast.py --rate 5000 --seconds 5 --per-frame 10 --out sent.npy
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fakes.dxlink import FakeTastytrade

SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "AMZN", "META", "TSLA", "GOOGL")


def frame(fields: list[str], channel: int, number: int, per_frame: int, now_ms: int) -> str:
    values: list[Any] = []
    for i in range(per_frame):
        k = number * per_frame + i
        bid = 100.0 + (k % 11) / 100  # a narrow band: no outlier
        event = {
            "eventType": "Quote",
            "eventSymbol": SYMBOLS[k % len(SYMBOLS)],
            "eventTime": 0,
            "sequence": 0,
            "timeNanoPart": 0,
            "bidTime": now_ms,
            "bidExchangeCode": "Q",
            "bidPrice": bid,
            "bidSize": 100.0,
            "askTime": now_ms,
            "askExchangeCode": "Q",
            "askPrice": bid + 0.01,
            "askSize": float(number),
        }
        values += [event.get(name, 0) for name in fields]
    return orjson.dumps(
        {"type": "FEED_DATA", "channel": channel, "data": ["Quote", values]}
    ).decode()


async def blast(rate: float, seconds: float, per_frame: int, out: Path) -> None:
    async with FakeTastytrade() as fake:
        print(fake.rest_url, flush=True)
        await fake.until(
            lambda: (
                bool(fake.connections) and len(fake.connections[-1].subscriptions) >= len(SYMBOLS)
            ),
            timeout=120,
        )
        conn = fake.connections[-1]
        while conn.feed_channel is None:
            await asyncio.sleep(0.01)
        fields = fake._fields(conn, "Quote")
        total = int(rate * seconds)
        sent = np.zeros(total, np.int64)
        started = time.perf_counter()
        number = 0
        while number < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while number < due:
                now = time.time_ns()
                text = frame(fields, conn.feed_channel, number, per_frame, now // 1_000_000)
                sent[number] = now
                await conn.ws.send(text)
                number += 1
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
        np.save(out, sent)
        print(f"sent {total} {elapsed:.6f}", flush=True)
        await asyncio.sleep(3600)  # the other side stops this process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--per-frame", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(blast(args.rate, args.seconds, args.per_frame, args.out))


if __name__ == "__main__":
    main()
