"""The vectorised quality machinery against plain, obviously-correct references.

The stage checks every symbol of a batch at once (one flat layout, shifted adds, a sorting
network); these tests hold the look-back and the whole stage to a one-event-at-a-time
Python reading of the rules in rules.py, on random data with NaN, repeated prices,
duplicates, out-of-order events and symbols with different windows.
"""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.config import QualityThresholds, Settings
from tickpipe.events import SCHEMAS, Kind
from tickpipe.quality import lookback
from tickpipe.quality.lookback import DEV_WINDOW, look_back
from tickpipe.quality.stage import QualityStage

NOW = 1_795_000_000 * NS_PER_SECOND
NO_TS = np.iinfo(np.int64).min
WINDOWS = {"A": 3, "B": 5, "C": 8, "D": 40}
"""outlier windows per symbol; D's is wider than the carried tail, so the table widens"""
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_median(previous: list[float], window: int) -> float:
    prices = [p for p in previous[-window:] if not math.isnan(p)]
    return statistics.median(prices) if prices else math.nan


def reference_dev(previous: list[float]) -> float:
    last = previous[-(DEV_WINDOW + 1) :]
    moves = [abs(b - a) for a, b in itertools.pairwise(last)]
    moves = [m for m in moves if not math.isnan(m)]
    return math.fsum(moves) / len(moves) if moves else 0.0


numbers = st.one_of(st.sampled_from([100.0, 100.5, 101.0]), st.floats(1.0, 1000.0))
"""repeated prices and arbitrary ones"""


@st.composite
def groups(draw: st.DrawFn) -> tuple[list[list[float]], list[list[float]], list[int], int]:
    """(tails, candidate prices, windows, tail width) for a few groups; NaN (warm-up
    padding, a quote without a side) in some cases, none in others."""
    prices = st.one_of(numbers, st.just(math.nan)) if draw(st.booleans()) else numbers
    n = draw(st.integers(1, 5))
    window = st.sampled_from([1, 2, 3, 5, 8, 33, 40])
    if draw(st.booleans()):
        windows = draw(st.lists(window, min_size=n, max_size=n))
    else:
        windows = [draw(window)] * n
    width = max(max(windows), DEV_WINDOW + 1) + draw(st.integers(0, 3))
    tails = [draw(st.lists(prices, min_size=width, max_size=width)) for _ in range(n)]
    values = [draw(st.lists(prices, max_size=50)) for _ in range(n)]
    return tails, values, windows, width


@QUICK
@given(case=groups(), network=st.booleans())
def test_look_back_equals_a_per_group_loop(
    case: tuple[list[list[float]], list[list[float]], list[int], int], network: bool
) -> None:
    tails, values, windows, width = case
    group = np.repeat(np.arange(len(values)), [len(v) for v in values]).astype(np.int64)
    with mock.patch.object(lookback, "NETWORK_FROM", 0 if network else 10**9):
        look = look_back(
            np.array([p for v in values for p in v], dtype=np.float64),
            None if len(values) == 1 else group,  # one symbol is one run, read by slices
            np.array([len(v) for v in values], dtype=np.int64),
            np.array(tails, dtype=np.float64),
            np.array(windows, dtype=np.int64),
        )
    medians: list[float] = []
    devs: list[float] = []
    carried: list[list[float]] = []
    for tail, new, window in zip(tails, values, windows, strict=True):
        seen = list(tail)
        for price in new:
            medians.append(reference_median(seen, window))
            devs.append(reference_dev(seen))
            seen.append(price)
        carried.append(seen[-width:])
    np.testing.assert_array_equal(look.median, np.array(medians))
    np.testing.assert_allclose(look.dev, np.array(devs), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(look.tails, np.array(carried).reshape(len(tails), width))


def test_each_typical_move_is_summed_as_numpy_sums_its_window() -> None:
    """Bit for bit, so a verdict cannot depend on where a batch began."""
    rng = np.random.default_rng(3)
    x = np.abs(rng.normal(size=5000)) * 10.0 ** rng.uniform(-3, 4, 5000)
    sums = lookback.window_sums(x)
    expected = [np.sum(x[s : s + DEV_WINDOW]) for s in range(x.size - DEV_WINDOW + 1)]
    np.testing.assert_array_equal(sums, np.array(expected))


class Reference:
    """The rules of rules.py read one event at a time, per (kind, symbol)."""

    def __init__(self, limits: dict[str, QualityThresholds], default: QualityThresholds) -> None:
        self.limits = limits
        self.default = default
        self.last_seq: dict[tuple[Kind, str], int] = {}
        self.last_ts: dict[tuple[Kind, str], int] = {}
        self.prices: dict[tuple[Kind, str], list[float]] = {}

    def rule(self, kind: Kind, event: dict[str, Any]) -> str:
        key = (kind, event["symbol"])
        limit = self.limits.get(event["symbol"], self.default)
        value_rule, watched = self._values(kind, event)
        seq, ts = event["seq"], event["ts_event"]
        seen = self.last_seq.get(key, 0)
        self.last_seq[key] = max(seen, seq)
        if value_rule:
            return value_rule  # (the stream never reaches the time limits)
        if seq <= seen:
            return "duplicate"
        if ts < self.last_ts.get(key, NO_TS):
            return "out_of_order"
        self.last_ts[key] = max(self.last_ts.get(key, NO_TS), ts)
        previous = self.prices.setdefault(key, [])
        median = reference_median(previous, limit.outlier_window)
        dev = reference_dev(previous)
        previous.append(watched)
        jump = abs(watched - median)
        if jump > max(limit.outlier_k * dev, limit.outlier_pct * median):
            return "outlier"
        return "ok"

    @staticmethod
    def _values(kind: Kind, event: dict[str, Any]) -> tuple[str, float]:
        """(the first value rule failed or "", the price the outlier rule watches)."""
        if kind is Kind.TRADE:
            price, size = event["price"], event["size"]
            if not math.isfinite(price):
                return "non_finite", price
            if price <= 0:
                return "non_positive_price", price
            return ("bad_size" if not math.isfinite(size) or size < 0 else ""), price
        bid, ask = event["bid"], event["ask"]
        sides = [p for p in (bid, ask) if p is not None]
        if not all(math.isfinite(p) for p in sides):
            return "non_finite", math.nan
        if any(p <= 0 for p in sides):
            return "non_positive_price", math.nan
        if bid is not None and ask is not None and bid > ask:
            return "crossed", math.nan
        return "", (bid + ask) / 2 if len(sides) == 2 else math.nan


EIGHTHS = st.integers(792, 808).map(lambda i: i / 8)
"""prices on a binary grid: every sum of moves is exact, in any order"""


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[Kind, dict[str, Any]]]:
    n = draw(st.integers(1, 150))
    out: list[tuple[Kind, dict[str, Any]]] = []
    ts = NOW - 600 * NS_PER_SECOND
    seqs: dict[tuple[Kind, str], int] = {}
    for i in range(n):
        kind = draw(st.sampled_from([Kind.TRADE, Kind.QUOTE]))
        symbol = draw(st.sampled_from(sorted(WINDOWS)))
        ts += draw(st.integers(0, 3)) * NS_PER_SECOND
        seq = seqs[(kind, symbol)] = seqs.get((kind, symbol), 0) + draw(st.integers(1, 2))
        event: dict[str, Any] = {
            "ts_event": ts - draw(st.sampled_from([0, 0, 0, 5 * NS_PER_SECOND])),
            "ts_recv": NOW + i,  # the event's identity
            "symbol": symbol,
            "source": "feed",
            "seq": seq - draw(st.sampled_from([0, 0, 0, 0, 1, 3])),
        }
        price = draw(st.one_of(EIGHTHS, EIGHTHS, st.sampled_from([125.0, 80.0, math.nan, 0.0])))
        if kind is Kind.TRADE:
            event |= {"price": price, "size": draw(st.sampled_from([1.0, 1.0, -1.0]))}
        else:
            ask = draw(st.sampled_from([0.25, 0.25, 0.5, -0.25]))
            event |= {
                "bid": draw(st.sampled_from([price, price, price, None])),
                "ask": draw(st.sampled_from([price + ask, price + ask, None])),
                "bid_size": 1.0,
                "ask_size": 1.0,
            }
        out.append((kind, event))
    return out


@QUICK
@given(stream=streams(), cuts=st.lists(st.integers(0, 150), max_size=6))
def test_stage_verdicts_equal_the_rules_read_one_event_at_a_time(
    stream: list[tuple[Kind, dict[str, Any]]], cuts: list[int]
) -> None:
    limits = {s: QualityThresholds(outlier_window=w) for s, w in WINDOWS.items()}
    stage_settings = Settings(_env_file=None, quality_overrides=limits)  # type: ignore[call-arg]
    reference = Reference(limits, stage_settings.quality)
    expected = {e["ts_recv"]: reference.rule(kind, e) for kind, e in stream}
    stage = QualityStage(stage_settings, FakeClock(NOW))
    got: dict[int, str] = {}
    bounds = [0, *sorted({c for c in cuts if c < len(stream)}), len(stream)]
    for lo, hi in itertools.pairwise(bounds):
        part = stream[lo:hi]
        delivery = {
            kind: pa.RecordBatch.from_pylist([e for k, e in part if k is kind], SCHEMAS[kind])
            for kind in {k for k, _ in part}
        }
        result = stage.process("feed", delivery)
        for grouped in result.accepted.values():
            got |= dict.fromkeys(grouped.batch.column("ts_recv").to_pylist(), "ok")
        if result.quarantine is not None:
            q = result.quarantine
            got |= dict(
                zip(q.column("ts_recv").to_pylist(), q.column("rule").to_pylist(), strict=True)
            )
    assert got == expected
