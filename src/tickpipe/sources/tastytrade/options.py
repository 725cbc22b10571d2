"""Option contracts: DXLink's Quote, Greeks, Summary and Trade merged into OptionQuote rows.

DXLink sends each option's top of book, greeks, open interest and last trade as separate
events; the GEX engine wants one OptionQuote per contract. The book keeps the latest of
each per contract (numpy arrays indexed by slot, no per-event objects) and, after each
message, emits one row per contract the message touched, once the contract is complete
enough to be used: a two-sided quote and a known open interest. Until then its parts
wait here (``waiting`` counts them for /status).

Merge rules: bid/ask take the latest value (NaN: that side is absent); open interest and
the last price keep their last finite value (Summary resets to NaN before the open);
greeks take the latest value (NaN: the engine solves IV from the mid); volume is the day
volume of the latest Trade, 0 when none was reported. ``ts_event`` never goes backwards.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tickpipe.events import SCHEMAS, Kind
from tickpipe.sources.tastytrade.symbols import Listing

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FIELDS = ("bid", "ask", "last", "volume", "open_interest", "iv", "delta", "gamma")
KEEP_FINITE = frozenset({"open_interest", "last"})
_EPOCH = dt.date(1970, 1, 1)


class OptionBook:
    def __init__(self, capacity: int = 256) -> None:
        self.slot_of: dict[str, int] = {}
        self.size = 0
        self._values = {name: np.full(capacity, np.nan) for name in FIELDS}
        self._ts = np.zeros(capacity, np.int64)
        self._touched = np.zeros(capacity, bool)
        self._symbol: list[str] = []
        self._underlying: list[str] = []
        self._right: list[str] = []
        self._expiry = np.zeros(capacity, np.int32)
        self._strike = np.zeros(capacity)

    def slots(self, dx_symbols: list[str], listings: list[Listing]) -> IntArray:
        """Slot of each contract (new contracts get one)."""
        out = np.empty(len(dx_symbols), np.int64)
        for i, (dx, listing) in enumerate(zip(dx_symbols, listings, strict=True)):
            slot = self.slot_of.get(dx)
            if slot is None:
                slot = self._add(dx, listing)
            out[i] = slot
        return out

    def _add(self, dx: str, listing: Listing) -> int:
        slot = self.size
        if slot == self._ts.size:
            self._grow()
        assert listing.underlying is not None and listing.expiry is not None
        self.slot_of[dx] = slot
        self._symbol.append(listing.canonical)
        self._underlying.append(listing.underlying)
        self._right.append(listing.right)
        self._expiry[slot] = (listing.expiry - _EPOCH).days
        self._strike[slot] = listing.strike
        self.size += 1
        return slot

    def _grow(self) -> None:
        extra = self._ts.size
        for name, values in self._values.items():
            self._values[name] = np.concatenate((values, np.full(extra, np.nan)))
        self._ts = np.concatenate((self._ts, np.zeros(extra, np.int64)))
        self._touched = np.concatenate((self._touched, np.zeros(extra, bool)))
        self._expiry = np.concatenate((self._expiry, np.zeros(extra, np.int32)))
        self._strike = np.concatenate((self._strike, np.zeros(extra)))

    def update(self, slots: IntArray, values: dict[str, FloatArray], ts_ns: IntArray) -> None:
        """Apply events (rows aligned with ``slots``); the last row per contract wins."""
        if slots.size == 0:
            return
        for name, column in values.items():
            rows = np.arange(slots.size)
            if name in KEEP_FINITE:
                rows = rows[np.isfinite(column)]
            last = _last_per_slot(slots[rows])
            self._values[name][slots[rows][last]] = column[rows][last]
        np.maximum.at(self._ts, slots, ts_ns)
        self._touched[slots] = True

    def value(self, dx: str, name: str) -> float:
        return float(self._values[name][self.slot_of[dx]])

    @property
    def waiting(self) -> int:
        """Contracts seen but not yet complete (no two-sided quote or no open interest)."""
        n = self.size
        return int(n - self._complete()[:n].sum())

    def _complete(self) -> npt.NDArray[np.bool_]:
        v = self._values
        done: npt.NDArray[np.bool_] = (
            np.isfinite(v["bid"]) & np.isfinite(v["ask"]) & np.isfinite(v["open_interest"])
        )
        return done

    def flush(self, recv_ns: int, source: str) -> pa.RecordBatch | None:
        """Rows for the contracts touched since the last flush that are complete (``seq``
        left 0 for the caller to number)."""
        n = self.size
        ready = np.flatnonzero(self._touched[:n] & self._complete()[:n])
        self._touched[ready] = False
        if ready.size == 0:
            return None
        v = {name: values[ready] for name, values in self._values.items()}
        take = ready.tolist()
        schema = SCHEMAS[Kind.OPTION]
        columns = {
            "ts_event": np.where(self._ts[ready] > 0, self._ts[ready], recv_ns),
            "ts_recv": np.full(ready.size, recv_ns, np.int64),
            "symbol": pa.array([self._symbol[i] for i in take], pa.string()),
            "underlying": pa.array([self._underlying[i] for i in take], pa.string()),
            "expiry": pa.array(self._expiry[ready], pa.int32()).cast(pa.date32()),
            "strike": self._strike[ready],
            "right": pa.array([self._right[i] for i in take], pa.string()),
            "bid": v["bid"],
            "ask": v["ask"],
            "last": v["last"],
            "volume": np.nan_to_num(v["volume"], nan=0.0),
            "open_interest": v["open_interest"],
            "iv": v["iv"],
            "delta": v["delta"],
            "gamma": v["gamma"],
            "source": pa.array([source] * ready.size, pa.string()),
            "seq": np.zeros(ready.size, np.int64),
        }
        return pa.RecordBatch.from_pydict(columns, schema=schema)


def _last_per_slot(slots: IntArray) -> IntArray:
    """Positions of the last occurrence of each distinct slot."""
    if slots.size == 0:
        return np.zeros(0, np.int64)
    reversed_first = np.unique(slots[::-1], return_index=True)[1]
    last: IntArray = (slots.size - 1 - reversed_first).astype(np.int64)
    return last
