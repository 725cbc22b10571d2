"""gexbot decoding: a full SPX classic chain (600 strikes) to GexLevels columns, against a
floor of orjson decoding the same bodies alone, measured in the same process.

    python bench/gexbot.py [--frames 2000] [--strikes 600]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import percentiles

from tickpipe.sources.gexbot.endpoints import View
from tickpipe.sources.gexbot.parse import Row, decode, levels_batch


def body(ts: int, strikes: int) -> bytes:
    """A classic chain in gexbot's shape: rows [strike, gex_vol, gex_oi, [5 priors]]."""
    spot = 7138.55 + math.sin(ts) * 3
    lo = round(spot / 5) * 5 - 5 * (strikes // 2)
    rows = []
    for i in range(strikes):
        strike = lo + 5 * i
        x = (strike - spot) / spot * 40
        oi = round(500 * math.tanh(x) * math.exp(-x * x / 10), 2)
        rows.append(
            [strike, round(0.7 * oi, 2), oi, [round(oi * (1 - k / 100), 2) for k in range(5)]]
        )
    return orjson.dumps(
        {
            "timestamp": ts,
            "ticker": "SPX",
            "min_dte": 0,
            "sec_min_dte": 1,
            "spot": round(spot, 2),
            "zero_gamma": round(spot * 0.998, 2),
            "major_pos_vol": lo + 5 * (strikes // 2 + 10),
            "major_pos_oi": lo + 5 * (strikes // 2 + 12),
            "major_neg_vol": lo + 5 * (strikes // 2 - 10),
            "major_neg_oi": lo + 5 * (strikes // 2 - 12),
            "strikes": rows,
            "sum_gex_vol": 1712585.519,
            "sum_gex_oi": 51521.105,
            "delta_risk_reversal": 0.118,
            "max_priors": [[7135, 1145886.722]] * 6,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--strikes", type=int, default=600)
    args = parser.parse_args()
    frames = [body(1_777_492_800 + i, args.strikes) for i in range(args.frames)]
    size = sum(len(f) for f in frames) / len(frames)

    for f in frames[:50]:  # warm up both paths
        orjson.loads(f)
        decode(f, View.CHAIN, ticker="SPX", unit_usd=1e6)

    floor, ours, batch = [], [], []
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        orjson.loads(f)
        t1 = time.perf_counter()
        levels = decode(f, View.CHAIN, ticker="SPX", unit_usd=1e6)
        t2 = time.perf_counter()
        levels_batch([Row("$SPX", "full", i + 1, 0, levels)])
        t3 = time.perf_counter()
        floor.append(t1 - t0)
        ours.append(t2 - t1)
        batch.append(t3 - t1)

    print(f"{len(frames)} SPX chains, {args.strikes} strikes, {size / 1024:.1f} kB each")
    print(f"  orjson.loads alone (floor)    {percentiles(floor)}")
    print(f"  decode (parse + checks)       {percentiles(ours)}")
    print(f"  decode + GexLevels batch      {percentiles(batch)}")
    for name, samples in (("floor", floor), ("decode", ours), ("decode+batch", batch)):
        print(f"  {name:>13}: {len(samples) / sum(samples):,.0f} frames/s")
    print(
        f"  decode / floor: {sum(ours) / sum(floor):.2f}x   decode+batch / floor: "
        f"{sum(batch) / sum(floor):.2f}x"
    )
    print("  at gexbot's limit of 1 request/s per ticker and category, one frame a second")
    print(f"  costs {sum(batch) / len(batch) * 100:.3f} % of one core")


if __name__ == "__main__":
    main()
