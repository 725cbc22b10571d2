"""gexbot answers decoded field by field, on the frames real recordings show."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from tickpipe.errors import ConfigError, ParseError
from tickpipe.events import Kind, from_batch
from tickpipe.sources.gexbot.endpoints import (
    Endpoint,
    View,
    canonical_symbol,
    parse_categories,
    parse_tickers,
)
from tickpipe.sources.gexbot.parse import Row, decode, levels_batch, to_usd_per_1pct

# gexbot's README example (GET /v2/SPX/classic/zero), verbatim; the README trims the ladder
README_CHAIN = b"""{
  "timestamp": 1777492800,
  "ticker": "SPX",
  "min_dte": 0,
  "sec_min_dte": 1,
  "spot": 7138.55,
  "zero_gamma": 7112.95,
  "major_pos_vol": 7135,
  "major_pos_oi": 7200,
  "major_neg_vol": 7100,
  "major_neg_oi": 6900,
  "strikes": [
    [6890, -228.01, -86.9, [-240.55, -243.15, -245.22, -221.27, -220.12]],
    [6895, -48.47, 69.76, [-49.05, -46.76, -45.55, -45.53, -42.97]],
    [7380, 44.16, 75.99, [0, 47.7, 47.3, 0, 40.55]],
    [7385, 5.5, 14.27, [0, 0, 0, 0, 0]]
  ],
  "sum_gex_vol": 1712585.519,
  "sum_gex_oi": 51521.105,
  "delta_risk_reversal": 0.118,
  "max_priors": [[7140, 170979.742], [7135, 1145886.722], [7135, 997473.336],
                 [7135, 1106210.715], [7135, 1128504.809], [7135, 1131150.488]]
}"""

# a market holiday as recorded: zero gamma, every volume field, priors and max_priors 0,
# the OI-based fields still carrying values; ``zero`` was the next expiry (min_dte 1)
HOLIDAY_CHAIN = {
    "timestamp": 1766592000,
    "ticker": "SPY",
    "min_dte": 1,
    "sec_min_dte": 2,
    "spot": 690.12,
    "zero_gamma": 0,
    "major_pos_vol": 0,
    "major_pos_oi": 700,
    "major_neg_vol": 0,
    "major_neg_oi": 680,
    "strikes": [[680, 0, -35.2, [0, 0, 0, 0, 0]], [700, 0, 41.8, [0, 0, 0, 0, 0]]],
    "sum_gex_vol": 0,
    "sum_gex_oi": 6.6,
    "delta_risk_reversal": 0,
    "max_priors": [[0, 0]] * 6,
}

MAJORS = {
    "timestamp": 1766505600,
    "ticker": "SPX",
    "spot": 6345.1,
    "mpos_vol": 6339.92,
    "mpos_oi": 6400,
    "mneg_vol": 6300,
    "mneg_oi": 6250,
    "zero_gamma": 6322.4,
    "net_gex_vol": -1520.5,
    "net_gex_oi": 2210.25,
}

MAXCHANGE = {
    "timestamp": 1766505600,
    "ticker": "SPX",
    "current": [6340, 120.5],
    "one": [6345, -80.25],
    "five": [6340, 300.0],
    "ten": [0, 0],
    "fifteen": [6350, 410.75],
    "thirty": [6300, -95.5],
}
UNIT = 1e6


def dumps(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def test_the_readme_chain_decodes_to_its_values_in_usd_per_1pct() -> None:
    levels = decode(README_CHAIN, View.CHAIN, ticker="SPX", unit_usd=UNIT)
    assert levels.ts_ns == 1_777_492_800 * 1_000_000_000
    assert levels.spot == 7138.55 and levels.zero_gamma == 7112.95
    assert (levels.major_pos_vol, levels.major_pos_oi) == (7135, 7200)
    assert (levels.major_neg_vol, levels.major_neg_oi) == (7100, 6900)
    assert levels.net_gex_vol == pytest.approx(1712585.519e6)
    assert levels.net_gex_oi == pytest.approx(51521.105e6)
    assert levels.strikes.tolist() == [6890, 6895, 7380, 7385]
    # the stored ladder is the OI column (the third), as tickpipe's engine stores its own
    assert levels.gex_oi == pytest.approx(np.array([-86.9, 69.76, 75.99, 14.27]) * 1e6)
    assert levels.unknown == ()


def test_zero_means_not_computed_on_a_holiday() -> None:
    levels = decode(dumps(HOLIDAY_CHAIN), View.CHAIN, ticker="SPY", unit_usd=UNIT)
    assert levels.zero_gamma is None
    assert levels.major_pos_vol is None and levels.major_neg_vol is None
    assert levels.net_gex_vol is None
    assert (levels.major_pos_oi, levels.major_neg_oi) == (700, 680)
    assert levels.net_gex_oi == pytest.approx(6.6e6)
    assert levels.gex_oi == pytest.approx([-35.2e6, 41.8e6])


def test_majors_use_their_own_names_and_need_not_be_strikes() -> None:
    levels = decode(dumps(MAJORS), View.MAJORS, ticker="SPX", unit_usd=UNIT)
    assert levels.major_pos_vol == 6339.92 and levels.major_pos_oi == 6400
    assert (levels.major_neg_vol, levels.major_neg_oi) == (6300, 6250)
    assert levels.zero_gamma == 6322.4 and levels.spot == 6345.1
    assert levels.net_gex_vol == pytest.approx(-1520.5e6)
    assert levels.net_gex_oi == pytest.approx(2210.25e6)
    assert levels.strikes.size == 0


def test_maxchange_windows_keep_their_order_and_take_the_known_spot() -> None:
    levels = decode(dumps(MAXCHANGE), View.MAXCHANGE, ticker="SPX", unit_usd=UNIT, spot=6345.1)
    assert levels.spot == 6345.1
    strikes, changes = levels.strikes.tolist(), levels.gex_oi.tolist()
    assert strikes[:3] == [6340, 6345, 6340] and strikes[4:] == [6350, 6300]
    assert np.isnan(strikes[3]) and np.isnan(changes[3])  # [0, 0]: not computed
    assert changes[0] == pytest.approx(120.5e6) and changes[5] == pytest.approx(-95.5e6)
    with pytest.raises(ParseError, match="no spot"):
        decode(dumps(MAXCHANGE), View.MAXCHANGE, ticker="SPX", unit_usd=UNIT)


@pytest.mark.parametrize("unit", [1.0, 1e6])
def test_only_gex_values_are_converted_and_prices_are_not(unit: float) -> None:
    levels = decode(README_CHAIN, View.CHAIN, ticker="SPX", unit_usd=unit)
    assert levels.gex_oi[0] == pytest.approx(-86.9 * unit)
    assert levels.net_gex_oi == pytest.approx(51521.105 * unit)
    assert levels.strikes[0] == 6890 and levels.spot == 7138.55
    assert levels.zero_gamma == 7112.95 and levels.major_pos_oi == 7200
    assert to_usd_per_1pct(2.5, unit) == 2.5 * unit


def refused(body: bytes, view: View = View.CHAIN, ticker: str = "SPX") -> ParseError:
    with pytest.raises(ParseError) as info:
        decode(body, view, ticker=ticker, unit_usd=UNIT)
    assert info.value.raw == body  # the raw text travels with the refusal
    return info.value


def with_changes(**changes: Any) -> bytes:
    obj = orjson.loads(README_CHAIN)
    obj.update(changes)
    return dumps(obj)


def test_nonsense_is_refused_with_a_reason() -> None:
    assert "not JSON" in str(refused(b"<html>502 Bad Gateway</html>"))
    assert "not JSON" in str(refused(b'{"spot": NaN}'))
    assert "JSON object" in str(refused(b"[1, 2]"))
    assert "spot is 'NaN'" in str(refused(with_changes(spot="NaN")))
    assert "spot is missing" in str(refused(with_changes(spot=None)))
    assert "not a positive price" in str(refused(with_changes(spot=-1)))
    assert "far outside the ladder" in str(refused(with_changes(zero_gamma=71.13)))
    assert "timestamp" in str(refused(with_changes(timestamp=1777492800000)))
    assert "asked for SPX" in str(refused(with_changes(ticker="NDX")))
    assert "strikes[1]" in str(refused(with_changes(strikes=[[6890, 1, 2, []], [6895, 1]])))
    assert "not finite" in str(refused(with_changes(strikes=[[6890, 1, 1e400, []]])))
    assert "strikes is missing" in str(refused(with_changes(strikes=None)))
    assert "far from spot" in str(refused(dumps({**MAJORS, "zero_gamma": 12.0}), View.MAJORS))


def test_unknown_fields_are_reported_not_fatal_and_rows_are_sorted() -> None:
    obj = orjson.loads(README_CHAIN)
    obj["gamma_flip_v2"] = 1
    obj["strikes"] = list(reversed(obj["strikes"]))
    levels = decode(dumps(obj), View.CHAIN, ticker="SPX", unit_usd=UNIT)
    assert levels.unknown == ("gamma_flip_v2",)
    assert levels.strikes.tolist() == [6890, 6895, 7380, 7385]
    assert levels.gex_oi[0] == pytest.approx(-86.9e6)


def test_a_delivery_becomes_gexlevels_columns() -> None:
    chain = decode(README_CHAIN, View.CHAIN, ticker="SPX", unit_usd=UNIT)
    majors = decode(dumps(MAJORS), View.MAJORS, ticker="SPX", unit_usd=UNIT)
    change = decode(dumps(MAXCHANGE), View.MAXCHANGE, ticker="SPX", unit_usd=UNIT, spot=6345.1)
    batch = levels_batch(
        [
            Row("$SPX", "zero", 7, 111, chain),
            Row("$SPX", "zero/majors", 8, 111, majors, View.MAJORS),
            Row("$SPX", "zero/maxchange", 9, 111, change, View.MAXCHANGE),
        ]
    )
    first, second, third = from_batch(Kind.GEX, batch)
    assert (first.symbol, first.category, first.seq, first.source) == ("$SPX", "zero", 7, "gexbot")
    assert first.ts_recv == 111 and first.ts_event == 1_777_492_800_000_000_000
    assert (first.call_wall, first.put_wall) == (7200, 6900)  # gexbot's majors by OI
    assert first.total_gex_usd_per_1pct == pytest.approx(51521.105e6)
    assert first.strikes == [6890, 6895, 7380, 7385]
    assert first.gex_usd_per_1pct == pytest.approx([-86.9e6, 69.76e6, 75.99e6, 14.27e6])
    assert first.net_gex_vol == pytest.approx(1712585.519e6)
    assert second.strikes == [] and second.major_pos_vol == 6339.92
    assert second.net_gex_oi == pytest.approx(2210.25e6)
    assert third.call_wall is None and third.strikes[0] == 6340


def test_tickers_become_canonical_symbols() -> None:
    assert parse_tickers(["SPX", "spy", "ES_SPX", "NQ_NDX", "VIX"]) == {
        "SPX": "$SPX",
        "SPY": "SPY",
        "ES_SPX": "/ES",
        "NQ_NDX": "/NQ",
        "VIX": "$VIX",
    }
    assert canonical_symbol("$SPX") == "$SPX" and canonical_symbol("spx") == "$SPX"
    for bad, words in (
        (["$SPX"], "gexbot's ticker"),
        (["SPX", "SPX"], "repeats"),
        (["S P X"], "not a gexbot ticker"),
        ([], "empty"),
    ):
        with pytest.raises(ConfigError, match="GEXBOT_TICKERS") as info:
            parse_tickers(bad)
        assert words in str(info.value)


def test_categories_with_majors_and_maxchange_by_setting() -> None:
    endpoints = parse_categories(["zero/maxchange", "gex_full", "zero", "one/majors", "zero"])
    assert [e.label for e in endpoints] == ["full", "zero", "one/majors", "zero/maxchange"]
    assert Endpoint("one", View.MAJORS).path("SPX") == "/SPX/classic/one/majors"
    assert Endpoint("full", View.CHAIN).path("ES_SPX") == "/ES_SPX/classic/full"
    with pytest.raises(ConfigError, match="GEXBOT_CATEGORIES: 'gamma'"):
        parse_categories(["gamma"])
    with pytest.raises(ConfigError, match="carries no spot"):
        parse_categories(["zero/maxchange"])
