"""The quality stage: each kind of bad event is quarantined with its rule and reason,
counted per rule and source, and good events are never dropped."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.config import QualityThresholds, Settings
from tickpipe.events import Kind, OptionQuote, Quote, Trade, to_batch
from tickpipe.quality.stage import QualityStage, StageResult

MS = 1_000_000


def trades(
    clock: FakeClock,
    prices: list[float],
    *,
    symbol: str = "SPY",
    start_seq: int = 1,
    sizes: list[float] | None = None,
    offsets_ms: list[int] | None = None,
) -> pa.RecordBatch:
    base = clock.now_ns() - 10 * NS_PER_SECOND
    offsets = offsets_ms or [i * 10 for i in range(len(prices))]
    sizes = sizes or [100.0] * len(prices)
    return to_batch(
        Kind.TRADE,
        [
            Trade(base + off * MS, base + off * MS + 1000, symbol, p, sz, "feed", start_seq + i)
            for i, (p, sz, off) in enumerate(zip(prices, sizes, offsets, strict=True))
        ],
    )


def run(stage: QualityStage, batch: pa.RecordBatch, kind: Kind = Kind.TRADE) -> StageResult:
    return stage.process("feed", {kind: batch})


def quarantined(result: StageResult) -> list[dict[str, object]]:
    return [] if result.quarantine is None else result.quarantine.to_pylist()


@pytest.fixture
def stage(settings: Settings, clock: FakeClock) -> QualityStage:
    return QualityStage(settings, clock)


def test_clean_stream_is_accepted_whole(stage: QualityStage, clock: FakeClock) -> None:
    result = run(stage, trades(clock, [600 + i * 0.01 for i in range(200)]))
    assert result.accepted[Kind.TRADE].batch.num_rows == 200
    assert result.quarantine is None and result.gaps is None
    assert stage.accepted[("feed", "trade")] == 200


@pytest.mark.parametrize(
    ("price", "size", "rule"),
    [
        (math.nan, 100.0, "non_finite"),
        (math.inf, 100.0, "non_finite"),
        (0.0, 100.0, "non_positive_price"),
        (-1.0, 100.0, "non_positive_price"),
        (600.0, -5.0, "bad_size"),
        (600.0, math.nan, "bad_size"),
    ],
)
def test_bad_values_are_quarantined_with_their_rule(
    stage: QualityStage, clock: FakeClock, price: float, size: float, rule: str
) -> None:
    result = run(stage, trades(clock, [600.0, price, 600.01], sizes=[100.0, size, 100.0]))
    bad = quarantined(result)
    assert [r["rule"] for r in bad] == [rule]
    assert bad[0]["seq"] == 2 and bad[0]["source"] == "feed" and bad[0]["kind"] == "trade"
    assert result.accepted[Kind.TRADE].batch.column("seq").to_pylist() == [1, 3]
    assert stage.rejected[("feed", "trade", rule)] == 1


def test_crossed_quote_names_bid_and_ask(stage: QualityStage, clock: FakeClock) -> None:
    ts = clock.now_ns() - NS_PER_SECOND
    batch = to_batch(
        Kind.QUOTE,
        [
            Quote(ts, ts, "SPY", 600.00, 10, 600.01, 10, "feed", 1),
            Quote(ts + 1, ts + 1, "SPY", 600.05, 10, 600.01, 10, "feed", 2),
            Quote(ts + 2, ts + 2, "SPY", 600.01, 10, 600.01, 10, "feed", 3),  # locked is fine
        ],
    )
    result = run(stage, batch, Kind.QUOTE)
    (bad,) = quarantined(result)
    assert bad["rule"] == "crossed"
    assert bad["reason"] == "bid 600.05 > ask 600.01"
    assert '"bid":600.05' in str(bad["payload"])
    assert result.accepted[Kind.QUOTE].batch.num_rows == 2


def test_timestamps_too_far_in_the_future_or_past(
    stage: QualityStage, clock: FakeClock, settings: Settings
) -> None:
    limits = settings.quality
    future = int((limits.future_tolerance_s + 1) * 1000)
    ancient = -int((limits.max_age_s + 60) * 1000)
    result = run(
        stage, trades(clock, [600.0, 600.0, 600.0], offsets_ms=[0, future + 10_000, ancient])
    )
    assert [r["rule"] for r in quarantined(result)] == ["future_ts", "ancient_ts"]


def test_redelivered_events_are_duplicates_across_and_within_batches(
    stage: QualityStage, clock: FakeClock
) -> None:
    first = trades(clock, [600.0, 600.01, 600.02])
    assert run(stage, first).quarantine is None
    again = run(stage, first)
    assert [r["rule"] for r in quarantined(again)] == ["duplicate"] * 3
    assert Kind.TRADE not in again.accepted
    inside = trades(clock, [600.0, 600.0], start_seq=4, offsets_ms=[100, 100])
    inside = pa.concat_batches([inside, inside.slice(0, 1)])
    assert [r["rule"] for r in quarantined(run(stage, inside))] == ["duplicate"]


def test_out_of_order_event_is_quarantined_and_does_not_move_time_back(
    stage: QualityStage, clock: FakeClock
) -> None:
    result = run(stage, trades(clock, [600.0, 600.0, 600.0, 600.0], offsets_ms=[0, 500, 100, 600]))
    assert [(r["rule"], r["seq"]) for r in quarantined(result)] == [("out_of_order", 3)]
    assert result.accepted[Kind.TRADE].batch.column("seq").to_pylist() == [1, 2, 4]


def test_outlier_spike_is_quarantined_and_the_return_is_not(
    stage: QualityStage, clock: FakeClock
) -> None:
    prices = [600.0, 600.01, 600.02, 600.01, 660.0, 600.02, 600.03]
    result = run(stage, trades(clock, prices))
    bad = quarantined(result)
    assert [(r["rule"], r["seq"]) for r in bad] == [("outlier", 5)]
    assert "jumps 10.00%" in str(bad[0]["reason"])
    assert len(result.accepted[Kind.TRADE].batch) == 6


def test_outlier_reference_carries_across_batches(stage: QualityStage, clock: FakeClock) -> None:
    run(stage, trades(clock, [600.0, 600.01, 600.02]))
    later = trades(clock, [540.0, 600.02], start_seq=4, offsets_ms=[100, 110])
    assert [r["rule"] for r in quarantined(run(stage, later))] == ["outlier"]


def test_first_failing_rule_wins(stage: QualityStage, clock: FakeClock) -> None:
    ts = clock.now_ns() - NS_PER_SECOND
    batch = to_batch(Kind.QUOTE, [Quote(ts, ts, "SPY", math.nan, 10, 1.0, -1, "feed", 1)])
    assert [r["rule"] for r in quarantined(run(stage, batch, Kind.QUOTE))] == ["non_finite"]


def test_silence_longer_than_the_limit_is_a_time_gap(
    stage: QualityStage, clock: FakeClock, settings: Settings
) -> None:
    gap_ms = int(settings.quality.gap_seconds * 1000) + 5_000
    batch = trades(clock, [600.0] * 3, offsets_ms=[0, 10, 10 + gap_ms])
    clock.advance(gap_ms / 1000)
    result = run(stage, batch)
    assert result.quarantine is None
    assert result.gaps is not None
    (gap,) = result.gaps.to_pylist()
    assert gap["gap"] == "time" and gap["symbol"] == "SPY" and gap["kind"] == "trade"
    assert gap["seconds"] == pytest.approx(gap_ms / 1000)
    assert stage.gap_counts[("feed", "time")] == 1


def test_sequence_break_is_a_gap_and_the_events_are_kept(
    stage: QualityStage, clock: FakeClock
) -> None:
    run(stage, trades(clock, [600.0, 600.0]))
    result = run(stage, trades(clock, [600.0], start_seq=10, offsets_ms=[50]))
    assert result.accepted[Kind.TRADE].batch.num_rows == 1
    assert result.gaps is not None
    (gap,) = result.gaps.to_pylist()
    assert gap["gap"] == "sequence" and gap["missing_seq"] == 7


def test_thresholds_can_be_set_per_symbol(tmp_path, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        quality_overrides={"$VIX": QualityThresholds(outlier_pct=0.5, gap_seconds=1000)},
    )
    stage = QualityStage(settings, clock)
    spike = [16.0, 16.01, 16.02, 19.0]
    assert quarantined(run(stage, trades(clock, spike, symbol="$VIX"))) == []
    assert [r["rule"] for r in quarantined(run(stage, trades(clock, spike, symbol="SPY")))] == [
        "outlier"
    ]


def test_symbols_are_checked_independently(stage: QualityStage, clock: FakeClock) -> None:
    spy = trades(clock, [600.0, 600.01], symbol="SPY")
    qqq = trades(clock, [520.0, 520.01], symbol="QQQ")
    result = run(stage, pa.concat_batches([spy, qqq]))
    assert result.quarantine is None
    grouped = result.accepted[Kind.TRADE]
    assert grouped.symbols == ["QQQ", "SPY"]
    assert grouped.counts.tolist() == [2, 2]


def test_option_quotes_allow_zero_bid_and_missing_greeks(
    stage: QualityStage, clock: FakeClock
) -> None:
    import datetime as dt

    ts = clock.now_ns() - NS_PER_SECOND
    batch = to_batch(
        Kind.OPTION,
        [
            OptionQuote(
                ts,
                ts,
                "SPY   261219C00700000",
                "SPY",
                dt.date(2026, 12, 19),
                700.0,
                "C",
                0.0,
                0.05,
                0.02,
                10,
                100,
                math.nan,
                math.nan,
                math.nan,
                "feed",
                1,
            ),
            OptionQuote(
                ts,
                ts,
                "SPY   261219C00710000",
                "SPY",
                dt.date(2026, 12, 19),
                710.0,
                "C",
                0.10,
                0.05,
                0.02,
                10,
                100,
                0.2,
                0.1,
                0.01,
                "feed",
                1,
            ),
        ],
    )
    result = run(stage, batch, Kind.OPTION)
    assert result.accepted[Kind.OPTION].batch.num_rows == 1
    assert [r["rule"] for r in quarantined(result)] == ["crossed"]


def test_rows_of_the_wrong_shape_are_quarantined_not_fatal(
    stage: QualityStage, clock: FakeClock
) -> None:
    wrong = pa.record_batch(
        {"ts_event": [1, 2], "symbol": ["SPY", "SPY"], "price": ["600.1", "oops"]}
    )
    result = run(stage, wrong)
    bad = quarantined(result)
    assert [r["rule"] for r in bad] == ["bad_schema", "bad_schema"]
    assert "do not fit trade" in str(bad[0]["reason"]) and '"oops"' in str(bad[1]["payload"])
    assert Kind.TRADE not in result.accepted


def test_safe_type_differences_are_cast_not_rejected(stage: QualityStage, clock: FakeClock) -> None:
    good = trades(clock, [600.0, 600.01])
    as_int32 = good.set_column(
        good.schema.get_field_index("seq"), "seq", good.column("seq").cast(pa.int32())
    )
    assert run(stage, as_int32).accepted[Kind.TRADE].batch.num_rows == 2


def test_feed_latency_of_the_last_delivery_is_kept_per_source(
    stage: QualityStage, clock: FakeClock
) -> None:
    base = clock.now_ns() - NS_PER_SECOND
    delays_ms = [1, 2, 3, 4, 100]
    batch = to_batch(
        Kind.TRADE,
        [
            Trade(base + i, base + i + d * MS, "SPY", 600.0, 1, "feed", i + 1)
            for i, d in enumerate(delays_ms)
        ],
    )
    run(stage, batch)
    assert stage.latency_ms["feed"]["p50"] == pytest.approx(3.0)
    assert stage.latency_ms["feed"]["max"] == pytest.approx(100.0)
