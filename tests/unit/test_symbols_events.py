"""Canonical symbols, OCC option symbols, and the one event model."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pytest

from tickpipe.errors import QueryError
from tickpipe.events import RECORDS, SCHEMAS, Kind, Trade, from_batch, group_by_kind, to_batch
from tickpipe.symbols import AssetClass, asset_class, occ_symbol, parse_occ, parse_symbol_list


@pytest.mark.parametrize(
    ("symbol", "klass"),
    [
        ("SPY", AssetClass.EQUITY),
        ("BRK.B", AssetClass.EQUITY),
        ("$SPX", AssetClass.INDEX),
        ("/ES", AssetClass.FUTURE),
        ("/ESZ25", AssetClass.FUTURE),
        ("SPY   251219C00600000", AssetClass.OPTION),
        ("SPXW  251219P05900500", AssetClass.OPTION),
    ],
)
def test_canonical_symbols_are_classified(symbol: str, klass: AssetClass) -> None:
    assert asset_class(symbol) is klass


@pytest.mark.parametrize("symbol", ["spy", "", "/", "$", "SPY;DROP", "A" * 30])
def test_non_canonical_symbols_are_refused(symbol: str) -> None:
    with pytest.raises(QueryError):
        asset_class(symbol)


def test_occ_symbols_round_trip() -> None:
    text = occ_symbol("SPXW", dt.date(2025, 12, 19), "P", 5900.5)
    assert text == "SPXW  251219P05900500"
    parsed = parse_occ(text)
    assert (parsed.underlying, parsed.expiry, parsed.right, parsed.strike) == (
        "SPXW",
        dt.date(2025, 12, 19),
        "P",
        5900.5,
    )
    assert parse_occ("SPXW251219P05900500") == parsed
    assert parsed.occ() == text


def test_occ_index_roots_drop_the_dollar() -> None:
    assert occ_symbol("$SPX", dt.date(2026, 1, 16), "C", 6000).startswith("SPX   260116C")


def test_symbol_lists_from_query_strings() -> None:
    assert parse_symbol_list("spy, QQQ,SPY,/es") == ["SPY", "QQQ", "/ES"]
    with pytest.raises(QueryError, match="at most 2"):
        parse_symbol_list("A,B,C", max_symbols=2)


def test_every_kind_has_one_record_and_one_schema_with_the_key_columns() -> None:
    assert set(RECORDS) == set(SCHEMAS) == set(Kind)
    for kind, record in RECORDS.items():
        names = [f.name for f in dataclasses.fields(record)]
        assert SCHEMAS[kind].names == names
        for key in ("ts_event", "ts_recv", "symbol", "source", "seq"):
            assert key in names
        assert SCHEMAS[kind].field("ts_event").type == pa.int64()


def test_records_survive_the_columnar_round_trip() -> None:
    events = [Trade(1, 2, "SPY", 600.5, 10, "x", 1, "Q", "@"), Trade(3, 4, "SPY", 600.6, 5, "x", 2)]
    batch = to_batch(Kind.TRADE, events)
    assert from_batch(Kind.TRADE, batch) == events
    assert list(group_by_kind(events)) == [Kind.TRADE]


def test_futures_options_are_canonical_in_their_own_class() -> None:
    from tickpipe.symbols import AssetClass, asset_class, is_canonical

    assert asset_class("./OZCZ23C565") is AssetClass.FUTURE_OPTION
    assert asset_class("./ESZ25P6000.5") is AssetClass.FUTURE_OPTION
    assert not is_canonical("./ES") and not is_canonical("./OZCZ23X565")
