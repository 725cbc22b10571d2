"""TimeAndSale and Greeks flags: snapshots, pending transactions, removals, re-sent snapshots."""

from __future__ import annotations

from typing import Any

from tickpipe.events import Kind
from tickpipe.sources.tastytrade.decoder import Decoder, Output

RECV = 1_795_000_100_000_000_000
T0 = 1_795_000_000_000  # ms
TNS = ["eventSymbol", "eventFlags", "index", "time", "price", "size", "aggressorSide", "type"]
BEGIN, END, PENDING, REMOVE = 0x04, 0x08, 0x01, 0x02


def index(ms: int, n: int = 0) -> int:
    return ((ms // 1000) << 32) | ((ms % 1000) << 22) | n


def tns(
    symbol: str, ms: int, price: float, flags: int = 0, side: str = "BUY", kind: str = "NEW"
) -> list[Any]:
    return [symbol, flags, index(ms), ms, price, 100.0, side, kind]


def decoder() -> Decoder:
    d = Decoder()
    d.fields.configure({"eventFields": {"TimeAndSale": TNS}})
    return d


def prints(out: Output) -> list[tuple[str, float]]:
    batch = out.batches.get(Kind.TRADE)
    return [] if batch is None else [(r["symbol"], r["price"]) for r in batch.to_pylist()]


def snapshot(symbol: str, *prices: float) -> list[Any]:
    """A tape snapshot as dxFeed sends it: newest first, BEGIN on the first, END on the last."""
    values: list[Any] = []
    n = len(prices)
    for i, price in enumerate(reversed(prices)):
        flags = (BEGIN if i == 0 else 0) | (END if i == n - 1 else 0)
        values += tns(symbol, T0 + (n - 1 - i) * 1000, price, flags)
    return values


def test_a_snapshot_is_applied_whole_and_oldest_first() -> None:
    d = decoder()
    values = snapshot("SPY", 1.0, 2.0, 3.0)
    # split across two messages: nothing comes out until SNAPSHOT_END
    assert prints(d.feed_data(["TimeAndSale", values[:16]], RECV)) == []
    out = d.feed_data(["TimeAndSale", values[16:]], RECV)
    assert prints(out) == [("SPY", 1.0), ("SPY", 2.0), ("SPY", 3.0)]
    assert out.tape_moved and d.tape.stats.snapshots == 1


def test_a_snapshot_re_sent_after_a_reconnect_adds_only_new_prints() -> None:
    d = decoder()
    d.feed_data(["TimeAndSale", snapshot("SPY", 1.0, 2.0)], RECV)
    live = d.feed_data(["TimeAndSale", tns("SPY", T0 + 2000, 2.5)], RECV)
    assert prints(live) == [("SPY", 2.5)]
    d.new_connection()
    d.fields.configure({"eventFields": {"TimeAndSale": TNS}})  # negotiated again
    # the server's recent tape again, with one print made while we were away
    again = d.feed_data(["TimeAndSale", snapshot("SPY", 1.0, 2.0, 2.5, 2.75)], RECV)
    assert prints(again) == [("SPY", 2.75)]
    assert d.tape.stats.duplicates == 3


def test_a_restart_resumes_the_tape_from_the_checkpoint() -> None:
    first = decoder()
    first.feed_data(["TimeAndSale", snapshot("SPY", 1.0, 2.0)], RECV)
    second = decoder()
    second.resume({}, first.checkpoint())
    out = second.feed_data(["TimeAndSale", snapshot("SPY", 1.0, 2.0, 3.0)], RECV)
    assert prints(out) == [("SPY", 3.0)]


def test_an_empty_snapshot_is_a_state_change_not_a_trade() -> None:
    d = decoder()
    out = d.feed_data(["TimeAndSale", ["SPY", 14, 0, 0, "NaN", "NaN", None, None]], RECV)
    assert prints(out) == [] and not out.problems
    assert d.tape.stats.removed == 1 and not d.tape.open


def test_pending_events_wait_for_the_end_of_their_transaction() -> None:
    d = decoder()
    held = d.feed_data(["TimeAndSale", tns("SPY", T0, 1.0, PENDING) + tns("QQQ", T0, 9.0)], RECV)
    assert prints(held) == [("QQQ", 9.0)]  # other symbols are not held up
    out = d.feed_data(["TimeAndSale", tns("SPY", T0 + 1, 1.1)], RECV)
    assert prints(out) == [("SPY", 1.0), ("SPY", 1.1)]


def test_a_removed_print_is_not_a_trade() -> None:
    d = decoder()
    out = d.feed_data(["TimeAndSale", tns("SPY", T0, 1.0, REMOVE) + tns("SPY", T0 + 1, 1.1)], RECV)
    assert prints(out) == [("SPY", 1.1)]
    assert d.tape.stats.removed == 1


def test_trade_fields_map_to_the_event_model() -> None:
    d = Decoder()
    d.fields.configure(
        {
            "eventFields": {
                "TimeAndSale": [
                    "eventSymbol", "time", "timeNanoPart", "index", "exchangeCode", "price",
                    "size", "exchangeSaleConditions", "aggressorSide",
                ]
            }
        }
    )  # fmt: skip
    out = d.feed_data(
        [
            "TimeAndSale",
            [
                *["SPY", T0, 250, index(T0), "Q", 600.01, 200, "@", "SELL"],
                *["SPY", T0 + 5, 0, index(T0 + 5), "", 600.02, "NaN", "", "UNDEFINED"],
            ],
        ],
        RECV,
    )
    first, second = out.batches[Kind.TRADE].to_pylist()
    assert first == {
        "ts_event": T0 * 1_000_000 + 250,
        "ts_recv": RECV,
        "symbol": "SPY",
        "price": 600.01,
        "size": 200.0,
        "source": "tastytrade",
        "seq": 1,
        "exchange": "Q",
        "conditions": "@",
        "aggressor": "S",
        "flags": None,
    }
    assert (second["exchange"], second["conditions"], second["aggressor"]) == (None, None, None)
    assert second["seq"] == 2


def test_cancels_are_kept_aside_and_corrections_are_prints() -> None:
    d = decoder()
    out = d.feed_data(
        [
            "TimeAndSale",
            tns("SPY", T0, 1.0, kind="CANCEL") + tns("SPY", T0 + 1, 1.1, kind="CORRECTION"),
        ],
        RECV,
    )
    assert prints(out) == [("SPY", 1.1)]
    assert [(c["symbol"], c["price"]) for c in out.cancels] == [("SPY", 1.0)]
    assert out.counts["trade_cancels"] == 1 and out.counts["trade_corrections"] == 1


def test_a_greeks_snapshot_leaves_the_latest_greeks() -> None:
    d = Decoder()
    d.fields.configure(
        {
            "eventFields": {
                "Greeks": ["eventSymbol", "eventFlags", "index", "volatility", "delta", "gamma"],
                "Quote": ["eventSymbol", "bidPrice", "askPrice"],
                "Summary": ["eventSymbol", "openInterest"],
            }
        }
    )
    option = ".SPY251219C600"
    d.feed_data(["Quote", [option, 1.0, 1.2], "Summary", [option, 50]], RECV)
    out = d.feed_data(
        [
            "Greeks",
            [
                option,
                BEGIN,
                30,
                0.30,
                0.5,
                0.01,
                option,
                0,
                20,
                0.20,
                0.4,
                0.02,
                option,
                END,
                10,
                0.10,
                0.3,
                0.03,
            ],
        ],
        RECV,
    )
    (row,) = out.batches[Kind.OPTION].to_pylist()
    assert (row["iv"], row["delta"], row["gamma"]) == (0.30, 0.5, 0.01)
