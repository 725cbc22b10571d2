"""The GEX engine: chain state per underlying from OptionQuote events, spot from quotes,
recomputed off the event loop at most every ``gex_interval_ms`` and only when inputs
changed; never per request. Results are cached as ready JSON (and, with Redis, under
``gex:<underlying>:<category>:<basis>``), versioned by chain state. At
``gex_history_seconds`` a GexLevels event per underlying goes through the pipeline, so
GEX history lands in the lake like ticks (``types=gex``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import redis.asyncio as aioredis
from threadpoolctl import threadpool_limits

from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.columnar import Grouped
from tickpipe.config import Settings
from tickpipe.events import GexLevels, Kind, to_batch
from tickpipe.gex.chain import Captured, ChainBook, build_chain
from tickpipe.gex.exposure import BASES, CATEGORIES, Basis, Category, Params, Result, compute_all
from tickpipe.logsafe import Throttle
from tickpipe.sources.base import SourceContext, SourcePolicy
from tickpipe.store import keys
from tickpipe.store.redis_conn import raise_if_cancelled

log = logging.getLogger(__name__)
SOURCE = "gex"
REDIS_LOG_EVERY_S = 30.0
"""a failing Redis write (tried every ``gex_interval_ms``) is logged at most this often"""


@dataclasses.dataclass(frozen=True)
class Cached:
    version: int
    body: bytes
    """JSON without the ages, which are added per request"""
    chain_updated_ns: int
    spot_updated_ns: int


def params_from(settings: Settings) -> Params:
    return Params(
        r=settings.gex_rate,
        q=settings.gex_dividend_yield,
        min_minutes=settings.gex_min_minutes,
        full_max_days=settings.gex_full_max_days,
        grid_pct=settings.gex_grid_pct,
        grid_points=settings.gex_grid_points,
        convention=settings.gex_convention,
    )


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / NS_PER_SECOND, dt.UTC).isoformat().replace("+00:00", "Z")


def result_json(
    result: Result,
    *,
    underlying: str,
    as_of_ns: int,
    source: str,
    convention: str,
    gamma_check: dict[str, Any],
) -> bytes:
    def num(x: float | None) -> float | None:
        return None if x is None or not np.isfinite(x) else round(float(x), 6)

    call, put = result.call_gex_by_strike, result.put_gex_by_strike
    # columns, not rows: an SPX ladder is 600 strikes, and repeating seven key names per
    # strike tripled the response (measured 152 kB -> 49 kB); dollars are rounded to cents
    ladder = {
        "strike": result.strikes,
        "call_gex_usd_per_1pct": np.round(call, 2),
        "put_gex_usd_per_1pct": np.round(put, 2),
        "net_gex_usd_per_1pct": np.round(call + put, 2),
        "abs_gex_usd_per_1pct": np.round(np.abs(call) + np.abs(put), 2),
        "call_contracts": result.call_weight_by_strike,
        "put_contracts": result.put_weight_by_strike,
    }
    body = {
        "symbol": underlying,
        "category": result.category,
        "basis": result.basis,
        "spot": num(result.spot),
        "zero_gamma": num(result.zero_gamma),
        "zero_gamma_crossings": [num(x) for x in result.zero_gamma_crossings],
        "call_wall": num(result.call_wall),
        "put_wall": num(result.put_wall),
        "abs_gamma_strike": num(result.abs_gamma_strike),
        "total_gex_usd_per_1pct": float(result.total_gex_usd_per_1pct),
        "call_gex_usd_per_1pct": float(result.call_gex_usd_per_1pct),
        "put_gex_usd_per_1pct": float(result.put_gex_usd_per_1pct),
        "contracts": result.contracts,
        "convention": convention,
        "units": "USD of dealer delta change per 1% move of the underlying",
        "strikes": ladder,
        "profile": {
            "spot": np.round(result.profile_spot, 4),
            "gex_usd_per_1pct": np.round(result.profile_gex, 2),
        },
        "expiries": [
            {"expiry": _iso(int(e)), "expiry_ns": int(e), "net_gex_usd_per_1pct": float(g)}
            for e, g in zip(result.expiries_ns, result.gex_by_expiry, strict=True)
        ],
        "as_of": _iso(as_of_ns),
        "as_of_ns": as_of_ns,
        "source": source,
        "gamma_check": gamma_check,
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


class GexEngine:
    """A hub listener (chains and spots in) and a source (GexLevels history out)."""

    name = SOURCE
    policy = SourcePolicy(idle_timeout_s=None)

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._redis = redis
        self._ctx: SourceContext | None = None
        pin_numeric_threads()
        self.params = params_from(settings)
        self.books: dict[str, ChainBook] = {}
        self.spots: dict[str, tuple[float, int]] = {}
        self._spot_version: dict[str, int] = {}
        self._computed: dict[str, tuple[int, int]] = {}
        self.cache: dict[tuple[str, str, str], Cached] = {}
        self.results: dict[str, dict[tuple[Category, Basis], Result]] = {}
        self._last_history_ns: dict[str, int] = {}
        self._recorded: dict[str, tuple[int, int]] = {}
        """(chain version, spot version) of each underlying's last GexLevels event"""
        self._seq: dict[str, int] = {}
        self.recomputes = 0
        self.recompute_ms_last = 0.0
        self.recompute_ms_max = 0.0
        self.hits = 0
        self.current_hits = 0
        """hits whose result was computed from the chain as it is at that moment"""
        self.misses = 0
        self._quoted: set[str] = set()
        self._redis_failures = Throttle(REDIS_LOG_EVERY_S, clock.monotonic)

    def resume(self, checkpoint: dict[tuple[Kind, str], tuple[int, int]]) -> None:
        """Continue GexLevels seq numbers after the last run's."""
        for (kind, underlying), (seq, _) in checkpoint.items():
            if kind is Kind.GEX:
                self._seq[underlying] = max(self._seq.get(underlying, 0), seq)

    async def accept(self, kind: Kind, grouped: Grouped) -> None:
        """Hub listener: option quotes update chains; quotes (else trades) update spots."""
        now = self._clock.now_ns()
        if kind is Kind.OPTION:
            batch = grouped.batch
            column = batch.column("underlying")
            names = pc.unique(column).to_pylist()
            for und in names:
                rows = batch if len(names) == 1 else batch.filter(pc.equal(column, und))
                book = self.books.get(und)
                if book is None:
                    book = self.books[und] = ChainBook(und, self._settings.gex_multiplier)
                book.update(rows, now)
        elif kind in (Kind.QUOTE, Kind.TRADE):
            self._update_spots(kind, grouped, now)

    def _update_spots(self, kind: Kind, grouped: Grouped, now: int) -> None:
        """Each symbol's last mid (quotes) or last print (trades, for symbols never quoted),
        read from the last row of its group: one take per tick, no row loop."""
        last = pa.array(grouped.starts + grouped.counts - 1)
        batch = grouped.batch
        if kind is Kind.QUOTE:
            bid = batch.column("bid").take(last).to_numpy(zero_copy_only=False)
            ask = batch.column("ask").take(last).to_numpy(zero_copy_only=False)
            price = (np.asarray(bid, dtype=np.float64) + np.asarray(ask, dtype=np.float64)) / 2
        else:
            price = np.asarray(
                batch.column("price").take(last).to_numpy(zero_copy_only=False), dtype=np.float64
            )
        versions = self._spot_version
        for symbol, value in zip(grouped.symbols, price.tolist(), strict=True):
            if value != value:  # NaN: a one-sided quote has no mid
                continue
            if kind is Kind.TRADE and symbol in self._quoted:
                continue
            self.spots[symbol] = (value, now)
            versions[symbol] = versions.get(symbol, 0) + 1
            if kind is Kind.QUOTE:
                self._quoted.add(symbol)

    def due(self) -> list[str]:
        """Underlyings whose chain or spot changed since the last computation."""
        out = []
        for und, book in self.books.items():
            if und not in self.spots or book.size == 0:
                continue
            state = (book.version, self._spot_version.get(und, 0))
            if self._computed.get(und) != state:
                out.append(und)
        return out

    def recompute(self, underlying: str) -> None:
        """Recompute one underlying now, in this thread (tests, tools)."""
        job = self._capture(underlying)
        self._install(underlying, job, self._compute(underlying, job))

    def _capture(self, underlying: str) -> tuple[Captured, float, int, int, tuple[int, int]]:
        book = self.books[underlying]
        spot, spot_ns = self.spots[underlying]
        state = (book.version, self._spot_version.get(underlying, 0))
        return book.capture(), spot, spot_ns, self._clock.now_ns(), state

    def _compute(
        self, underlying: str, job: tuple[Captured, float, int, int, tuple[int, int]]
    ) -> tuple[dict[tuple[Category, Basis], Result], dict[tuple[Category, Basis], bytes], float]:
        """The heavy part, safe in a worker thread: it only reads the captured copies."""
        captured, spot, _, now, _ = job
        book = self.books[underlying]
        started = time.perf_counter()
        chain = build_chain(underlying, book.multiplier, captured, spot, now, self.params)
        results = compute_all(chain, self.params)
        check = _gamma_check(chain, captured.fields["gamma"], self.params)
        bodies = {
            key: result_json(
                result,
                underlying=underlying,
                as_of_ns=now,
                source="computed",
                convention=self.params.convention,
                gamma_check=check,
            )
            for key, result in results.items()
        }
        return results, bodies, (time.perf_counter() - started) * 1000

    def _install(
        self,
        underlying: str,
        job: tuple[Captured, float, int, int, tuple[int, int]],
        done: tuple[
            dict[tuple[Category, Basis], Result], dict[tuple[Category, Basis], bytes], float
        ],
    ) -> None:
        captured, _, spot_ns, _, state = job
        results, bodies, elapsed = done
        book = self.books[underlying]
        book.remember_solved(captured)
        for (cat, basis), body in bodies.items():
            self.cache[(underlying, cat, basis)] = Cached(
                captured.version, body, book.updated_ns, spot_ns
            )
        self.results[underlying] = results
        self._computed[underlying] = state
        self.recomputes += 1
        self.recompute_ms_last = elapsed
        self.recompute_ms_max = max(self.recompute_ms_max, elapsed)

    async def run(self, ctx: SourceContext) -> None:
        """As a source: recompute what changed, publish it, and emit a GexLevels event per
        underlying every ``gex_history_seconds`` (into the lake like any other event)."""
        self.resume(ctx.sequences)
        self._ctx = ctx
        try:
            await self._loop()
        finally:
            self._ctx = None

    async def _loop(self) -> None:
        interval = self._settings.gex_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for und in self.due():
                try:
                    await asyncio.to_thread(self.recompute, und)
                except Exception:
                    log.exception("GEX recompute for %s failed", und)
                    continue
                await self._publish(und)
            await self._record_history()

    async def _publish(self, underlying: str) -> None:
        if self._redis is not None:
            pipe = self._redis.pipeline(transaction=False)
            for cat in CATEGORIES:
                for basis in BASES:
                    cached = self.cache[(underlying, cat, basis)]
                    envelope = orjson.dumps(
                        {
                            "version": cached.version,
                            "chain_updated_ns": cached.chain_updated_ns,
                            "spot_updated_ns": cached.spot_updated_ns,
                        }
                    )
                    pipe.set(
                        keys.gex_key(underlying, cat, basis),
                        envelope + b"\n" + cached.body,
                        ex=3600,
                    )
            try:
                await pipe.execute()
            except aioredis.RedisError as exc:
                raise_if_cancelled()
                if count := self._redis_failures.hit():
                    log.warning(
                        "GEX cache to Redis failed %d time(s) (%s); said at most every %.0f s",
                        count,
                        exc,
                        REDIS_LOG_EVERY_S,
                    )
            else:
                raise_if_cancelled()
                if failed := self._redis_failures.recover():
                    log.info("GEX cache to Redis works again after %d failures", failed)

    async def _record_history(self) -> None:
        """A GexLevels event per underlying whose levels changed since its last one, at most
        every ``gex_history_seconds``: the last levels of a quiet chain are recorded too."""
        if self._ctx is None:
            return
        now = self._clock.now_ns()
        every = int(self._settings.gex_history_seconds * NS_PER_SECOND)
        due = [
            und
            for und, state in self._computed.items()
            if self._recorded.get(und) != state and now - self._last_history_ns.get(und, 0) >= every
        ]
        if not due:
            return
        for und in due:
            self._last_history_ns[und] = now
            self._recorded[und] = self._computed[und]
        batches = [self._levels_batch(und, now) for und in due]
        await self._ctx.emit(
            {Kind.GEX: pa.Table.from_batches(batches).combine_chunks().to_batches()[0]}
        )

    def _levels_batch(self, underlying: str, now: int) -> pa.RecordBatch:
        result = self.results[underlying][("full", "oi")]
        self._seq[underlying] = self._seq.get(underlying, 0) + 1
        event = GexLevels(
            ts_event=now,
            ts_recv=now,
            symbol=underlying,
            spot=result.spot,
            zero_gamma=result.zero_gamma,
            call_wall=result.call_wall,
            put_wall=result.put_wall,
            total_gex_usd_per_1pct=result.total_gex_usd_per_1pct,
            strikes=result.strikes.tolist(),
            gex_usd_per_1pct=result.net_gex_by_strike.tolist(),
            source=SOURCE,
            seq=self._seq[underlying],
        )
        return to_batch(Kind.GEX, [event])

    def lookup(self, underlying: str, category: str, basis: str) -> tuple[bytes, int, int] | None:
        """The ready JSON and (chain, spot) update times, or None if never computed."""
        cached = self.cache.get((underlying, category, basis))
        if cached is None:
            self.misses += 1
            return None
        self.hits += 1
        book = self.books.get(underlying)
        if book is not None and book.version == cached.version:
            self.current_hits += 1
        return cached.body, cached.chain_updated_ns, cached.spot_updated_ns

    def status(self) -> dict[str, Any]:
        return {
            "underlyings": {
                u: {"contracts": b.size, "version": b.version} for u, b in self.books.items()
            },
            "recomputes": self.recomputes,
            "recompute_ms_last": round(self.recompute_ms_last, 3),
            "recompute_ms_max": round(self.recompute_ms_max, 3),
            "cache_hits": self.hits,
            "cache_hits_current_version": self.current_hits,
            "cache_misses": self.misses,
        }


def _gamma_check(chain: Any, feed_gamma: np.ndarray, params: Params) -> dict[str, Any]:
    """How far the feed's own gamma is from ours (feeds round it, e.g. to 3 decimals)."""
    from tickpipe.gex import greeks
    from tickpipe.gex.exposure import years_to_expiry

    ours = greeks.gamma(
        chain.spot,
        chain.strike,
        years_to_expiry(chain.expiry_ns, chain.now_ns, params.min_minutes),
        chain.iv,
        params.r,
        params.q,
    )
    with np.errstate(invalid="ignore"):
        both = np.isfinite(ours) & np.isfinite(feed_gamma) & (feed_gamma > 0)
    if not both.any():
        return {"compared": 0}
    diff = np.abs(ours[both] - feed_gamma[both])
    return {
        "compared": int(both.sum()),
        "median_abs_diff": float(np.median(diff)),
        "max_abs_diff": float(diff.max()),
    }


BLAS_THREADS = 1


def pin_numeric_threads() -> None:
    """One BLAS thread for the process. GEX's matrix product is the only BLAS work here;
    with OpenBLAS's default of one thread per core its spinning workers fought the event
    loop and the flusher for the two cores, and ``compute_all`` swung 24x between runs
    (bench/gex.py measures it both ways). The limit is process-wide (OpenBLAS keeps one),
    so it is set once, not around each recompute."""
    threadpool_limits(limits=BLAS_THREADS, user_api="blas")
