"""The built-in market simulator: a plausible market for demos, tests and benchmarks.

Trades, quotes and level-2 levels follow a per-symbol random walk with volatility
clustering (a log-AR(1) volatility per step); a SPY-style option chain is priced with
Black-Scholes on a volatility smile, with open interest concentrated at round strikes and
greeks that move with the underlying. A configurable share of bad events (outliers,
duplicates, crossed quotes, late timestamps) and occasional silences exercise the quality
stage; the first ``BUSY_SYMBOLS`` symbols never fall silent. Every step is vectorised; the
same seed gives the same events, whatever the pacing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.config import Settings
from tickpipe.events import SCHEMAS, Kind
from tickpipe.gex import greeks
from tickpipe.sources.base import Batches, Source, SourceContext
from tickpipe.sources.registry import default_policy
from tickpipe.symbols import occ_symbol

SOURCE_NAME = "simulator"
SECONDS_PER_YEAR = 365.25 * 86_400
US = 1_000  # ns per microsecond: simulated feed timestamps have microsecond resolution

KIND_SHARE = {Kind.QUOTE: 0.40, Kind.TRADE: 0.25, Kind.BOOK: 0.25, Kind.OPTION: 0.10}
BOOK_LEVELS = 5

# start price, tick size, annual volatility, relative activity
PROFILES: dict[str, tuple[float, float, float, float]] = {
    "SPY": (600.0, 0.01, 0.15, 3.0),
    "QQQ": (520.0, 0.01, 0.20, 2.0),
    "/ES": (6000.0, 0.25, 0.15, 2.0),
    "/NQ": (21000.0, 0.25, 0.20, 1.5),
    "$VIX": (16.0, 0.01, 0.90, 0.5),
    "$SPX": (6000.0, 0.01, 0.15, 1.0),
}
DEFAULT_PROFILE = (100.0, 0.01, 0.25, 1.0)
BUSY_SYMBOLS = 2
"""the first symbols (SPY and QQQ by default, the ones the README's examples use) never go
quiet: a new user's first query must not answer ``stale``, nor their first stream wait a
minute for a trade; the others' 40-90 s silences still give gaps and ``stale`` something
to show (issue 20)"""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclasses.dataclass
class _Chain:
    """Static contract list of the simulated option chain."""

    symbols: list[str]
    expiry_days: npt.NDArray[np.int32]  # days since epoch
    expiry_ns: IntArray  # 16:00 New York, approximated as 21:00 UTC
    strikes: FloatArray
    is_call: npt.NDArray[np.bool_]
    open_interest: FloatArray
    volume: FloatArray


def _third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


def _expiries(today: dt.date, count: int) -> list[dt.date]:
    """Today (0DTE on a weekday), the next Friday, next month's monthly, then further
    Fridays until there are ``count``."""
    days = [today if today.weekday() < 5 else today + dt.timedelta(days=7 - today.weekday())]
    friday = today + dt.timedelta(days=(4 - today.weekday()) % 7 or 7)
    days.append(friday)
    nxt = today.replace(day=1) + dt.timedelta(days=32)
    days.append(_third_friday(nxt.year, nxt.month))
    while len(set(days)) < count:
        friday += dt.timedelta(days=7)
        days.append(friday)
    return sorted(set(days))[:count]


class Simulator:
    """Deterministic market generator; ``step(n)`` returns the next ``n`` events."""

    name = SOURCE_NAME

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.policy = default_policy(settings)
        self._settings = settings
        self._clock = clock
        self._rng = np.random.default_rng(settings.simulator_seed)
        self.symbols = list(settings.simulator_symbols)
        profiles = [PROFILES.get(s, DEFAULT_PROFILE) for s in self.symbols]
        self._mid = np.array([p[0] for p in profiles])
        self._tick = np.array([p[1] for p in profiles])
        self._base_vol = np.array([p[2] for p in profiles])
        activity = np.array([p[3] for p in profiles])
        self._weights = activity / activity.sum()
        self._log_vol_dev = np.zeros(len(self.symbols))
        start = settings.simulator_start_ns
        self.now_ns = (start if start is not None else clock.now_ns()) // US * US
        self._seq = {kind: np.zeros(len(self.symbols), dtype=np.int64) for kind in KIND_SHARE}
        self._silent_until = np.zeros(len(self.symbols), dtype=np.int64)
        self._symbol_dict = pa.array(self.symbols, pa.string())
        self._source_dict = pa.array([SOURCE_NAME], pa.string())
        self._side_dict = pa.array(["B", "A"], pa.string())
        self._right_dict = pa.array(["P", "C"], pa.string())
        self.emitted = 0
        underlying = settings.simulator_option_underlying
        self._chain: _Chain | None = None
        if underlying in self.symbols and KIND_SHARE[Kind.OPTION] > 0:
            self._chain_index = self.symbols.index(underlying)
            self._chain = self._build_chain(underlying, float(self._mid[self._chain_index]))
            self._option_seq = np.zeros(len(self._chain.symbols), dtype=np.int64)
            self._option_slot = {sym: i for i, sym in enumerate(self._chain.symbols)}
            self._option_dict = pa.array(self._chain.symbols, pa.string())

    def _build_chain(self, underlying: str, spot: float) -> _Chain:
        today = dt.datetime.fromtimestamp(self.now_ns / NS_PER_SECOND, dt.UTC).date()
        step = 1.0 if spot < 1000 else 5.0
        center = round(spot / step) * step
        half = self._settings.simulator_option_strikes // 2
        strikes_1d = center + step * np.arange(-half, half + 1)
        symbols, days, strikes, calls, oi = [], [], [], [], []
        for expiry in _expiries(today, self._settings.simulator_option_expiries):
            for strike in strikes_1d:
                for is_call in (False, True):
                    symbols.append(occ_symbol(underlying, expiry, "C" if is_call else "P", strike))
                    days.append((expiry - dt.date(1970, 1, 1)).days)
                    strikes.append(strike)
                    calls.append(is_call)
                    # heavier puts below spot, calls above, peaks at round strikes
                    moneyness = (strike - spot) / spot
                    side_bias = 1.0 + 4.0 * max(moneyness if is_call else -moneyness, 0.0) * 10
                    roundness = 4.0 if strike % (5 * step) == 0 else 1.0
                    decay = math.exp(-abs(moneyness) * 25)
                    base = 2_000.0 * side_bias * roundness * decay
                    oi.append(float(np.round(base * self._rng.uniform(0.5, 1.5))))
        expiry_days = np.array(days, dtype=np.int32)
        return _Chain(
            symbols=symbols,
            expiry_days=expiry_days,
            expiry_ns=expiry_days.astype(np.int64) * 86_400 * NS_PER_SECOND
            + 21 * 3600 * NS_PER_SECOND,
            strikes=np.array(strikes),
            is_call=np.array(calls),
            open_interest=np.array(oi),
            volume=np.zeros(len(symbols)),
        )

    def resume(self, checkpoint: dict[tuple[Kind, str], tuple[int, int]]) -> None:
        """Continue each (kind, symbol)'s seq after the last run's, and never restart time
        before what was already accepted, so a restart is not a flood of duplicates."""
        last_ts = max((ts for _, ts in checkpoint.values()), default=0)
        if last_ts >= self.now_ns:
            self.now_ns = (last_ts // US + 1) * US
        for (kind, symbol), (seq, _) in checkpoint.items():
            if kind is Kind.OPTION and self._chain is not None:
                slot = self._option_slot.get(symbol)
                if slot is not None:
                    self._option_seq[slot] = max(int(self._option_seq[slot]), seq)
            elif kind in self._seq and symbol in self.symbols:
                i = self.symbols.index(symbol)
                self._seq[kind][i] = max(int(self._seq[kind][i]), seq)

    # ---- one step -------------------------------------------------------------------

    def step(self, n: int, duration_ns: int) -> Batches:
        """Generate ``n`` events spread over the next ``duration_ns`` of market time."""
        rng = self._rng
        t0 = self.now_ns
        duration_ns = max(duration_ns // US * US, US)
        self.now_ns = t0 + duration_ns
        kinds = [k for k in KIND_SHARE if k is not Kind.OPTION or self._chain is not None]
        share = np.array([KIND_SHARE[k] for k in kinds])
        counts = rng.multinomial(n, share / share.sum())
        path_points = 64
        paths = self._advance_paths(duration_ns, path_points)
        out: Batches = {}
        self._maybe_silence(t0, duration_ns)
        for kind, count in zip(kinds, counts, strict=True):
            if count == 0:
                continue
            ts = t0 + np.sort(rng.integers(0, duration_ns // US, size=count)) * US
            if kind is Kind.OPTION:
                out[kind] = self._options(ts, paths, t0, duration_ns)
                continue
            codes = rng.choice(len(self.symbols), size=count, p=self._weights)
            keep = ts >= self._silent_until[codes]
            ts, codes = ts[keep], codes[keep]
            if ts.size == 0:
                continue
            point = ((ts - t0) * path_points // duration_ns).astype(np.int64)
            mid = paths[codes, point]
            out[kind] = self._build(kind, ts, codes, mid)
        self.emitted += sum(b.num_rows for b in out.values())
        return out

    def _advance_paths(self, duration_ns: int, points: int) -> FloatArray:
        """Mid-price paths (symbols x points) for this step; volatility clusters per step."""
        rng = self._rng
        dt_years = duration_ns / NS_PER_SECOND / SECONDS_PER_YEAR
        self._log_vol_dev = 0.98 * self._log_vol_dev + 0.08 * rng.standard_normal(len(self.symbols))
        vol = self._base_vol * np.exp(self._log_vol_dev)
        shocks = rng.standard_normal((len(self.symbols), points)) * (
            vol[:, None] * math.sqrt(dt_years / points)
        )
        paths = self._mid[:, None] * np.exp(np.cumsum(shocks, axis=1))
        self._mid = paths[:, -1]
        rounded: FloatArray = np.round(
            np.round(paths / self._tick[:, None]) * self._tick[:, None], 6
        )
        return rounded

    def _maybe_silence(self, t0: int, duration_ns: int) -> None:
        share = self._settings.simulator_silence_share
        if share <= 0:
            return
        hit = self._rng.random(len(self.symbols)) < share
        hit[:BUSY_SYMBOLS] = False
        if hit.any():
            length = self._rng.uniform(40, 90, size=int(hit.sum())) * NS_PER_SECOND
            self._silent_until[hit] = t0 + duration_ns + length.astype(np.int64)

    def _next_seq(self, kind: Kind, codes: IntArray) -> IntArray:
        from tickpipe.columnar import cumcount

        base = self._seq[kind]
        seq = base[codes] + cumcount(codes) + 1
        np.add.at(base, codes, 1)
        return seq

    def _recv(self, ts: IntArray) -> IntArray:
        latency_us = np.round(self._rng.lognormal(mean=5.5, sigma=0.6, size=ts.size))
        return ts + latency_us.astype(np.int64) * US

    def _build(self, kind: Kind, ts: IntArray, codes: IntArray, mid: FloatArray) -> pa.RecordBatch:
        rng = self._rng
        n = ts.size
        tick = self._tick[codes]
        seq = self._next_seq(kind, codes)
        cols: dict[str, pa.Array | npt.NDArray[np.generic]] = {
            "ts_event": ts,
            "ts_recv": self._recv(ts),
            "symbol": _dict_column(codes, self._symbol_dict),
        }
        spread = rng.integers(1, 4, size=n) * tick
        # round to the tick, then to 6 decimals so 599.93 is not 599.9300000000001
        bid = np.round(np.round((mid - spread / 2) / tick) * tick, 6)
        ask = np.round(bid + spread, 6)
        if kind is Kind.TRADE:
            at_ask = rng.random(n) < 0.5
            price = np.where(at_ask, ask, bid)
            size = np.ceil(rng.lognormal(3.0, 1.2, size=n))
            price, size, ts, seq, extra = self._inject_bad_trades(price, size, ts, seq, codes)
            cols.update(ts_event=ts, ts_recv=self._recv(ts), price=price, size=size)
            cols["symbol"] = _dict_column(np.r_[codes, extra].astype(np.int64), self._symbol_dict)
            cols["exchange"] = pa.nulls(ts.size, pa.string())
            cols["conditions"] = pa.nulls(ts.size, pa.string())
        elif kind is Kind.QUOTE:
            bid, ask = self._inject_crossed(bid, ask)
            cols.update(
                bid=bid,
                bid_size=np.ceil(rng.exponential(300, size=n)),
                ask=ask,
                ask_size=np.ceil(rng.exponential(300, size=n)),
            )
        else:
            is_ask = rng.random(n) < 0.5
            level = rng.integers(0, BOOK_LEVELS, size=n)
            price = np.round(np.where(is_ask, ask + level * tick, bid - level * tick), 6)
            cols.update(
                side=_dict_column(is_ask.astype(np.int64), self._side_dict),
                level=level.astype(np.int64),
                price=price,
                size=np.ceil(rng.exponential(500, size=n)),
                orders=np.maximum(1, rng.poisson(4, size=n)).astype(np.int64),
            )
        cols["source"] = _dict_column(np.zeros(ts.size, dtype=np.int64), self._source_dict)
        cols["seq"] = seq
        return _record_batch(kind, cols)

    # ---- bad events -----------------------------------------------------------------

    def _bad_mask(self, n: int) -> npt.NDArray[np.bool_]:
        return self._rng.random(n) < self._settings.simulator_bad_share

    def _inject_bad_trades(
        self, price: FloatArray, size: FloatArray, ts: IntArray, seq: IntArray, codes: IntArray
    ) -> tuple[FloatArray, FloatArray, IntArray, IntArray, IntArray]:
        """Outliers and late timestamps in place; duplicates appended as re-deliveries."""
        rng = self._rng
        price, ts = price.copy(), ts.copy()
        bad = self._bad_mask(price.size)
        flavour = rng.integers(0, 3, size=price.size)
        outlier = bad & (flavour == 0)
        price[outlier] = np.round(
            price[outlier] * np.where(rng.random(int(outlier.sum())) < 0.5, 0.9, 1.1), 2
        )
        late = bad & (flavour == 1)
        ts[late] -= 120 * NS_PER_SECOND
        dup = np.flatnonzero(bad & (flavour == 2))
        return (
            np.r_[price, price[dup]],
            np.r_[size, size[dup]],
            np.r_[ts, ts[dup]],
            np.r_[seq, seq[dup]],
            codes[dup],
        )

    def _inject_crossed(self, bid: FloatArray, ask: FloatArray) -> tuple[FloatArray, FloatArray]:
        crossed = self._bad_mask(bid.size)
        return np.where(crossed, ask, bid), np.where(crossed, bid, ask)

    # ---- options --------------------------------------------------------------------

    def _options(
        self, ts: IntArray, paths: FloatArray, t0: int, duration_ns: int
    ) -> pa.RecordBatch:
        chain = self._chain
        assert chain is not None
        rng = self._rng
        n = ts.size
        point = ((ts - t0) * paths.shape[1] // duration_ns).astype(np.int64)
        spot = paths[self._chain_index, point]
        live = np.flatnonzero(chain.expiry_ns > ts[-1])
        if live.size == 0:
            return pa.RecordBatch.from_pylist([], schema=SCHEMAS[Kind.OPTION])
        idx = live[rng.integers(0, live.size, size=n)]
        strike, is_call = chain.strikes[idx], chain.is_call[idx]
        years = np.maximum((chain.expiry_ns[idx] - ts) / NS_PER_SECOND / SECONDS_PER_YEAR, 1e-6)
        log_m = np.log(strike / spot)
        iv = np.clip(0.16 - 0.35 * log_m + 1.5 * log_m**2, 0.05, 3.0)
        theo = greeks.price(spot, strike, years, iv, is_call)
        half = np.maximum(0.01, np.round(theo * 0.01, 2))
        bid = np.maximum(0.0, np.round(theo - half, 2))
        ask = np.round(theo + half, 2)
        chain.volume[idx] += np.ceil(rng.exponential(5, size=n))
        seq = self._option_seq[idx] + _within_index_rank(idx) + 1
        np.add.at(self._option_seq, idx, 1)
        cols: dict[str, pa.Array | npt.NDArray[np.generic]] = {
            "ts_event": ts,
            "ts_recv": self._recv(ts),
            "symbol": _dict_column(idx.astype(np.int64), self._option_dict),
            "underlying": _dict_column(
                np.zeros(n, np.int64), self._symbol_dict.slice(self._chain_index, 1)
            ),
            "expiry": pa.array(chain.expiry_days[idx], pa.int32()).cast(pa.date32()),
            "strike": strike,
            "right": _dict_column(is_call.astype(np.int64), self._right_dict),
            "bid": bid,
            "ask": ask,
            "last": np.round((bid + ask) / 2, 2),
            "volume": chain.volume[idx].copy(),
            "open_interest": chain.open_interest[idx],
            "iv": iv,
            "delta": greeks.delta(spot, strike, years, iv, is_call),
            "gamma": greeks.gamma(spot, strike, years, iv),
            "source": _dict_column(np.zeros(n, np.int64), self._source_dict),
            "seq": seq,
        }
        return _record_batch(Kind.OPTION, cols)

    # ---- as a Source ----------------------------------------------------------------

    async def run(self, ctx: SourceContext) -> None:
        self.resume(ctx.sequences)
        async for batches in self.stream():
            await ctx.emit(batches)

    async def stream(self) -> AsyncIterator[Batches]:
        """The batches ``run`` emits, paced as configured (benchmarks drive this directly)."""
        s = self._settings
        rate, batch_ms = s.simulator_rate, s.simulator_batch_ms
        while s.simulator_max_events == 0 or self.emitted < s.simulator_max_events:
            if s.simulator_batch_size:
                n = s.simulator_batch_size
            else:
                n = int(self._rng.poisson(rate * batch_ms / 1000)) if rate > 0 else 1000
            if s.simulator_max_events:
                n = min(n, s.simulator_max_events - self.emitted)
            duration_ns = int(n / rate * NS_PER_SECOND) if rate > 0 else int(batch_ms * 1e6)
            duration_ns = max(duration_ns, US)
            if s.simulator_realtime:
                wait_s = (self.now_ns + duration_ns - self._clock.now_ns()) / NS_PER_SECOND
                await asyncio.sleep(max(wait_s, 0.0))
            else:
                await asyncio.sleep(0)
            yield self.step(n, duration_ns)


def build(settings: Settings, clock: Clock) -> list[Source]:
    return [Simulator(settings, clock)]


def _within_index_rank(idx: IntArray) -> IntArray:
    from tickpipe.columnar import cumcount

    return cumcount(idx.astype(np.int64))


def _dict_column(codes: IntArray, dictionary: pa.Array) -> pa.Array:
    """A string column from codes into a small dictionary, built in C++, not per row."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), dictionary).cast(pa.string())


def _record_batch(
    kind: Kind, cols: dict[str, pa.Array | npt.NDArray[np.generic]]
) -> pa.RecordBatch:
    schema = SCHEMAS[kind]
    n = len(next(iter(cols.values())))
    arrays = []
    for field in schema:
        col = cols.get(field.name)
        if col is None:  # an optional field the simulator leaves empty
            arrays.append(pa.nulls(n, field.type))
        else:
            arrays.append(col if isinstance(col, pa.Array) else pa.array(col, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
