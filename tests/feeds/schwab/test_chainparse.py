"""Option chains: the recorded $SPX chain (and edited copies of it) to OptionQuotes."""

from __future__ import annotations

import copy
import datetime as dt
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from tickpipe.errors import ParseError
from tickpipe.events import Kind
from tickpipe.sources.schwab.chainparse import ChainParser

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "schwab" / "spx_chain.json"
MS = 1_000_000
RECV = 1_746_824_400 * 1_000_000_000


@pytest.fixture
def chain() -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(FIXTURE.read_bytes())
    return body


def contracts(chain: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for side in ("callExpDateMap", "putExpDateMap")
        for strikes in chain[side].values()
        for listed in strikes.values()
        for c in listed
    ]


def test_the_recorded_spx_chain_is_162_option_quotes_with_its_values(chain: dict[str, Any]) -> None:
    result = ChainParser().parse(orjson.dumps(chain), RECV, "$SPX")
    assert result.contracts == 162 and not result.truncated and result.rejects == []
    rows = {r["symbol"]: r for r in result.batches[Kind.OPTION].to_pylist()}
    assert len(rows) == 162
    assert sum(r["right"] == "C" for r in rows.values()) == 43
    call = rows["SPXW  250520C05765000"]
    assert (call["underlying"], call["expiry"], call["strike"], call["right"]) == (
        "$SPX",
        dt.date(2025, 5, 20),
        5765,
        "C",
    )
    assert (call["bid"], call["ask"], call["last"], call["volume"]) == (28.9, 29.9, 28.3, 2)
    assert (call["open_interest"], call["gamma"], call["delta"]) == (0, 0.002, 0.275)
    assert call["iv"] == pytest.approx(0.17019) and call["ts_event"] == 1746824389531 * MS
    put = rows["SPXW  250520P05500000"]
    assert (put["strike"], put["right"], put["bid"], put["ask"], put["volume"]) == (
        5500,
        "P",
        23.2,
        24,
        264,
    )
    assert (put["delta"], put["gamma"], put["open_interest"]) == (-0.208, 0.001, 0)
    assert put["iv"] == pytest.approx(0.20938)
    # a far put with gamma rounded to 0 and a zero bid is kept as Schwab sent it
    far = rows["SPXW  250520P02200000"]
    assert (far["bid"], far["gamma"], far["iv"]) == (0, 0, pytest.approx(1.47526))
    for c in contracts(chain):  # every row against the JSON it came from
        row = rows[c["symbol"]]
        assert (row["strike"], row["open_interest"], row["gamma"]) == (
            c["strikePrice"],
            c["openInterest"],
            c["gamma"],
        )
        assert row["right"] == c["putCall"][0] and row["expiry"] == dt.date(2025, 5, 20)


def test_the_index_value_is_a_size_zero_trade_sent_once_per_change(chain: dict[str, Any]) -> None:
    parser = ChainParser()
    [spot] = parser.parse(chain, RECV, "$SPX").batches[Kind.TRADE].to_pylist()
    assert (spot["symbol"], spot["price"], spot["size"], spot["conditions"]) == (
        "$SPX",
        5659.91,
        0,
        "index",
    )
    assert Kind.TRADE not in parser.parse(chain, RECV + 1, "$SPX").batches
    chain["underlyingPrice"] = 5661.0
    assert parser.parse(chain, RECV + 2, "$SPX").batches[Kind.TRADE].column(
        "price"
    ).to_pylist() == [5661.0]


def test_an_equity_chain_gives_the_underlying_quote(chain: dict[str, Any]) -> None:
    equity = copy.deepcopy(chain)
    equity.update(symbol="AAPL", isIndex=False, assetMainType="EQUITY")
    # the underlying object of a recorded AAPL response (includeUnderlyingQuote=true)
    equity["underlying"] = {
        "symbol": "AAPL",
        "bid": 232.16,
        "ask": 232.2,
        "last": 232.15,
        "bidSize": 2,
        "askSize": 1,
        "quoteTime": 1729209567818,
        "tradeTime": 1729209599105,
        "delayed": False,
    }
    result = ChainParser(equity_size_multiplier=100).parse(equity, RECV, "AAPL")
    [quote] = result.batches[Kind.QUOTE].to_pylist()
    assert (quote["symbol"], quote["bid"], quote["ask"]) == ("AAPL", 232.16, 232.2)
    assert (quote["bid_size"], quote["ask_size"], quote["ts_event"]) == (
        200,
        100,
        1729209567818 * MS,
    )
    assert set(result.batches[Kind.OPTION].column("underlying").to_pylist()) == {"AAPL"}


def test_missing_greeks_sentinels_and_zero_open_interest_still_parse(chain: dict[str, Any]) -> None:
    edited = copy.deepcopy(chain)
    first = edited["callExpDateMap"]["2025-05-20:9"]["5765.0"][0]
    first.update(volatility=-999.0, delta="NaN")
    del first["gamma"], first["openInterest"]
    result = ChainParser().parse(edited, RECV, "$SPX")
    assert result.contracts == 162 and result.rejects == []
    row = next(r for r in result.batches[Kind.OPTION].to_pylist() if r["symbol"] == first["symbol"])
    assert math.isnan(row["iv"]) and math.isnan(row["delta"]) and math.isnan(row["gamma"])
    assert row["open_interest"] == 0 and (row["bid"], row["ask"]) == (28.9, 29.9)


def test_a_broken_contract_is_rejected_alone(chain: dict[str, Any]) -> None:
    edited = copy.deepcopy(chain)
    edited["putExpDateMap"]["2025-05-20:9"]["5500.0"][0]["putCall"] = "STRADDLE"
    edited["putExpDateMap"]["2025-05-20:9"]["5505.0"][0]["bid"] = None
    result = ChainParser().parse(edited, RECV, "$SPX")
    assert result.contracts == 160
    assert sorted(r.reason for r in result.rejects) == [
        "contract without numeric strikePrice, bid and ask",
        "contract without putCall CALL/PUT and a symbol",
    ]
    assert all("SPXW  250520P055" in r.raw for r in result.rejects)


def test_not_json_raises_with_the_body() -> None:
    with pytest.raises(ParseError) as caught:
        ChainParser().parse(b"<html>Access Denied</html>", RECV, "$SPX")
    assert caught.value.raw == b"<html>Access Denied</html>" and caught.value.symbol == "$SPX"


def test_sequence_numbers_continue_per_contract(chain: dict[str, Any]) -> None:
    parser = ChainParser()
    parser.resume({(Kind.OPTION, "SPXW  250520C05765000"): (9, 0)})
    rows = parser.parse(chain, RECV, "$SPX").batches[Kind.OPTION].to_pylist()
    seqs = {r["symbol"]: r["seq"] for r in rows}
    assert seqs["SPXW  250520C05765000"] == 10 and seqs["SPXW  250520P05500000"] == 1
