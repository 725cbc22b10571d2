"""Quality verdicts do not depend on how a feed splits its stream into deliveries.

A websocket delivers one event at a time, a file import a million at once; the same
stream must give the same accepted events, quarantine and gaps either way.
"""

from __future__ import annotations

import itertools
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.config import Settings
from tickpipe.events import SCHEMAS, Kind
from tickpipe.quality.stage import QualityStage

NOW = 1_795_000_000 * NS_PER_SECOND
SYMBOLS = ["SPY", "QQQ", "/ES"]


def trades(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [{"ts_recv": r["ts_event"], "source": "feed", "exchange": None, **r} for r in rows],
        schema=SCHEMAS[Kind.TRADE],
    )


def quotes(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [{"ts_recv": r["ts_event"], "source": "feed", **r} for r in rows],
        schema=SCHEMAS[Kind.QUOTE],
    )


def run(
    stage_settings: Settings, stream: list[tuple[Kind, dict[str, Any]]], cuts: list[int]
) -> tuple[set[Any], list[Any], list[Any]]:
    """Feed ``stream`` in deliveries ending at ``cuts``; return accepted, quarantine, gaps."""
    stage = QualityStage(stage_settings, FakeClock(NOW))
    accepted: set[Any] = set()
    quarantined: list[Any] = []
    gaps: list[Any] = []
    bounds = [0, *sorted(set(cuts)), len(stream)]
    for lo, hi in itertools.pairwise(bounds):
        part = stream[lo:hi]
        if not part:
            continue
        delivery = {}
        for kind, build in ((Kind.TRADE, trades), (Kind.QUOTE, quotes)):
            rows = [r for k, r in part if k is kind]
            if rows:
                delivery[kind] = build(rows)
        result = stage.process("feed", delivery)
        for kind, grouped in result.accepted.items():
            for row in grouped.batch.to_pylist():
                accepted.add((kind.value, row["symbol"], row["seq"]))
        if result.quarantine is not None:
            quarantined += [
                (r["kind"], r["symbol"], r["seq"], r["rule"]) for r in result.quarantine.to_pylist()
            ]
        if result.gaps is not None:
            gaps += [
                (r["kind"], r["symbol"], r["seq"], r["gap"], r["start_ns"], r["missing_seq"])
                for r in result.gaps.to_pylist()
            ]
    return accepted, sorted(quarantined), sorted(gaps)


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[Kind, dict[str, Any]]]:
    """Trades and quotes for a few symbols: steady walks with repricings, spikes, NaNs,
    re-sent and skipped seqs, late and silent stretches."""
    n = draw(st.integers(1, 120))
    out: list[tuple[Kind, dict[str, Any]]] = []
    price = {s: 100.0 for s in SYMBOLS}
    seq = {(k, s): 0 for k in (Kind.TRADE, Kind.QUOTE) for s in SYMBOLS}
    ts = NOW - 3600 * NS_PER_SECOND
    for _ in range(n):
        symbol = draw(st.sampled_from(SYMBOLS))
        kind = draw(st.sampled_from([Kind.TRADE, Kind.QUOTE]))
        event = draw(
            st.sampled_from(
                ["walk"] * 8 + ["reprice", "spike", "nan", "dup", "skip", "late", "silence"]
            )
        )
        ts += draw(st.integers(1, 2 * NS_PER_SECOND))
        key = (kind, symbol)
        seq[key] += 1
        p = price[symbol] + draw(st.integers(-3, 3)) * 0.01
        event_ts, event_seq = ts, seq[key]
        if event == "reprice":
            p *= 1.05
        elif event == "spike":
            p *= draw(st.sampled_from([0.8, 1.2]))
        elif event == "nan":
            p = float("nan")
        elif event == "dup":
            event_seq = max(seq[key] - draw(st.integers(1, 3)), 1)
        elif event == "skip":
            seq[key] += draw(st.integers(1, 5))
            event_seq = seq[key]
        elif event == "late":
            event_ts = ts - draw(st.integers(1, 10)) * NS_PER_SECOND
        elif event == "silence":
            ts += 45 * NS_PER_SECOND
            event_ts = ts
        if event not in ("spike", "nan"):
            price[symbol] = p
        base = {"ts_event": event_ts, "symbol": symbol, "seq": event_seq}
        if kind is Kind.TRADE:
            out.append((kind, base | {"price": p, "size": 100.0}))
        else:
            out.append(
                (kind, base | {"bid": p - 0.01, "bid_size": 5.0, "ask": p + 0.01, "ask_size": 5.0})
            )
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams(), data=st.data())
def test_same_verdicts_whole_one_by_one_and_in_random_splits(
    stream: list[tuple[Kind, dict[str, Any]]], data: st.DataObject
) -> None:
    stage_settings = Settings(_env_file=None)  # type: ignore[call-arg]
    whole = run(stage_settings, stream, [])
    assert run(stage_settings, stream, list(range(len(stream)))) == whole
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    assert run(stage_settings, stream, cuts) == whole


def test_a_genuine_repricing_is_accepted_after_a_few_prints_however_it_arrives() -> None:
    """A 5 % move held for 25 prints: the first few are held back as outliers, the rest pass,
    and a websocket (one print per delivery) sees exactly what a batch import sees."""
    rows = [
        (
            Kind.TRADE,
            {
                "ts_event": NOW - 1000 + i,
                "symbol": "SPY",
                "seq": i + 1,
                "price": 100.0,
                "size": 1.0,
            },
        )
        for i in range(30)
    ]
    rows += [
        (
            Kind.TRADE,
            {
                "ts_event": NOW - 500 + i,
                "symbol": "SPY",
                "seq": 31 + i,
                "price": 105.0,
                "size": 1.0,
            },
        )
        for i in range(25)
    ]
    stage_settings = Settings(_env_file=None)  # type: ignore[call-arg]
    whole = run(stage_settings, rows, [])
    one_by_one = run(stage_settings, rows, list(range(len(rows))))
    assert one_by_one == whole
    accepted_new = sorted(seq for _, _, seq in whole[0] if seq > 30)
    assert len(accepted_new) == 22 and accepted_new == list(range(34, 56))
    assert [r[3] for r in whole[1]] == ["outlier"] * 3


def test_a_lone_spike_is_quarantined_and_the_price_after_it_is_not() -> None:
    prices = [100.0] * 10 + [150.0] + [100.01] * 5
    rows = [
        (
            Kind.TRADE,
            {"ts_event": NOW - 100 + i, "symbol": "QQQ", "seq": i + 1, "price": p, "size": 1.0},
        )
        for i, p in enumerate(prices)
    ]
    accepted, quarantined, _ = run(Settings(_env_file=None), rows, list(range(len(rows))))  # type: ignore[call-arg]
    assert quarantined == [("trade", "QQQ", 11, "outlier")]
    assert len(accepted) == len(prices) - 1


def test_a_missing_size_or_side_is_an_absence_but_a_nan_is_a_fault() -> None:
    base = {"ts_event": NOW - 10, "symbol": "SPY", "bid": 99.0, "bid_size": 1.0}
    rows = [
        base | {"seq": 1, "ask": 99.02, "ask_size": None},  # DXLink's NaN size, read as missing
        base | {"seq": 2, "ask": None, "ask_size": None},  # one-sided market
        base | {"seq": 3, "ask": 99.02, "ask_size": float("nan")},  # a NaN that was sent
        base | {"seq": 4, "ask": float("nan"), "ask_size": 2.0},
    ]
    stage = QualityStage(Settings(_env_file=None), FakeClock(NOW))  # type: ignore[call-arg]
    result = stage.process("feed", {Kind.QUOTE: quotes(rows)})
    assert result.accepted[Kind.QUOTE].batch.column("seq").to_pylist() == [1, 2]
    assert result.quarantine is not None
    assert result.quarantine.column("rule").to_pylist() == ["bad_size", "non_finite"]
