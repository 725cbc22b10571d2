"""The quality stage's cost per call, on the shapes live feeds and imports deliver.

Each case builds its deliveries first (clean data: a 0.01-tick random walk, seqs and
timestamps rising, so every event takes the hot path that accepts it), then for each
repeat runs a fresh ``QualityStage`` over them: the first calls warm up (and create the
per-symbol state), the rest are timed one by one with ``perf_counter_ns``. Printed per
case: µs per call (min / median / max over the repeats' medians), per-call percentiles
over every timed call, and events/s at the median call (the machine is shared: the mean
would mostly measure the neighbours).

- 1 trade (one symbol) and 1 quote (one symbol): a websocket delivering one event;
- 10 and 100 trades over 5 symbols, and 10 trades with 10 quotes: a busy feed's ~1 ms
  tick;
- one quote for each of 1,000 symbols in one call: a wide watch-list tick;
- 65,536 trades of one symbol: a bulk delivery; and a million trades with a million
  quotes of one symbol: what the ``.scid`` importer hands quality per call (one chunk).

``group_by_symbol`` is timed on its own for the 1-event and 1,000-symbol batches.

    python bench/quality.py [--repeat 5] [--only "1 trade"]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.columnar import group_by_symbol
from tickpipe.config import Settings
from tickpipe.events import SCHEMAS, Kind
from tickpipe.quality.stage import QualityStage

NOW = 1_795_000_000 * NS_PER_SECOND
START = NOW - 60 * NS_PER_SECOND
"""first event time: old enough that a whole case stays in the past"""
Delivery = dict[Kind, pa.RecordBatch]


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    calls: int
    """timed calls per repeat"""
    warmup: int
    build: Callable[[int], list[Delivery]]
    """deliveries for ``warmup + calls`` calls"""


def _columns(
    kind: Kind, symbols: np.ndarray, seq: np.ndarray, ts: np.ndarray, mid: np.ndarray
) -> pa.RecordBatch:
    n = symbols.size
    common = {
        "ts_event": pa.array(ts, pa.int64()),
        "ts_recv": pa.array(ts + 150_000, pa.int64()),
        "symbol": pa.array(symbols, pa.string()),
        "source": pa.array(["bench"] * n, pa.string()),
        "seq": pa.array(seq, pa.int64()),
    }
    if kind is Kind.TRADE:
        values = common | {"price": pa.array(mid), "size": pa.array(np.full(n, 100.0))}
    else:
        values = common | {
            "bid": pa.array(mid - 0.01),
            "bid_size": pa.array(np.full(n, 5.0)),
            "ask": pa.array(mid + 0.01),
            "ask_size": pa.array(np.full(n, 7.0)),
        }
    schema = SCHEMAS[kind]
    arrays = [values.get(f.name, pa.nulls(n, f.type)) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def deliveries(kind: Kind, calls: int, per_call: int, n_symbols: int) -> list[Delivery]:
    """``calls`` deliveries of ``per_call`` events, symbols taking turns, clean walks; a
    delivery with every symbol once lists them in a new random order each time, as a
    watch-list feed does."""
    rng = np.random.default_rng(7)
    total = calls * per_call
    names = np.array([f"S{i:04d}" for i in range(n_symbols)], dtype=object)
    code = np.arange(total) % n_symbols
    if per_call == n_symbols > 1:
        code = np.concatenate([rng.permutation(n_symbols) for _ in range(calls)])
    seq = np.zeros(total, np.int64)
    mid = np.zeros(total)
    for s in range(n_symbols):
        rows = np.flatnonzero(code == s)
        seq[rows] = np.arange(1, rows.size + 1)
        mid[rows] = 100.0 + s + np.round(np.cumsum(rng.integers(-1, 2, rows.size)) * 0.01, 2)
    ts = START + np.arange(total, dtype=np.int64) * 1_000
    out = []
    for c in range(calls):
        part = slice(c * per_call, (c + 1) * per_call)
        out.append({kind: _columns(kind, names[code[part]], seq[part], ts[part], mid[part])})
    return out


def both(calls: int, per_call: int, n_symbols: int) -> list[Delivery]:
    """Trades and quotes in each call: one tick of a source that sends both."""
    trades = deliveries(Kind.TRADE, calls, per_call, n_symbols)
    quotes = deliveries(Kind.QUOTE, calls, per_call, n_symbols)
    return [t | q for t, q in zip(trades, quotes, strict=True)]


CASES = [
    Case("1 trade, 1 symbol", 3000, 200, lambda n: deliveries(Kind.TRADE, n, 1, 1)),
    Case("1 quote, 1 symbol", 3000, 200, lambda n: deliveries(Kind.QUOTE, n, 1, 1)),
    Case("10 trades, 5 symbols", 2000, 100, lambda n: deliveries(Kind.TRADE, n, 10, 5)),
    Case("100 trades, 5 symbols", 1000, 50, lambda n: deliveries(Kind.TRADE, n, 100, 5)),
    Case("10 trades + 10 quotes, 5 symbols", 2000, 100, lambda n: both(n, 10, 5)),
    Case("1,000 symbols x 1 quote", 100, 5, lambda n: deliveries(Kind.QUOTE, n, 1000, 1000)),
    Case("65,536 trades, 1 symbol", 15, 2, lambda n: deliveries(Kind.TRADE, n, 65_536, 1)),
    Case("1 M trades + 1 M quotes, 1 symbol", 3, 1, lambda n: both(n, 1_000_000, 1)),
]


def run_case(case: Case, repeat: int, settings: Settings) -> None:
    work = case.build(case.warmup + case.calls)
    events = sum(b.num_rows for b in work[-1].values())
    medians: list[float] = []
    rates: list[float] = []
    samples: list[int] = []
    for _ in range(repeat):
        stage = QualityStage(settings, FakeClock(NOW))
        for delivery in work[: case.warmup]:
            stage.process("bench", delivery)
        timed = np.empty(case.calls, np.int64)
        for i, delivery in enumerate(work[case.warmup :]):
            t0 = time.perf_counter_ns()
            result = stage.process("bench", delivery)
            timed[i] = time.perf_counter_ns() - t0
            assert result.quarantine is None, "bench data must stay clean"
        medians.append(float(np.median(timed)) / 1000)
        rates.append(events / (float(np.median(timed)) / 1e9))
        samples.extend(timed.tolist())
    us = np.array(samples) / 1000
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    print(
        f"{case.name:<35} µs/call median of {repeat} repeats: min {min(medians):9.1f}  "
        f"median {float(np.median(medians)):9.1f}  max {max(medians):9.1f}   |  "
        f"per call p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {us.max():.1f} "
        f"(n={us.size})  |  events/s at the median call {float(np.median(rates)):,.0f}"
    )


def time_grouping(repeat: int) -> None:
    one = deliveries(Kind.TRADE, 1, 1, 1)[0][Kind.TRADE]
    wide = deliveries(Kind.QUOTE, 1, 1000, 1000)[0][Kind.QUOTE]
    five = deliveries(Kind.TRADE, 1, 100, 5)[0][Kind.TRADE]
    for name, batch, calls in (
        ("1 event", one, 5000),
        ("100 events, 5 symbols", five, 3000),
        ("1,000 symbols", wide, 1000),
    ):
        medians = []
        for _ in range(repeat):
            for _ in range(100):
                group_by_symbol(batch)
            timed = np.empty(calls, np.int64)
            for i in range(calls):
                t0 = time.perf_counter_ns()
                group_by_symbol(batch)
                timed[i] = time.perf_counter_ns() - t0
            medians.append(float(np.median(timed)) / 1000)
        print(
            f"group_by_symbol {name:<22} µs/call min {min(medians):8.1f}  "
            f"median {float(np.median(medians)):8.1f}  max {max(medians):8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", help="run the cases whose name contains this")
    args = parser.parse_args()
    if args.repeat < 3:
        parser.error("--repeat must be at least 3")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    time_grouping(args.repeat)
    for case in CASES:
        if args.only is None or args.only in case.name:
            run_case(case, args.repeat, settings)


if __name__ == "__main__":
    main()
