"""The streamer parser on real Schwab frames: merged quotes, derived trades, options,
futures, books and bars carry exactly the values the frames hold."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import orjson
import pytest

from tickpipe.errors import ParseError
from tickpipe.events import Kind
from tickpipe.sources.schwab.parse import Decoded, Response, StreamParser

from . import frames

MS = 1_000_000
RECV = 1_765_400_000_000 * MS


def rows(decoded: Decoded, kind: Kind) -> list[dict[str, Any]]:
    batch = decoded.batches.get(kind)
    return [] if batch is None else batch.to_pylist()


def delta(service: str, timestamp: int, **content: Any) -> str:
    item = {k.removeprefix("f"): v for k, v in content.items()}
    return orjson.dumps(
        {
            "data": [
                {"service": service, "timestamp": timestamp, "command": "SUBS", "content": [item]}
            ]
        }
    ).decode()


def test_login_heartbeat_acknowledgements_and_admin_notices() -> None:
    parser = StreamParser()
    login = parser.parse(frames.LOGIN_OK, RECV)
    assert (
        login.responses == [Response("ADMIN", "LOGIN", "1", 0, "server=s3081dc7-2;status=NP")]
        and not login.batches
    )
    assert parser.parse(frames.HEARTBEAT, RECV).heartbeats == 1
    assert parser.parse(frames.SUBS_OK, RECV).responses[0].code == 0
    assert parser.parse(frames.LOGIN_DENIED, RECV).responses[0].code == 3
    notice = parser.parse(frames.STOP_STREAMING, RECV).responses
    assert notice == [Response("ADMIN", "", "", 30, "Stop streaming due to empty subscription")]


def test_the_first_message_of_a_symbol_is_a_quote_never_a_trade() -> None:
    decoded = StreamParser().parse(frames.AAPL_FIRST, RECV)
    assert rows(decoded, Kind.TRADE) == []
    [quote] = rows(decoded, Kind.QUOTE)
    assert (quote["bid"], quote["bid_size"], quote["ask"], quote["ask_size"]) == (
        233.22,
        1,
        233.33,
        3,
    )
    assert quote["ts_event"] == 1755118704147 * MS and quote["ts_recv"] == RECV
    assert quote["symbol"] == "AAPL" and quote["seq"] == 1
    assert decoded.unknown_fields == 0  # field 10 (high) is known, just not used


def test_a_delta_merges_into_the_quote_and_the_volume_rise_is_the_trade_size() -> None:
    parser = StreamParser()
    parser.parse(frames.AAPL_FIRST, RECV)
    decoded = parser.parse(frames.AAPL_DELTA, RECV)
    [quote] = rows(decoded, Kind.QUOTE)
    # the bid size (field 4) was not in the delta: it stays 1 from the first message
    assert (quote["bid"], quote["bid_size"], quote["ask"], quote["ask_size"]) == (
        233.33,
        1,
        233.39,
        1,
    )
    assert quote["seq"] == 2
    [trade] = rows(decoded, Kind.TRADE)
    assert trade["price"] == 233.34 and trade["size"] == 69784498 - 69783235
    assert trade["ts_event"] == 1755118712559 * MS and trade["seq"] == 1


def test_a_same_price_trade_arriving_as_a_volume_only_delta_is_a_trade() -> None:
    parser = StreamParser()
    parser.parse(frames.AAPL_FIRST, RECV)
    decoded = parser.parse(delta("LEVELONE_EQUITIES", 1755118705000, key="AAPL", f8=69783335), RECV)
    assert rows(decoded, Kind.QUOTE) == []
    [trade] = rows(decoded, Kind.TRADE)
    assert (trade["price"], trade["size"], trade["ts_event"]) == (233.3, 100, 1755118705000 * MS)


def test_a_resent_snapshot_after_a_reconnect_invents_no_trade() -> None:
    parser = StreamParser()
    parser.parse(frames.AAPL_FIRST, RECV)
    parser.parse(frames.AAPL_DELTA, RECV)
    parser.new_connection()
    # volume moved while we were away, the rest is what we already hold
    snapshot = delta(
        "LEVELONE_EQUITIES",
        1755118790000,
        key="AAPL",
        f1=233.33,
        f2=233.39,
        f3=233.34,
        f4=1,
        f5=1,
        f8=69785000,
    )
    again = parser.parse(snapshot, RECV)
    assert rows(again, Kind.TRADE) == [] and rows(again, Kind.QUOTE) == []
    after = parser.parse(delta("LEVELONE_EQUITIES", 1755118791000, key="AAPL", f8=69785100), RECV)
    assert [(t["price"], t["size"]) for t in rows(after, Kind.TRADE)] == [(233.34, 100)]


def test_quote_and_trade_times_come_from_their_fields_when_sent() -> None:
    parser = StreamParser()
    first = parser.parse(frames.MSFT_FULL, RECV)
    [quote] = rows(first, Kind.QUOTE)
    assert quote["ts_event"] == 1715777955574 * MS
    assert (quote["bid"], quote["bid_size"], quote["ask"], quote["ask_size"]) == (
        417.01,
        1,
        417.08,
        0,
    )
    assert parser.delayed == {"MSFT": True}
    later = parser.parse(
        delta(
            "LEVELONE_EQUITIES",
            1715777961000,
            key="MSFT",
            f3=417.1,
            f8=162760,
            f9=10,
            f35=1715777960000,
        ),
        RECV,
    )
    [trade] = rows(later, Kind.TRADE)
    assert (trade["price"], trade["size"], trade["ts_event"]) == (417.1, 10, 1715777960000 * MS)
    assert trade["exchange"] == "XBOS"  # last MIC (41) of the snapshot, unchanged since


def test_equity_sizes_in_lots_can_be_scaled_to_shares() -> None:
    [quote] = rows(
        StreamParser(equity_size_multiplier=100).parse(frames.MSFT_FULL, RECV), Kind.QUOTE
    )
    assert (quote["bid_size"], quote["ask_size"]) == (100, 0)


def test_level_one_option_becomes_an_option_quote_with_iv_as_a_fraction() -> None:
    decoded = StreamParser().parse(frames.GOOG_OPTION, RECV)
    [option] = rows(decoded, Kind.OPTION)
    assert option["symbol"] == "GOOG  240517C00070000" and option["underlying"] == "GOOG"
    assert (option["expiry"], option["strike"], option["right"]) == (dt.date(2024, 5, 17), 70, "C")
    assert (option["bid"], option["ask"], option["last"]) == (102.15, 103.75, 103.07)
    assert (option["volume"], option["open_interest"]) == (0, 5)
    assert option["iv"] == pytest.approx(3.5499208367)
    assert (option["delta"], option["gamma"]) == (0.99961827, 2.799e-05)
    assert option["ts_event"] == 1715786878997 * MS
    assert rows(decoded, Kind.TRADE) == [] and rows(decoded, Kind.QUOTE) == []
    assert decoded.unknown_fields == 0


def test_an_spxw_option_belongs_to_the_spx_index_and_missing_greeks_are_nan() -> None:
    [option] = rows(StreamParser().parse(frames.SPXW_OPTION, RECV), Kind.OPTION)
    assert option["underlying"] == "$SPX"
    assert (option["expiry"], option["strike"], option["right"]) == (
        dt.date(2025, 12, 8),
        6880,
        "C",
    )
    assert (option["bid"], option["ask"], option["last"], option["volume"]) == (
        10.2,
        10.6,
        10.6,
        7961,
    )
    assert math.isnan(option["iv"]) and math.isnan(option["delta"]) and math.isnan(option["gamma"])
    assert option["open_interest"] == 0 and option["ts_event"] == 1765082498588 * MS


def test_futures_quote_then_trade_with_exchange_times() -> None:
    parser = StreamParser()
    [quote] = rows(parser.parse(frames.CL_FUTURE, RECV), Kind.QUOTE)
    assert quote["symbol"] == "/CL" and quote["ts_event"] == 1719002948817 * MS
    assert (quote["bid"], quote["bid_size"], quote["ask"], quote["ask_size"]) == (
        80.61,
        2,
        80.62,
        14,
    )
    later = parser.parse(
        delta("LEVELONE_FUTURES", 1719002952000, key="/CL", f3=80.61, f8=270917, f11=1719002951000),
        RECV,
    )
    [trade] = rows(later, Kind.TRADE)
    assert (trade["price"], trade["size"], trade["ts_event"]) == (80.61, 1, 1719002951000 * MS)
    assert trade["exchange"] == "XNYM"


def test_futures_option_takes_its_terms_from_the_fields_and_accepts_ascii_code_ids() -> None:
    decoded = StreamParser().parse(frames.ES_FUTURE_OPTION, RECV)
    assert decoded.rejects == []
    [option] = rows(decoded, Kind.OPTION)
    assert option["symbol"] == "./E3DM24P5490" and option["underlying"] == "/ESM24"
    # 1718856000000 ms is 2024-06-20 00:00 in New York
    assert (option["expiry"], option["strike"], option["right"]) == (
        dt.date(2024, 6, 20),
        5490,
        "P",
    )
    assert (option["bid"], option["ask"], option["last"]) == (9.6, 9.7, 9.7)
    assert (option["volume"], option["open_interest"]) == (959, 524)
    assert math.isnan(option["iv"])


def test_a_book_snapshot_is_one_row_per_level_and_vanished_levels_go_to_size_zero() -> None:
    parser = StreamParser()
    book = rows(parser.parse(frames.NYSE_BOOK, RECV), Kind.BOOK)
    assert [(r["side"], r["level"], r["price"], r["size"], r["orders"]) for r in book] == [
        ("B", 0, 13.12, 31600, 9),
        ("B", 1, 13.11, 900, 2),
        ("A", 0, 13.13, 76300, 14),
        ("A", 1, 13.26, 27600, 1),
    ]
    assert {r["ts_event"] for r in book} == {1765306322349 * MS} and [r["seq"] for r in book] == [
        1,
        2,
        3,
        4,
    ]
    smaller = {"1": 1765306323349, "2": [{"0": 13.12, "1": 100, "2": 1}], "3": [], "key": "F"}
    shrunk = rows(parser.parse(delta("NYSE_BOOK", 1765306324000, **smaller), RECV), Kind.BOOK)
    assert [(r["side"], r["level"], r["price"], r["size"]) for r in shrunk] == [
        ("B", 0, 13.12, 100),
        ("B", 1, 13.11, 0),
        ("A", 0, 13.13, 0),
        ("A", 1, 13.26, 0),
    ]


def test_chart_messages_are_one_minute_bars_and_a_repeat_is_not_a_new_bar() -> None:
    parser = StreamParser()
    [amd] = rows(parser.parse(frames.CHART_EQUITY, RECV), Kind.BAR)
    assert (amd["symbol"], amd["ts_event"], amd["interval_s"]) == ("AMD", 1765307100000 * MS, 60)
    # field 1 is a sequence (the guide's table is wrong): the open is field 2
    assert (amd["open"], amd["high"], amd["low"], amd["close"], amd["volume"]) == (
        221.133,
        221.18,
        221.02,
        221.02,
        11730,
    )
    [es] = rows(parser.parse(frames.CHART_FUTURES, RECV), Kind.BAR)
    assert (es["ts_event"], es["open"], es["high"], es["low"], es["close"], es["volume"]) == (
        1765307160000 * MS,
        6858.25,
        6858.75,
        6857.75,
        6858.5,
        897,
    )
    assert rows(parser.parse(frames.CHART_FUTURES, RECV), Kind.BAR) == []


def test_frames_that_are_not_json_objects_raise_with_their_raw_text() -> None:
    for raw in ('{"data": [', "[1, 2]"):
        with pytest.raises(ParseError) as caught:
            StreamParser().parse(raw, RECV)
        assert caught.value.raw == raw


def test_an_unknown_service_is_rejected_with_its_text_and_the_rest_of_the_frame_parses() -> None:
    frame = orjson.loads(frames.AAPL_FIRST)
    frame["data"].insert(
        0, {"service": "TIMESALE_EQUITY", "timestamp": 1, "content": [{"key": "X"}]}
    )
    decoded = StreamParser().parse(orjson.dumps(frame), RECV)
    [reject] = decoded.rejects
    assert "TIMESALE_EQUITY" in reject.reason and "TIMESALE_EQUITY" in reject.raw
    assert [q["bid"] for q in rows(decoded, Kind.QUOTE)] == [233.22]


def test_unknown_fields_are_counted_and_ignored() -> None:
    frame = orjson.loads(frames.AAPL_FIRST)
    frame["data"][0]["content"][0]["99"] = 1.5
    decoded = StreamParser().parse(orjson.dumps(frame), RECV)
    assert decoded.unknown_fields == 1 and [q["ask"] for q in rows(decoded, Kind.QUOTE)] == [233.33]


def test_an_item_with_a_wrong_type_is_rejected_and_leaves_the_merged_state_alone() -> None:
    parser = StreamParser()
    parser.parse(frames.AAPL_FIRST, RECV)
    bad = parser.parse(
        delta("LEVELONE_EQUITIES", 1755118705000, key="AAPL", f1=233.5, f2="x"), RECV
    )
    [reject] = bad.rejects
    assert reject.symbol == "AAPL" and "field 2" in reject.reason and '"x"' in reject.raw
    assert not bad.batches.get(Kind.QUOTE)
    assert parser.merged("LEVELONE_EQUITIES", "AAPL")["bid"] == 233.22
    nulls = parser.parse(
        delta("LEVELONE_EQUITIES", 1755118706000, key="AAPL", f1=None, f2=233.4), RECV
    )
    assert nulls.rejects == [] and rows(nulls, Kind.QUOTE)[0]["bid"] == 233.22  # null: no value
    no_key = parser.parse(delta("LEVELONE_EQUITIES", 1755118705000, f1=1.0), RECV)
    assert "without a key" in no_key.rejects[0].reason


def test_sequence_numbers_continue_from_the_last_run() -> None:
    parser = StreamParser()
    parser.resume({(Kind.QUOTE, "AAPL"): (41, 0), (Kind.TRADE, "AAPL"): (7, 0)})
    parser.parse(frames.AAPL_FIRST, RECV)
    decoded = parser.parse(frames.AAPL_DELTA, RECV)
    assert rows(decoded, Kind.QUOTE)[0]["seq"] == 43 and rows(decoded, Kind.TRADE)[0]["seq"] == 8
