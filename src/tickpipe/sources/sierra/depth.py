"""Sierra Chart ``.depth`` market-depth files to BookUpdate events. Pure: bytes in, Arrow out.

Layout (little-endian, Sierra's "Market Depth Data File Format"): a 64-byte header
(``"SCDD"``, uint32 HeaderSize, RecordSize, Version, 48 reserved bytes), then 24-byte
records::

    int64 DateTime (µs since 1899-12-30 UTC); uint8 Command; uint8 Flags (1 = end of batch);
    uint16 NumOrders; float32 Price; uint32 Quantity; uint32 Reserved

Commands: 1 clear the book, 2/3 add a bid/ask level, 4/5 modify one, 6/7 delete one. Sierra
keys levels by price; a BookUpdate names its level by rank (0 = best), so the book is
replayed in order: each add or modify is a row with the level's rank after it, each delete
a row of size 0 with the rank it had, and a clear a size-0 row for every level it removes.
That replay is a loop over records (about a microsecond each); the decoding around it is
vectorised.

``seq`` is the row's number within its file, above ``(file's first UTC day) << 32``, so
it grows across the daily files of a symbol and is the same however often a file is read.
"""

from __future__ import annotations

import bisect
import dataclasses
import struct

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tickpipe.events import SCHEMAS, Kind
from tickpipe.sources.sierra.columns import round_prices, unix_us_from_sierra
from tickpipe.sources.sierra.scid import BadRecords, ScidError

MAGIC = b"SCDD"
HEADER_SIZE = 64
RECORD_SIZE = 24
RECORD_DTYPE = np.dtype(
    [
        ("dt", "<i8"),
        ("command", "u1"),
        ("flags", "u1"),
        ("orders", "<u2"),
        ("price", "<f4"),
        ("quantity", "<u4"),
        ("reserved", "<u4"),
    ]
)
assert RECORD_DTYPE.itemsize == RECORD_SIZE

CLEAR_BOOK = 1
BID_COMMANDS = {2: "add", 4: "modify", 6: "delete"}
ASK_COMMANDS = {3: "add", 5: "modify", 7: "delete"}
US_PER_DAY = 86_400_000_000


def parse_header(data: bytes, *, where: str = "file") -> int:
    """Check a .depth header; returns the header size (where the first record starts)."""
    if data[:4] != MAGIC:
        raise ScidError(
            f"{where} is not a Sierra Chart .depth file: it starts with {data[:4]!r}, not b'SCDD'",
            raw=bytes(data[:HEADER_SIZE]),
        )
    if len(data) < 12:
        raise ScidError(f"{where} is cut short inside its header", raw=bytes(data))
    header_size, record_size = struct.unpack_from("<II", data, 4)
    if header_size < 12 or record_size != RECORD_SIZE:
        raise ScidError(
            f"{where}: header size {header_size}, record size {record_size}; a .depth file "
            f"has {RECORD_SIZE}-byte records",
            raw=bytes(data[:HEADER_SIZE]),
        )
    return int(header_size)


@dataclasses.dataclass
class _Side:
    """One side of the replayed book: prices in rank order (best first) and their sizes."""

    descending: bool
    keys: list[float] = dataclasses.field(default_factory=list)
    """prices negated for bids, so both sides sort ascending"""
    sizes: dict[float, float] = dataclasses.field(default_factory=dict)

    def rank(self, price: float) -> tuple[int, bool]:
        key = -price if self.descending else price
        i = bisect.bisect_left(self.keys, key)
        return i, i < len(self.keys) and self.keys[i] == key

    def put(self, price: float, size: float) -> int:
        i, found = self.rank(price)
        if not found:
            self.keys.insert(i, -price if self.descending else price)
        self.sizes[price] = size
        return i

    def remove(self, price: float) -> int:
        i, found = self.rank(price)
        if found:
            del self.keys[i]
            self.sizes.pop(price, None)
        return i

    def levels(self) -> list[float]:
        return [-k if self.descending else k for k in self.keys]


class DepthReplay:
    """The book of one .depth file, carried from one chunk of records to the next."""

    def __init__(self, symbol: str, tick_size: float | None, source: str = "sierra") -> None:
        self.symbol = symbol
        self.tick_size = tick_size
        self.source = source
        self.rows = 0
        """rows produced so far (the next seq is ``seq_base + rows + 1``)"""
        self.seq_base: int | None = None
        self._bids = _Side(descending=True)
        self._asks = _Side(descending=False)

    def decode(
        self, records: npt.NDArray[np.void], *, first_index: int, recv_ns: int, emit_from: int = 0
    ) -> tuple[pa.RecordBatch | None, list[BadRecords], int]:
        """(BookUpdate rows, bad records, no-op records) for records ``first_index...``;
        rows of records before ``emit_from`` are replayed but not returned (a resume)."""
        unix_us, plausible = unix_us_from_sierra(records["dt"])
        commands = records["command"]
        known = (commands >= 1) & (commands <= 7)
        good = plausible & known
        if self.seq_base is None and good.any():
            self.seq_base = int(unix_us[np.argmax(good)] // US_PER_DAY) << 32
        prices = round_prices(records["price"], self.tick_size).tolist()
        sizes = records["quantity"].tolist()
        orders = records["orders"].tolist()
        ts = (unix_us * 1000).tolist()
        out: dict[str, list[object]] = {
            k: [] for k in ("ts", "side", "level", "price", "size", "orders", "keep")
        }
        for i in np.flatnonzero(good).tolist():
            self._apply(
                int(commands[i]),
                prices[i],
                sizes[i],
                orders[i],
                ts[i],
                first_index + i >= emit_from,
                out,
            )
        bad = []
        if (~plausible).any():
            rows = np.flatnonzero(~plausible)
            bad.append(
                BadRecords(
                    "DateTime is no date between 1970 and 2100",
                    rows + first_index,
                    [records[j : j + 1].tobytes() for j in rows[:1000]],
                )
            )
        unknown = plausible & ~known & (commands != 0)
        if unknown.any():
            rows = np.flatnonzero(unknown)
            bad.append(
                BadRecords(
                    "unknown depth command (1-7 are defined)",
                    rows + first_index,
                    [records[j : j + 1].tobytes() for j in rows[:1000]],
                )
            )
        noop = int((plausible & (commands == 0)).sum())
        return self._batch(out, recv_ns), bad, noop

    def _apply(
        self,
        command: int,
        price: float,
        size: int,
        orders: int,
        ts: int,
        keep: bool,
        out: dict[str, list[object]],
    ) -> None:
        def row(side: str, level: int, p: float, s: float, n: int | None) -> None:
            for key, value in (
                ("ts", ts),
                ("side", side),
                ("level", level),
                ("price", p),
                ("size", s),
                ("orders", n),
                ("keep", keep),
            ):
                out[key].append(value)

        if command == CLEAR_BOOK:
            for label, side in (("B", self._bids), ("A", self._asks)):
                for level, p in enumerate(side.levels()):
                    row(label, level, p, 0.0, 0)
                side.keys.clear()
                side.sizes.clear()
            return
        label, side, action = (
            ("B", self._bids, BID_COMMANDS.get(command))
            if command in BID_COMMANDS
            else ("A", self._asks, ASK_COMMANDS[command])
        )
        if action == "delete":
            row(label, side.remove(price), price, 0.0, 0)
        else:
            row(label, side.put(price, float(size)), price, float(size), orders)

    def _batch(self, out: dict[str, list[object]], recv_ns: int) -> pa.RecordBatch | None:
        n = len(out["ts"])
        seq = np.arange(self.rows + 1, self.rows + 1 + n, dtype=np.int64) + (self.seq_base or 0)
        self.rows += n
        keep = np.array(out["keep"], dtype=bool)
        if not keep.any():
            return None
        columns = {
            "ts_event": np.array(out["ts"], dtype=np.int64)[keep],
            "ts_recv": np.full(int(keep.sum()), recv_ns, np.int64),
            "symbol": [self.symbol] * int(keep.sum()),
            "side": np.array(out["side"], dtype=object)[keep],
            "level": np.array(out["level"], dtype=np.int64)[keep],
            "price": np.array(out["price"], dtype=np.float64)[keep],
            "size": np.array(out["size"], dtype=np.float64)[keep],
            "source": [self.source] * int(keep.sum()),
            "seq": seq[keep],
            "orders": np.array(out["orders"], dtype=np.int64)[keep],
        }
        return pa.RecordBatch.from_pydict(columns, schema=SCHEMAS[Kind.BOOK])
