"""The simulator: deterministic per seed, plausible markets, bad events on request."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.config import Settings
from tickpipe.events import SCHEMAS, Kind
from tickpipe.quality.stage import QualityStage
from tickpipe.sources.simulator import Simulator


def run_steps(settings: Settings, clock: FakeClock, steps: int = 20) -> dict[Kind, pa.Table]:
    sim = Simulator(settings, clock)
    out: dict[Kind, list[pa.RecordBatch]] = {}
    for _ in range(steps):
        for kind, batch in sim.step(2000, NS_PER_SECOND).items():
            out.setdefault(kind, []).append(batch)
    return {k: pa.Table.from_batches(v) for k, v in out.items()}


def test_same_seed_same_events(settings: Settings, clock: FakeClock) -> None:
    a = run_steps(settings, clock)
    b = run_steps(settings, clock)
    assert a.keys() == b.keys()
    for kind in a:
        assert a[kind].equals(b[kind])
    other = run_steps(settings.model_copy(update={"simulator_seed": 8}), clock)
    assert not other[Kind.TRADE].equals(a[Kind.TRADE])


def test_batches_match_the_event_schemas(settings: Settings, clock: FakeClock) -> None:
    tables = run_steps(settings, clock, steps=3)
    assert set(tables) == {Kind.TRADE, Kind.QUOTE, Kind.BOOK, Kind.OPTION}
    for kind, table in tables.items():
        assert table.schema.equals(SCHEMAS[kind])


def test_quotes_are_sane_and_seq_counts_per_symbol(settings: Settings, clock: FakeClock) -> None:
    clean = settings.model_copy(update={"simulator_bad_share": 0.0})
    quotes = run_steps(clean, clock)[Kind.QUOTE]
    bid = quotes.column("bid").to_numpy()
    ask = quotes.column("ask").to_numpy()
    assert np.all(bid < ask) and np.all(bid > 0)
    for symbol in settings.simulator_symbols:
        mask = np.array(quotes.column("symbol").to_pylist()) == symbol
        seq = quotes.column("seq").to_numpy()[mask]
        assert seq.tolist() == list(range(1, mask.sum() + 1))


def test_option_chain_has_expiries_strikes_and_greeks(settings: Settings, clock: FakeClock) -> None:
    options = run_steps(settings, clock)[Kind.OPTION]
    assert len(set(options.column("expiry").to_pylist())) >= 2
    assert len(set(options.column("strike").to_pylist())) > 20
    assert set(options.column("right").to_pylist()) == {"C", "P"}
    gamma = options.column("gamma").to_numpy()
    assert np.all(gamma[np.isfinite(gamma)] >= 0)
    assert np.all(options.column("open_interest").to_numpy() > 0)


def test_injected_bad_events_are_caught_by_quality(settings: Settings, clock: FakeClock) -> None:
    noisy = settings.model_copy(
        update={
            "simulator_bad_share": 0.02,
            "simulator_start_ns": clock.now_ns() - 3600 * NS_PER_SECOND,
        }
    )
    sim = Simulator(noisy, clock)
    stage = QualityStage(noisy, clock)
    for _ in range(30):
        stage.process("simulator", sim.step(3000, NS_PER_SECOND))
    rules = {rule for (_, _, rule) in stage.rejected}
    assert {"crossed", "outlier", "duplicate", "out_of_order"} <= rules
    rejected = sum(stage.rejected.values())
    accepted = sum(stage.accepted.values())
    assert rejected < 0.05 * accepted


def test_only_symbols_after_the_first_two_fall_silent(settings: Settings, clock: FakeClock) -> None:
    """SPY and QQQ, the README's examples, trade and quote in every second; the others
    have silences for the gap records and ``stale`` to show."""
    sim = Simulator(settings.model_copy(update={"simulator_silence_share": 0.05}), clock)
    seconds = {symbol: set() for symbol in sim.symbols}
    for second in range(300):
        batches = sim.step(600, NS_PER_SECOND)
        for kind in (Kind.TRADE, Kind.QUOTE):
            if kind in batches:  # none at all when every symbol is silent
                for symbol in set(batches[kind].column("symbol").to_pylist()):
                    seconds[symbol].add(second)
    busy, others = sim.symbols[:2], sim.symbols[2:]
    assert busy == ["SPY", "QQQ"]
    assert all(len(seconds[s]) == 300 for s in busy), {s: len(seconds[s]) for s in busy}
    assert all(len(seconds[s]) < 250 for s in others), {s: len(seconds[s]) for s in others}
