"""FEED_DATA decoding on frames from tastytrade's docs, the dxLink spec and real recordings."""

from __future__ import annotations

import datetime as dt

import orjson
import pyarrow as pa
import pytest

from tickpipe.events import SCHEMAS, Kind
from tickpipe.sources.tastytrade.decoder import Decoder
from tickpipe.sources.tastytrade.parse import FeedFields, decode_feed_data

RECV = 1_795_000_000_000_000_000

# tastytrade "Streaming Market Data" page, verbatim
OFFICIAL_TRADE = (
    b'{"type":"FEED_DATA","channel":3,"data":["Trade",["Trade","SPY",559.36,1.3743299E7,100.0,'
    b'"Trade","BTC/USD:CXTALP",58356.71,"NaN","NaN"]]}'
)
OFFICIAL_TRADE_FIELDS = ["eventType", "eventSymbol", "price", "dayVolume", "size"]
# dxLink AsyncAPI example: two runs in one message
SPEC_TWO_RUNS = (
    b'{"channel":1,"type":"FEED_DATA","data":["Quote",["AAPL","Quote",123,124,"AMZN","Quote",'
    b'321,322],"Trade",["AAPL","Trade",321,22,"AMZN","Trade",123,11]]}'
)
# a public recording of SPX weekly option quotes
COMMUNITY_SPXW = (
    b'{"type":"FEED_DATA","channel":1,"data":["Quote",["Quote",".SPXW241125P5990",10.5,10.7,'
    b'4.0,24.0,"Quote",".SPXW241125P5980",5.1,5.3,96.0,55.0,"Quote",".SPXW241125P5970",2.4,'
    b"2.5,63.0,116.0]]}"
)
COMMUNITY_QUOTE_FIELDS = ["eventType", "eventSymbol", "bidPrice", "askPrice", "bidSize", "askSize"]
# tastyware's unit-test rows in its requested field order
TW_QUOTE = ["SPY", 0, 0, 0, 0, "Q", 0, "Q", 576.88, 576.9, 200.0, 300.0]
TW_QUOTE_FIELDS = [
    "eventSymbol", "eventTime", "sequence", "timeNanoPart", "bidTime", "bidExchangeCode",
    "askTime", "askExchangeCode", "bidPrice", "askPrice", "bidSize", "askSize",
]  # fmt: skip
TW_SUMMARY = [
    "SPY",
    0,
    0,
    "foo",
    0,
    "bar",
    0,
    "-Infinity",
    "Infinity",
    "NaN",
    "NaN",
    "NaN",
    "Infinity",
]
TW_SUMMARY_FIELDS = [
    "eventSymbol", "eventTime", "dayId", "dayClosePriceType", "prevDayId",
    "prevDayClosePriceType", "openInterest", "dayOpenPrice", "dayHighPrice", "dayLowPrice",
    "dayClosePrice", "prevDayClosePrice", "prevDayVolume",
]  # fmt: skip


def decoder(**fields: list[str]) -> Decoder:
    d = Decoder()
    d.fields.configure({"eventFields": fields})
    return d


def feed(d: Decoder, frame: bytes | list[object], recv: int = RECV):  # type: ignore[no-untyped-def]
    data = orjson.loads(frame)["data"] if isinstance(frame, bytes) else frame
    return d.feed_data(data, recv)


def rows(out, kind: Kind) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    batch = out.batches.get(kind)
    return [] if batch is None else batch.to_pylist()


def test_official_trade_frame_updates_last_trade_with_exponents_and_nan() -> None:
    d = decoder(Trade=OFFICIAL_TRADE_FIELDS)
    out = feed(d, OFFICIAL_TRADE)
    spy = d.last_trades["SPY"]
    assert (spy.price, spy.day_volume, spy.size) == (559.36, 13_743_299.0, 100.0)
    assert spy.ts_ns == RECV  # no time field: the receive time
    assert Kind.TRADE not in out.batches  # Trade is last-trade state, not the tape
    # the crypto pair has no canonical symbol: said, not silently dropped
    assert out.counts["unmapped_symbol"] == 1
    assert any("BTC/USD:CXTALP" in p for p in out.problems)


def test_every_run_of_a_message_is_decoded() -> None:
    d = decoder(
        Quote=["eventSymbol", "eventType", "bidPrice", "askPrice"],
        Trade=["eventSymbol", "eventType", "price", "size"],
    )
    out = feed(d, SPEC_TWO_RUNS)
    quotes = rows(out, Kind.QUOTE)
    assert [(q["symbol"], q["bid"], q["ask"]) for q in quotes] == [
        ("AAPL", 123.0, 124.0),
        ("AMZN", 321.0, 322.0),
    ]
    assert (d.last_trades["AAPL"].price, d.last_trades["AMZN"].size) == (321.0, 11.0)
    assert not out.problems


def test_the_servers_field_order_wins_over_the_requested_one() -> None:
    d = Decoder()
    d.fields.requested["Quote"] = ["eventSymbol", "bidPrice", "askPrice"]
    # before FEED_CONFIG: the requested order
    first = rows(feed(d, ["Quote", ["SPY", 1.0, 2.0]]), Kind.QUOTE)
    assert (first[0]["bid"], first[0]["ask"]) == (1.0, 2.0)
    # the server confirms another order (and a field we did not ask for)
    d.fields.configure(
        {"eventFields": {"Quote": ["askPrice", "eventSymbol", "bidSize", "bidPrice"]}}
    )
    second = rows(feed(d, ["Quote", [2.5, "SPY", 7.0, 2.25]]), Kind.QUOTE)
    assert (second[0]["bid"], second[0]["ask"], second[0]["bid_size"]) == (2.25, 2.5, 7.0)
    # a later FEED_CONFIG without eventFields keeps the confirmed order
    d.fields.configure({"dataFormat": "COMPACT"})
    third = rows(feed(d, ["Quote", [3.5, "SPY", 1.0, 3.25]]), Kind.QUOTE)
    assert (third[0]["bid"], third[0]["ask"]) == (3.25, 3.5)


def test_tastyware_quote_row_with_zero_times_uses_the_receive_time() -> None:
    d = decoder(Quote=TW_QUOTE_FIELDS)
    quote = rows(feed(d, ["Quote", TW_QUOTE]), Kind.QUOTE)[0]
    assert quote == {
        "ts_event": RECV,
        "ts_recv": RECV,
        "symbol": "SPY",
        "bid": 576.88,
        "bid_size": 200.0,
        "ask": 576.9,
        "ask_size": 300.0,
        "source": "tastytrade",
        "seq": 1,
    }


def test_quote_time_is_the_later_side_in_ns() -> None:
    d = decoder(Quote=["eventSymbol", "bidTime", "askTime", "timeNanoPart", "bidPrice", "askPrice"])
    quote = rows(
        feed(d, ["Quote", ["SPY", 1_795_000_000_100, 1_795_000_000_250, 7, 1.0, 2.0]]), Kind.QUOTE
    )
    assert quote[0]["ts_event"] == 1_795_000_000_250 * 1_000_000 + 7


def test_a_nan_size_is_missing_and_the_quote_keeps_its_prices() -> None:
    d = decoder(Quote=COMMUNITY_QUOTE_FIELDS[1:])
    out = feed(d, ["Quote", ["SPY", 600.1, 600.2, "NaN", 5.0, "QQQ", "NaN", 500.5, 3.0, 4.0]])
    spy, qqq = rows(out, Kind.QUOTE)
    assert (spy["bid"], spy["ask"], spy["bid_size"], spy["ask_size"]) == (600.1, 600.2, None, 5.0)
    assert (qqq["bid"], qqq["ask"]) == (None, 500.5)  # the bid side is absent


def test_summary_specials_parse_and_non_option_summaries_are_counted() -> None:
    d = decoder(Summary=TW_SUMMARY_FIELDS)
    out = feed(d, ["Summary", TW_SUMMARY])
    assert not out.problems and out.counts["summary_not_option"] == 1


def test_option_quotes_greeks_and_open_interest_merge_into_option_rows() -> None:
    d = decoder(
        Quote=COMMUNITY_QUOTE_FIELDS,
        Summary=["eventSymbol", "openInterest"],
        Greeks=["eventSymbol", "eventFlags", "index", "volatility", "delta", "gamma"],
        Trade=["eventSymbol", "price", "dayVolume"],
    )
    quotes = feed(d, COMMUNITY_SPXW)
    assert Kind.OPTION not in quotes.batches  # no open interest yet: waiting
    assert d.options.waiting == 3
    out = feed(
        d,
        [
            "Summary", [".SPXW241125P5990", 1200, ".SPXW241125P5980", "NaN"],
            "Greeks", [".SPXW241125P5990", 0, 5, 0.21, -0.35, 0.0021],
            "Trade", [".SPXW241125P5990", 10.6, 1.5E3],
        ],
    )  # fmt: skip
    (row,) = rows(out, Kind.OPTION)  # 5980 has no open interest, 5970 was not touched
    assert row == {
        "ts_event": RECV,
        "ts_recv": RECV,
        "symbol": "SPXW  241125P05990000",
        "underlying": "$SPX",
        "expiry": dt.date(2024, 11, 25),
        "strike": 5990.0,
        "right": "P",
        "bid": 10.5,
        "ask": 10.7,
        "last": 10.6,
        "volume": 1500.0,
        "open_interest": 1200.0,
        "iv": 0.21,
        "delta": -0.35,
        "gamma": 0.0021,
        "source": "tastytrade",
        "seq": 1,
    }
    # a NaN open interest (reset before the open) keeps the last known one
    later = feed(d, ["Summary", [".SPXW241125P5990", "NaN"]])
    assert rows(later, Kind.OPTION)[0]["open_interest"] == 1200.0
    assert rows(later, Kind.OPTION)[0]["seq"] == 2


def test_full_format_on_a_compact_channel_is_decoded() -> None:
    d = Decoder()
    out = feed(
        d,
        [
            {"eventType": "Quote", "eventSymbol": "AAPL", "bidPrice": 123, "askPrice": 124},
            {"eventType": "Quote", "eventSymbol": "AAPL", "bidPrice": "NaN", "askPrice": 321},
        ],
    )
    first, second = rows(out, Kind.QUOTE)
    assert (first["bid"], first["ask"], second["ask"]) == (123.0, 124.0, 321.0)
    assert second["bid"] is None and first["bid_size"] is None


def test_a_nested_header_declares_its_fields() -> None:
    d = Decoder()
    out = feed(d, [["Quote", ["eventSymbol", "askPrice", "bidPrice"]], ["SPY", 2.0, 1.0]])
    assert rows(out, Kind.QUOTE)[0]["bid"] == 1.0
    # and the declaration holds for the plain header that follows
    again = feed(d, ["Quote", ["SPY", 3.0, 2.5]])
    assert rows(again, Kind.QUOTE)[0]["ask"] == 3.0


def test_a_broken_run_is_reported_and_the_others_still_decode() -> None:
    d = decoder(Quote=["eventSymbol", "bidPrice", "askPrice"])
    out = feed(
        d,
        [
            "Quote",
            ["SPY", 1.0, 2.0, "QQQ", 3.0],
            "Quote",
            ["IWM", 4.0, 5.0],
            "Quote",
            ["DIA", "abc", 1.0],
        ],
    )
    assert [q["symbol"] for q in rows(out, Kind.QUOTE)] == ["IWM"]
    assert len(out.problems) == 2
    assert "5 values are not whole events of 3 fields" in out.problems[0]
    assert "not a number: 'abc'" in out.problems[1]


@pytest.mark.parametrize(
    "data",
    [
        [],
        "Quote",
        [42, ["SPY"]],
        ["Quote"],
        ["Quote", "SPY"],
    ],
)
def test_shapes_that_are_not_feed_data_are_problems_not_crashes(data: object) -> None:
    out = Decoder().feed_data(data, RECV)
    assert out.problems and not out.batches


def test_an_unknown_event_type_is_counted_and_skipped() -> None:
    d = decoder(Quote=["eventSymbol", "bidPrice", "askPrice"])
    out = feed(d, ["Profile", ["SPY", "S&P 500 ETF"], "Quote", ["SPY", 1.0, 2.0]])
    assert out.counts["unknown_event_type"] == 1 and out.counts["unknown_event_type.Profile"] == 1
    assert len(rows(out, Kind.QUOTE)) == 1 and not out.problems


def test_indices_past_2_to_the_53_stay_exact() -> None:
    fields = FeedFields({"Candle": ["eventSymbol", "index"]})
    (run,) = decode_feed_data(
        orjson.loads(b'["Candle",["SPY{=1d}",7249535658098966529]]'), fields
    ).runs
    assert run.columns["index"] == [7_249_535_658_098_966_529]


def test_seq_counts_per_kind_and_symbol_and_resumes() -> None:
    d = decoder(Quote=["eventSymbol", "bidPrice", "askPrice"])
    d.resume({(Kind.QUOTE, "SPY"): (41, 0)}, None)
    out = feed(d, ["Quote", ["SPY", 1.0, 2.0, "QQQ", 1.0, 2.0, "SPY", 1.5, 2.0]])
    assert [(q["symbol"], q["seq"]) for q in rows(out, Kind.QUOTE)] == [
        ("SPY", 42),
        ("QQQ", 1),
        ("SPY", 43),
    ]
    again = feed(d, ["Quote", ["QQQ", 1.0, 2.0]])
    assert rows(again, Kind.QUOTE)[0]["seq"] == 2


def test_decoded_batches_fit_the_event_model() -> None:
    d = decoder(
        Quote=COMMUNITY_QUOTE_FIELDS, Summary=["eventSymbol", "openInterest"],
        TimeAndSale=["eventSymbol", "time", "index", "price", "size", "aggressorSide"],
    )  # fmt: skip
    feed(d, COMMUNITY_SPXW)
    out = feed(
        d,
        [
            "Summary",
            [".SPXW241125P5990", 10],
            "TimeAndSale",
            ["SPY", 1_795_000_000_000, 1, 600.0, 3, "BUY"],
        ],
    )
    for kind, batch in out.batches.items():
        assert batch.schema.equals(SCHEMAS[kind]), kind
        assert isinstance(batch, pa.RecordBatch)
