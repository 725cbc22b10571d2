"""DXLink streamer symbols <-> canonical symbols: one table, both directions."""

from __future__ import annotations

import datetime as dt

import pytest

from tickpipe.errors import ConfigError
from tickpipe.sources.tastytrade.plan import wanted
from tickpipe.sources.tastytrade.symbols import to_canonical, to_dxlink
from tickpipe.symbols import is_canonical

# (DXLink, canonical, exchange needed to go back) - streamer symbols from the fact sheet
PAIRS = [
    ("SPY", "SPY", None),
    ("SPX", "$SPX", None),
    ("VIX", "$VIX", None),
    (".SPY251219C600", "SPY   251219C00600000", None),
    (".SPY240417C437", "SPY   240417C00437000", None),
    (".SPLG240315C24.5", "SPLG  240315C00024500", None),
    (".SPXW241125P5990", "SPXW  241125P05990000", None),
    ("/ESZ25:XCME", "/ESZ25", "XCME"),
    ("/6AM23:XCME", "/6AM23", "XCME"),
    ("/ESU26:XCME", "/ESU26", "XCME"),
]


@pytest.mark.parametrize(("dx", "canonical", "exchange"), PAIRS)
def test_both_directions(dx: str, canonical: str, exchange: str | None) -> None:
    assert to_canonical(dx).canonical == canonical
    assert is_canonical(canonical)
    assert to_dxlink(canonical, exchange=exchange) == dx


def test_an_option_knows_its_contract_and_canonical_underlying() -> None:
    spxw = to_canonical(".SPXW241125P5990")
    assert (spxw.underlying, spxw.expiry, spxw.strike, spxw.right) == (
        "$SPX",
        dt.date(2024, 11, 25),
        5990.0,
        "P",
    )
    assert to_canonical(".SPX251219C6000").underlying == "$SPX"
    assert to_canonical(".SPY251219C600").underlying == "SPY"
    assert to_canonical(".SPLG240315C24.5").strike == 24.5
    assert not to_canonical("SPY").is_option


@pytest.mark.parametrize(
    "dx",
    [
        "./ESZ24C4500:XCME",  # futures option: no OCC form
        "BTC/USD:CXTALP",  # crypto
        "SPY{=5m}",  # candle symbol
        ".SPY251219X600",  # not C or P
        ".SPY251319C600",  # month 13
        ".SPY251219C600.0001",  # finer than OCC's 1/1000
        "/ES",  # a root is not a DXLink future
    ],
)
def test_symbols_without_a_canonical_form_are_refused(dx: str) -> None:
    with pytest.raises(ValueError):
        to_canonical(dx)


def test_a_future_needs_its_exchange_to_go_back_to_dxlink() -> None:
    with pytest.raises(ValueError, match="exchange"):
        to_dxlink("/ESZ25")


@pytest.mark.parametrize(
    ("entry", "canonical", "dx"),
    [
        ("SPY", "SPY", "SPY"),
        ("$SPX", "$SPX", "SPX"),
        ("SPX", "$SPX", "SPX"),
        ("/ES", "/ES", None),
        ("/ESZ25:XCME", "/ESZ25", "/ESZ25:XCME"),
        ("SPY   251219C00600000", "SPY   251219C00600000", ".SPY251219C600"),
        (".SPY251219C600", "SPY   251219C00600000", ".SPY251219C600"),
    ],
)
def test_settings_take_canonical_or_streamer_symbols(
    entry: str, canonical: str, dx: str | None
) -> None:
    item = wanted(entry, "TASTYTRADE_SYMBOLS")
    assert (item.canonical, item.dx) == (canonical, dx)


def test_a_settings_entry_that_cannot_stream_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="TASTYTRADE_SYMBOLS: 'BTC/USD:CXTALP'"):
        wanted("BTC/USD:CXTALP", "TASTYTRADE_SYMBOLS")
