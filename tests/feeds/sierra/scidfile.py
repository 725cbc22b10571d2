"""Writing .scid files byte by byte from Sierra Chart's documented layout, for the tests.

Independent of the reader under test: plain ``struct`` with the formats of the fact sheet
(header ``<4sIIHHI36s``, record ``<qffffIIII``), not the decoder's numpy dtype.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
from pathlib import Path

HEADER = struct.Struct("<4sIIHHI36s")
RECORD = struct.Struct("<qffffIIII")
FIRST_SUB = -1.99900095e37
LAST_SUB = -1.99900197e37
EPOCH = dt.datetime(1899, 12, 30, tzinfo=dt.UTC)


def sc_time(when: dt.datetime) -> int:
    """SCDateTimeMS: int64 microseconds since 1899-12-30 UTC."""
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def unix_ns(when: dt.datetime) -> int:
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000


@dataclasses.dataclass(frozen=True)
class Rec:
    when: int
    """SCDateTime µs (or any raw int64 for broken records)"""
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    close: float = 0.0
    trades: int = 1
    volume: int = 1
    bid_volume: int = 0
    ask_volume: int = 0

    def pack(self) -> bytes:
        return RECORD.pack(
            self.when,
            self.open,
            self.high,
            self.low,
            self.close,
            self.trades,
            self.volume,
            self.bid_volume,
            self.ask_volume,
        )


def tick(
    when: int,
    price: float,
    bid: float,
    ask: float,
    size: int = 1,
    side: str = "S",
    marker: float = 0.0,
) -> Rec:
    """A trade with the bid/ask at its time; side "S" hit the bid, "B" lifted the ask."""
    return Rec(
        when,
        marker,
        ask,
        bid,
        price,
        1,
        size,
        size if side == "S" else 0,
        size if side == "B" else 0,
    )


def header(header_size: int = 56, record_size: int = 40, magic: bytes = b"SCID") -> bytes:
    return HEADER.pack(magic, header_size, record_size, 1, 0, 0, b"\0" * 36)


def write(path: Path, records: list[Rec], *, torn: bytes = b"", head: bytes | None = None) -> Path:
    path.write_bytes(
        (header() if head is None else head) + b"".join(r.pack() for r in records) + torn
    )
    return path


def append(path: Path, records: list[Rec]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(r.pack() for r in records))


# The 10 records of the public sample file seandunaway/scid test.scid (ES, 2023-02-21), as
# the fact sheet decodes them: (DateTime µs, Open, High=ask, Low=bid, Close, BidVol, AskVol).
SAMPLE = [
    Rec(3886173439026000, 0.0, 4048.75, 4048.0, 4048.0, 1, 1, 1, 0),
    Rec(3886173463699000, 0.0, 4048.25, 4048.0, 4048.0, 1, 1, 1, 0),
    Rec(3886173470544000, 0.0, 4048.25, 4047.5, 4047.5, 1, 1, 1, 0),
    Rec(3886173482105000, FIRST_SUB, 4048.25, 4047.75, 4047.75, 1, 1, 1, 0),
    Rec(3886173482105001, LAST_SUB, 4048.25, 4047.75, 4047.75, 1, 1, 1, 0),
    Rec(3886173492208000, 0.0, 4048.5, 4048.0, 4048.0, 1, 1, 1, 0),
    Rec(3886173550708000, 0.0, 4047.0, 4046.5, 4047.0, 1, 1, 0, 1),
    Rec(3886173628608000, 0.0, 4048.0, 4047.5, 4048.0, 1, 1, 0, 1),
    Rec(3886173652682000, 0.0, 4049.0, 4048.5, 4048.5, 1, 1, 1, 0),
    Rec(3886173652682001, 0.0, 4049.0, 4048.5, 4048.25, 1, 1, 1, 0),
]


DEPTH_HEADER = struct.Struct("<4sIII48s")
DEPTH_RECORD = struct.Struct("<qBBHfII")


def depth_file(path: Path, records: list[tuple[int, int, int, float, int]], flags: int = 0) -> Path:
    """A .depth file: (DateTime µs, Command, NumOrders, Price, Quantity) per record."""
    head = DEPTH_HEADER.pack(b"SCDD", 64, 24, 1, b"\0" * 48)
    body = b"".join(DEPTH_RECORD.pack(t, c, flags, n, p, q, 0) for t, c, n, p, q in records)
    path.write_bytes(head + body)
    return path
