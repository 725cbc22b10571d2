"""GEX maths against hand-computed values, and degenerate chains that must not raise."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from tickpipe.events import Kind, OptionQuote, to_batch
from tickpipe.gex import greeks
from tickpipe.gex.chain import ChainBook, expiry_instant_ns
from tickpipe.gex.exposure import (
    MINUTES_PER_YEAR,
    NS_PER_MINUTE,
    Chain,
    Params,
    compute,
    compute_all,
)

NOW = 1_795_000_000 * 1_000_000_000
DAY_NS = 1440 * NS_PER_MINUTE


def test_black_scholes_matches_hull() -> None:
    # Hull, Options Futures and Other Derivatives: S=49, K=50, r=5%, sigma=20%, T=20 weeks
    t = 20 / 52
    assert greeks.price(49, 50, t, 0.2, True, r=0.05) == pytest.approx(2.40, abs=0.005)
    assert greeks.delta(49, 50, t, 0.2, True, r=0.05) == pytest.approx(0.522, abs=0.0005)
    assert greeks.gamma(49, 50, t, 0.2, r=0.05) == pytest.approx(0.066, abs=0.0005)
    assert greeks.gamma(49, 50, 0.0, 0.2) != greeks.gamma(49, 50, 0.0, 0.2)  # NaN, no exception


def test_implied_vol_recovers_the_vol_that_priced_the_option() -> None:
    k = np.array([80.0, 100.0, 120.0])
    calls = np.array([True, False, True])
    prices = greeks.price(100, k, 0.25, [0.3, 0.2, 0.45], calls)
    assert greeks.implied_vol(prices, 100, k, 0.25, calls) == pytest.approx(
        [0.3, 0.2, 0.45], abs=1e-9
    )
    assert math.isnan(greeks.implied_vol(0.0001, 100, 100, 0.25, True)[()])  # below any vol's price


def chain(
    strikes: list[float],
    calls: list[bool],
    oi: list[float],
    *,
    spot: float = 100.0,
    iv: float | list[float] = 0.2,
    days: float = 30,
    volume: list[float] | None = None,
) -> Chain:
    n = len(strikes)
    return Chain(
        underlying="X",
        spot=spot,
        now_ns=NOW,
        strike=np.array(strikes, float),
        expiry_ns=np.full(n, NOW + int(days * DAY_NS), np.int64),
        is_call=np.array(calls),
        open_interest=np.array(oi, float),
        volume=np.array(volume if volume is not None else [0.0] * n, float),
        iv=np.broadcast_to(np.asarray(iv, float), (n,)).copy(),
    )


def test_one_call_gives_gamma_times_oi_times_100_times_spot_squared_per_1pct() -> None:
    c = chain([105.0], [True], [1_000.0], days=30)
    result = compute(c)
    gamma = greeks.gamma(100.0, 105.0, 30 * 1440 / MINUTES_PER_YEAR, 0.2)
    assert result.total_gex_usd_per_1pct == pytest.approx(
        gamma * 1_000 * 100 * 100.0**2 * 0.01, rel=1e-12
    )
    assert result.call_gex_usd_per_1pct == result.total_gex_usd_per_1pct > 0
    assert result.call_wall == 105.0 and result.put_wall is None


@pytest.mark.parametrize(
    ("convention", "call_sign", "put_sign"),
    [
        ("long_calls_short_puts", 1, -1),
        ("short_calls_short_puts", -1, -1),
        ("short_calls_long_puts", -1, 1),
    ],
)
def test_sign_convention_is_a_parameter(convention: str, call_sign: int, put_sign: int) -> None:
    c = chain([100.0, 100.0], [True, False], [10.0, 10.0])
    result = compute(c, params=Params(convention=convention))  # type: ignore[arg-type]
    assert np.sign(result.call_gex_usd_per_1pct) == call_sign
    assert np.sign(result.put_gex_usd_per_1pct) == put_sign


def test_walls_are_the_strikes_with_the_most_call_and_put_gamma() -> None:
    strikes = [90.0, 95.0, 100.0, 105.0, 110.0] * 2
    calls = [True] * 5 + [False] * 5
    oi = [100, 100, 200, 5_000, 100, 100, 6_000, 300, 100, 100]  # calls, then puts
    result = compute(chain(strikes, calls, oi))
    assert (result.call_wall, result.put_wall) == (105.0, 95.0)
    assert result.strikes.tolist() == [90.0, 95.0, 100.0, 105.0, 110.0]
    assert result.net_gex_by_strike.sum() == pytest.approx(result.total_gex_usd_per_1pct)


def test_zero_gamma_is_found_where_it_is_by_construction() -> None:
    # a call at K*e^x and a put at K*e^-x, same OI, IV and expiry, and a carry that cancels
    # the sigma^2/2 term: the repriced profile is antisymmetric about sqrt(Kc*Kp) = 100
    sigma, x = 0.25, 0.05
    kc, kp = 100 * math.exp(x), 100 * math.exp(-x)
    params = Params(r=0.0, q=sigma**2 / 2, grid_points=41)
    result = compute(
        chain([kc, kp], [True, False], [500.0, 500.0], spot=102.0, iv=sigma), params=params
    )
    assert result.zero_gamma == pytest.approx(100.0, abs=1e-6)
    assert result.zero_gamma_crossings == pytest.approx([100.0], abs=1e-6)


def test_zero_dte_uses_the_floor_not_zero_time() -> None:
    n = 1
    c = Chain(
        "X",
        100.0,
        NOW,
        np.array([100.0]),
        np.array([NOW + 5 * NS_PER_MINUTE]),
        np.array([True]),
        np.array([1.0]),
        np.zeros(n),
        np.array([0.2]),
    )
    result = compute(c, params=Params(min_minutes=30))
    floored = greeks.gamma(100.0, 100.0, 30 / MINUTES_PER_YEAR, 0.2)
    assert result.total_gex_usd_per_1pct == pytest.approx(
        floored * 100 * 100.0**2 * 0.01, rel=1e-12
    )


def test_no_open_interest_still_answers_by_volume() -> None:
    c = chain([95.0, 105.0], [False, True], [0.0, 0.0], volume=[300.0, 900.0])
    by_oi = compute(c, basis="oi")
    assert (
        by_oi.total_gex_usd_per_1pct == 0 and by_oi.zero_gamma is None and by_oi.call_wall is None
    )
    by_volume = compute(c, basis="volume")
    assert by_volume.call_wall == 105.0 and by_volume.put_wall == 95.0
    assert by_volume.zero_gamma is not None


def test_calls_only_have_no_zero_gamma() -> None:
    result = compute(chain([95.0, 100.0, 105.0], [True] * 3, [10.0] * 3))
    assert result.zero_gamma is None and result.zero_gamma_crossings == []
    assert np.all(result.profile_gex > 0)


def test_nan_iv_and_expired_contracts_are_left_out() -> None:
    c = chain([100.0, 101.0, 102.0], [True] * 3, [10.0] * 3, iv=[0.2, math.nan, 0.2])
    expiry = c.expiry_ns.copy()
    expiry[2] = NOW - 1
    c = Chain(**{**c.__dict__, "expiry_ns": expiry})
    result = compute(c)
    assert result.contracts == 1 and result.strikes.tolist() == [100.0]


def test_an_empty_chain_gives_an_empty_answer() -> None:
    results = compute_all(chain([], [], []))
    assert all(r.contracts == 0 and r.zero_gamma is None for r in results.values())


def test_categories_split_by_expiry() -> None:
    n = 3
    c = Chain(
        "X",
        100.0,
        NOW,
        np.array([100.0] * n),
        np.array([NOW + DAY_NS // 2, NOW + 3 * DAY_NS, NOW + 200 * DAY_NS]),
        np.array([True] * n),
        np.array([1.0, 2.0, 4.0]),
        np.zeros(n),
        np.full(n, 0.2),
    )
    results = compute_all(c)
    assert [results[(cat, "oi")].contracts for cat in ("full", "zero", "one")] == [2, 1, 1]


def option_rows(
    expiry: dt.date, quotes: list[tuple[float, str, float, float, float]]
) -> pa.RecordBatch:
    return to_batch(
        Kind.OPTION,
        [
            OptionQuote(
                NOW,
                NOW,
                f"X{strike}{right}",
                "X",
                expiry,
                strike,
                right,
                bid,
                ask,
                0,
                5,
                oi,
                math.nan,
                math.nan,
                math.nan,
                "feed",
                i + 1,
            )
            for i, (strike, right, bid, ask, oi) in enumerate(quotes)
        ],
    )


def test_chain_book_keeps_the_last_quote_and_solves_iv_from_the_mid() -> None:
    expiry = dt.date(2026, 12, 18)
    book = ChainBook("X")
    book.update(
        option_rows(expiry, [(100.0, "C", 1.0, 1.2, 10.0), (95.0, "P", 0.5, 0.6, 20.0)]), NOW
    )
    mid = 2 * greeks.price(100.0, 100.0, 0.1, 0.3, True)[()]
    book.update(option_rows(expiry, [(100.0, "C", mid / 2 - 0.01, mid / 2 + 0.01, 11.0)]), NOW + 1)
    assert book.size == 2 and book.version == 2
    assert book.updated_ns == NOW + 1
    years = (expiry_instant_ns(expiry) - NOW) / NS_PER_MINUTE / MINUTES_PER_YEAR
    snap = book.snapshot(100.0, NOW, Params())
    assert snap.open_interest.tolist() == [11.0, 20.0]
    expected = greeks.implied_vol(mid / 2, 100.0, 100.0, years, True)[()]
    assert snap.iv[0] == pytest.approx(expected, rel=1e-9)
    assert (
        expiry_instant_ns(expiry)
        == int(dt.datetime(2026, 12, 18, 21, 0, tzinfo=dt.UTC).timestamp()) * 10**9
    )
