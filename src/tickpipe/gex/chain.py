"""Chain state: the latest quote of every option contract of one underlying.

Kept in growable numpy arrays indexed by contract, updated from OptionQuote batches
without a loop over rows (only new contracts are looped over, once). ``version`` moves on
every update, so consumers recompute only when inputs changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.gex import greeks
from tickpipe.gex.exposure import Chain, Params, years_to_expiry

NEW_YORK = ZoneInfo("America/New_York")
FloatArray = npt.NDArray[np.float64]


@functools.lru_cache(maxsize=4096)
def expiry_instant_ns(day: dt.date, hour: int = 16) -> int:
    """The expiry instant of a US equity/index option: ``hour``:00 New York time."""
    local = dt.datetime(day.year, day.month, day.day, hour, tzinfo=NEW_YORK)
    return int(local.timestamp()) * 1_000_000_000


_EPOCH = dt.date(1970, 1, 1)
_FIELDS = ("strike", "open_interest", "volume", "iv", "bid", "ask", "gamma")


class ChainBook:
    def __init__(self, underlying: str, multiplier: float = 100.0, capacity: int = 1024) -> None:
        self.underlying = underlying
        self.multiplier = multiplier
        self.index: dict[str, int] = {}
        self.size = 0
        self.version = 0
        self.updated_ns = 0
        self._f = {name: np.full(capacity, np.nan) for name in _FIELDS}
        self._expiry_ns = np.zeros(capacity, dtype=np.int64)
        self._is_call = np.zeros(capacity, dtype=bool)
        self._solved_iv = np.full(capacity, np.nan)
        self._solved_from = np.full(capacity, np.nan)

    def _grow(self, needed: int) -> None:
        cap = self._expiry_ns.size
        if needed <= cap:
            return
        new = max(needed, cap * 2)
        for name, arr in self._f.items():
            self._f[name] = np.concatenate((arr, np.full(new - cap, np.nan)))
        self._expiry_ns = np.concatenate((self._expiry_ns, np.zeros(new - cap, np.int64)))
        self._is_call = np.concatenate((self._is_call, np.zeros(new - cap, bool)))
        self._solved_iv = np.concatenate((self._solved_iv, np.full(new - cap, np.nan)))
        self._solved_from = np.concatenate((self._solved_from, np.full(new - cap, np.nan)))

    def update(self, batch: pa.RecordBatch | pa.Table, received_ns: int) -> None:
        """Apply OptionQuote rows (this underlying's); the last row per contract wins."""
        if batch.num_rows == 0:
            return
        symbols = batch.column("symbol")
        encoded = pc.dictionary_encode(symbols)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        names = encoded.dictionary.to_pylist()
        # last occurrence of each contract in the batch
        rev_first = np.unique(codes[::-1], return_index=True)[1]
        last_rows = codes.size - 1 - rev_first
        new = [n for n in names if n not in self.index]
        if new:
            self._grow(self.size + len(new))
            for name in new:
                self.index[name] = self.size
                self.size += 1
        slot_of_code = np.array([self.index[n] for n in names], dtype=np.int64)
        slots = slot_of_code[codes[last_rows]]
        rows = pa.array(last_rows)
        for name in _FIELDS:
            values = batch.column(name).take(rows).to_numpy(zero_copy_only=False)
            self._f[name][slots] = np.asarray(values, dtype=np.float64)
        expiry_days = (
            batch.column("expiry").take(rows).cast(pa.int32()).to_numpy(zero_copy_only=False)
        )
        days, inverse = np.unique(expiry_days, return_inverse=True)  # a handful of dates
        instants = np.array(
            [expiry_instant_ns(_EPOCH + dt.timedelta(days=int(d))) for d in days], np.int64
        )
        self._expiry_ns[slots] = instants[inverse]
        self._is_call[slots] = (
            batch.column("right").take(rows).to_numpy(zero_copy_only=False) == "C"
        )
        self.version += 1
        self.updated_ns = received_ns

    def capture(self) -> Captured:
        """Copies of the live arrays, taken on the event loop so a worker thread can use
        them while updates go on (updates only append contracts, never move them)."""
        n = self.size
        return Captured(
            size=n,
            version=self.version,
            fields={name: arr[:n].copy() for name, arr in self._f.items()},
            expiry_ns=self._expiry_ns[:n].copy(),
            is_call=self._is_call[:n].copy(),
            solved_iv=self._solved_iv[:n].copy(),
            solved_from=self._solved_from[:n].copy(),
        )

    def remember_solved(self, captured: Captured) -> None:
        """Keep IVs a worker solved, for contracts whose mid has not moved since."""
        n = captured.size
        self._solved_iv[:n] = captured.solved_iv
        self._solved_from[:n] = captured.solved_from

    def snapshot(self, spot: float, now_ns: int, params: Params) -> Chain:
        """Capture and build in one go (single-threaded callers and tests)."""
        captured = self.capture()
        chain = build_chain(self.underlying, self.multiplier, captured, spot, now_ns, params)
        self.remember_solved(captured)
        return chain

    def feed_gamma(self) -> FloatArray:
        return self._f["gamma"][: self.size]


@dataclasses.dataclass
class Captured:
    size: int
    version: int
    fields: dict[str, FloatArray]
    expiry_ns: npt.NDArray[np.int64]
    is_call: npt.NDArray[np.bool_]
    solved_iv: FloatArray
    solved_from: FloatArray


def build_chain(
    underlying: str, multiplier: float, captured: Captured, spot: float, now_ns: int, params: Params
) -> Chain:
    """The pure chain, with IV solved from the mid where the feed gave none (solutions are
    written into ``captured`` for ``remember_solved``). Safe in a worker thread."""
    f = captured.fields
    iv = f["iv"].copy()
    need = ~(np.isfinite(iv) & (iv > 0))
    if need.any():
        rows = np.flatnonzero(need)
        bid, ask = f["bid"][rows], f["ask"][rows]
        with np.errstate(invalid="ignore"):
            mid = np.where((bid > 0) & (ask >= bid), (bid + ask) / 2, np.nan)
        stale = ~(captured.solved_from[rows] == mid)
        if stale.any():
            r = rows[stale]
            t = years_to_expiry(captured.expiry_ns[r], now_ns, params.min_minutes)
            captured.solved_iv[r] = greeks.implied_vol(
                mid[stale], spot, f["strike"][r], t, captured.is_call[r], params.r, params.q
            )
            captured.solved_from[r] = mid[stale]
        iv[rows] = captured.solved_iv[rows]
    return Chain(
        underlying=underlying,
        spot=spot,
        now_ns=now_ns,
        strike=f["strike"],
        expiry_ns=captured.expiry_ns,
        is_call=captured.is_call,
        open_interest=f["open_interest"],
        volume=f["volume"],
        iv=iv,
        multiplier=multiplier,
    )
