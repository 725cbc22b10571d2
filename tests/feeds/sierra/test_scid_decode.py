"""The .scid decoder on records written byte by byte from Sierra Chart's documented layout."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pyarrow as pa
import pytest

from tickpipe.events import SCHEMAS, Kind, TradeFlag
from tickpipe.sources.sierra import scid

from .scidfile import FIRST_SUB, LAST_SUB, SAMPLE, Rec, header, sc_time, tick, unix_ns

RECV = 1_800_000_000_000_000_000


def decode(
    records: list[Rec], tick_size: float | None = 0.25, first_index: int = 0
) -> scid.Decoded:
    data = b"".join(r.pack() for r in records)
    return scid.decode(
        scid.as_records(data),
        symbol="/ESH23",
        first_index=first_index,
        recv_ns=RECV,
        tick_size=tick_size,
    )


def rows(decoded: scid.Decoded, kind: Kind) -> list[dict[str, object]]:
    batch = decoded.batches.get(kind)
    return [] if batch is None else batch.to_pylist()


def test_the_public_sample_decodes_to_its_trades_with_side_markers_and_quotes() -> None:
    decoded = decode(SAMPLE)
    trades = rows(decoded, Kind.TRADE)
    assert [t["price"] for t in trades] == [
        4048.0, 4048.0, 4047.5, 4047.75, 4047.75, 4048.0, 4047.0, 4048.0, 4048.5, 4048.25
    ]  # fmt: skip
    assert [t["aggressor"] for t in trades] == ["S"] * 6 + ["B", "B"] + ["S", "S"]
    assert [t["flags"] for t in trades] == [
        0, 0, 0, TradeFlag.FIRST_SUB_TRADE, TradeFlag.LAST_SUB_TRADE, 0, 0, 0, 0, 0
    ]  # fmt: skip
    assert [t["seq"] for t in trades] == list(range(1, 11))
    assert {t["size"] for t in trades} == {1.0}
    first = dt.datetime(2023, 2, 21, 20, 37, 19, 26_000, tzinfo=dt.UTC)
    assert trades[0]["ts_event"] == unix_ns(first) == 1_677_011_839_026_000_000
    assert trades[0]["ts_recv"] == RECV and trades[0]["symbol"] == "/ESH23"
    # the µs counter of two records in one millisecond survives as 1 µs apart
    assert trades[4]["ts_event"] - trades[3]["ts_event"] == 1_000
    assert trades[9]["ts_event"] - trades[8]["ts_event"] == 1_000
    quotes = rows(decoded, Kind.QUOTE)
    assert [(q["bid"], q["ask"]) for q in quotes][:3] == [
        (4048.0, 4048.75), (4048.0, 4048.25), (4047.5, 4048.25)
    ]  # fmt: skip
    assert [q["seq"] for q in quotes] == list(range(1, 11))
    # a trade's Bid/AskVolume split its own volume: they are no quote sizes
    assert {(q["bid_size"], q["ask_size"]) for q in quotes} == {(0.0, 0.0)}
    assert Kind.BAR not in decoded.batches
    assert decoded.bad == [] and decoded.skipped == 0


def test_a_trade_below_its_own_bid_is_kept_as_recorded() -> None:
    trades = rows(decode(SAMPLE[-1:]), Kind.TRADE)
    quotes = rows(decode(SAMPLE[-1:]), Kind.QUOTE)
    assert trades[0]["price"] == 4048.25 and quotes[0]["bid"] == 4048.5


def test_bar_records_become_bars_not_trades() -> None:
    t0 = sc_time(dt.datetime(2025, 11, 26, 14, 30, tzinfo=dt.UTC))
    bar = Rec(t0, 6000.25, 6001.5, 5999.75, 6000.75, 42, 130, 60, 70)
    decoded = decode([bar, tick(t0 + 60_000_000, 6000.5, 6000.25, 6000.5)])
    (b,) = rows(decoded, Kind.BAR)
    assert (b["open"], b["high"], b["low"], b["close"]) == (6000.25, 6001.5, 5999.75, 6000.75)
    assert (b["volume"], b["trades"], b["bid_volume"], b["ask_volume"]) == (130, 42, 60, 70)
    assert b["seq"] == 1 and b["ts_event"] == unix_ns(
        dt.datetime(2025, 11, 26, 14, 30, tzinfo=dt.UTC)
    )
    assert [t["seq"] for t in rows(decoded, Kind.TRADE)] == [2]


def test_a_bid_ask_only_record_is_a_quote_with_its_sizes() -> None:
    t0 = sc_time(dt.datetime(2025, 11, 26, 14, 30, tzinfo=dt.UTC))
    update = Rec(t0, 0.0, 6000.5, 6000.25, 0.0, 1, 0, 12, 9)
    decoded = decode([update])
    assert Kind.TRADE not in decoded.batches
    (q,) = rows(decoded, Kind.QUOTE)
    assert (q["bid"], q["bid_size"], q["ask"], q["ask_size"]) == (6000.25, 12.0, 6000.5, 9.0)


def test_float32_noise_is_rounded_to_the_tick() -> None:
    t0 = sc_time(dt.datetime(2025, 1, 2, tzinfo=dt.UTC))
    # 1.1234 is no float32: it is stored as 1.12339997...
    decoded = decode([tick(t0, 1.1234, 1.1233, 1.1235)], tick_size=0.0001)
    (t,) = rows(decoded, Kind.TRADE)
    assert struct.unpack("<f", struct.pack("<f", 1.1234))[0] != 1.1234
    assert t["price"] == 1.1234
    (q,) = rows(decoded, Kind.QUOTE)
    assert (q["bid"], q["ask"]) == (1.1233, 1.1235)
    # without a tick size: 7 significant digits, what a float32 holds
    (t,) = rows(decode([tick(t0, 1.1234, 1.1233, 1.1235)], tick_size=None), Kind.TRADE)
    assert t["price"] == 1.1234


def test_empty_records_are_skipped_and_absurd_times_are_rejected_with_their_bytes() -> None:
    t0 = sc_time(dt.datetime(2025, 1, 2, tzinfo=dt.UTC))
    empty = Rec(0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0)
    absurd = tick(123, 6000.0, 5999.75, 6000.0)
    future = tick(sc_time(dt.datetime(2150, 1, 1, tzinfo=dt.UTC)), 6000.0, 5999.75, 6000.0)
    decoded = decode([tick(t0, 6000.0, 5999.75, 6000.0), empty, absurd, future], first_index=100)
    assert [t["seq"] for t in rows(decoded, Kind.TRADE)] == [101]
    assert decoded.skipped == 1
    (bad,) = decoded.bad
    assert bad.indices.tolist() == [102, 103]
    assert bad.raw[0] == absurd.pack()
    assert "1970 and 2100" in bad.reason


def test_old_files_with_ole_double_times_decode_to_the_same_instant() -> None:
    when = dt.datetime(2009, 3, 2, 15, 0, 1, 250_000, tzinfo=dt.UTC)
    days = (when - dt.datetime(1899, 12, 30, tzinfo=dt.UTC)).total_seconds() / 86_400
    raw = struct.unpack("<q", struct.pack("<d", days))[0]
    (t,) = rows(decode([tick(raw, 750.0, 749.75, 750.0)]), Kind.TRADE)
    assert t["ts_event"] == unix_ns(when)


def test_counts_beyond_int_max_read_as_zero_as_sierra_fixes_them() -> None:
    t0 = sc_time(dt.datetime(2025, 1, 2, tzinfo=dt.UTC))
    garbage = Rec(t0, 0.0, 6000.25, 6000.0, 6000.0, 1, 2**32 - 5, 0, 0)
    decoded = decode([garbage])
    assert Kind.TRADE not in decoded.batches  # no volume: no trade
    assert len(rows(decoded, Kind.QUOTE)) == 1


def test_markers_are_recognised_within_float_tolerance() -> None:
    t0 = sc_time(dt.datetime(2025, 1, 2, tzinfo=dt.UTC))
    near_first = float(np.nextafter(np.float32(FIRST_SUB), np.float32(0)))
    decoded = decode(
        [
            tick(t0, 10.0, 9.75, 10.0, marker=near_first),
            tick(t0 + 1, 10.0, 9.75, 10.0, marker=LAST_SUB),
        ]
    )
    assert [t["flags"] for t in rows(decoded, Kind.TRADE)] == [1, 2]
    assert Kind.BAR not in decoded.batches


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04" + b"\0" * 60, "not a Sierra Chart .scid file"),
        (b"SCID\x38\x00", "cut short"),
        (header(header_size=40), "header size 40"),
        (header(record_size=32), "record size 32"),
    ],
)
def test_a_header_that_is_not_a_readable_scid_gets_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(scid.ScidError, match=message):
        scid.parse_header(data, where="x.scid")


def test_a_longer_header_is_accepted_and_its_size_used() -> None:
    parsed = scid.parse_header(header(header_size=64) + b"\0" * 8)
    assert parsed.header_size == 64 and parsed.record_size == 40


def test_every_kind_is_built_by_column_name_in_its_schema_order() -> None:
    """Ticks, a bid/ask-only record and a bar: each batch has exactly its kind's schema,
    and a column missing from the decoder's list is refused, not shifted into another."""
    t0 = sc_time(dt.datetime(2025, 11, 26, 15, tzinfo=dt.UTC))
    decoded = decode([*SAMPLE, Rec(t0, 6000.0, 6001.0, 5999.5, 6000.75, 40, 120, 55, 65)])
    assert set(decoded.batches) == {Kind.TRADE, Kind.QUOTE, Kind.BAR}
    for kind, batch in decoded.batches.items():
        assert batch.schema.equals(SCHEMAS[kind], check_metadata=True)
    (bar,) = rows(decoded, Kind.BAR)
    assert (bar["open"], bar["close"], bar["trades"], bar["bid_volume"]) == (
        6000.0,
        6000.75,
        40,
        55.0,
    )
    with pytest.raises(ValueError, match="do not match its schema"):
        scid._batch(Kind.QUOTE, ts_event=pa.array([1]))
