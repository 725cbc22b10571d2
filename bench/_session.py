"""Realistic-looking trading sessions for the lake and query benchmarks.

What makes a lake file small or large is the data, so this tries to look like a real
consolidated US equity tape rather than like noise: trades arrive with a U-shaped
intensity over 6.5 hours and in bursts (sweeps print many trades in the same microsecond),
``ts_event`` has microsecond resolution (what SIPs and most feeds give), ``ts_recv`` is a
local nanosecond clock read once per received frame, ~0.6 ms after the frame left, prices move on a one-cent grid and most prints
repeat the last price, sizes are round lots with about half odd lots (which carry
condition ``I``), venues follow a skewed market share, and most prints have an
aggressor side.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tickpipe.events import SCHEMAS, Kind

SESSION_S = 6.5 * 3600
VENUES = np.array(list("DQNPZKVYJAXBMHUL"))
VENUE_SHARE = np.array([38, 14, 10, 8, 6, 5, 4, 3, 3, 2, 2, 1.5, 1.2, 1, 1, 0.3])
SYMBOLS = {  # symbol: (price, share of the session's trades)
    "SPY": (600.0, 0.30),
    "QQQ": (520.0, 0.20),
    "AAPL": (230.0, 0.14),
    "NVDA": (140.0, 0.18),
    "TSLA": (350.0, 0.12),
    "IWM": (235.0, 0.06),
}


def _times(rng: np.random.Generator, n: int, open_ns: int) -> np.ndarray:
    """n microsecond stamps over the session: U-shaped intensity, bursts of equal stamps."""
    bursts = max(1, int(n / 1.6))
    u = rng.random(bursts)
    u = np.where(rng.random(bursts) < 0.5, u**2.2 / 2, 1 - (1 - u) ** 2.2 / 2)  # open/close
    starts = np.sort((u * SESSION_S * 1e6).astype(np.int64))
    sizes = rng.geometric(0.62, bursts)
    stamps = np.repeat(starts, sizes)[:n]
    if stamps.size < n:
        stamps = np.sort(
            np.concatenate([stamps, rng.integers(0, int(SESSION_S * 1e6), n - stamps.size)])
        )
    return open_ns + stamps * 1000


def symbol_trades(
    rng: np.random.Generator, symbol: str, n: int, open_ns: int, price0: float
) -> dict[str, object]:
    ts = _times(rng, n, open_ns)
    moves = rng.random(n) < 0.35  # most prints repeat the last price
    steps = np.where(moves, rng.choice([-2, -1, 1, 2], n, p=[0.1, 0.4, 0.4, 0.1]), 0)
    cents = np.round(price0 * 100) + np.cumsum(steps)
    price = np.maximum(cents, 1) / 100
    odd = rng.random(n) < 0.48
    size = np.where(
        odd, rng.integers(1, 100, n), 100 * np.minimum(rng.geometric(0.55, n), 100)
    ).astype(np.float64)
    big = rng.random(n) < 0.002
    size[big] = rng.choice([5_000, 10_000, 25_000], int(big.sum()))
    venue = VENUES[rng.choice(VENUES.size, n, p=VENUE_SHARE / VENUE_SHARE.sum())]
    conditions = np.where(odd, "I", None)
    iso = rng.random(n) < 0.08
    conditions = np.where(iso & odd, "F I", np.where(iso, "F", conditions))
    aggressor = rng.choice(np.array(["B", "S", None], dtype=object), n, p=[0.45, 0.45, 0.10])
    return {
        "ts_event": ts,
        "ts_recv": ts,  # set per frame by ``session``
        "symbol": pa.array([symbol] * n),
        "price": price,
        "size": size,
        "source": pa.array(["bench"] * n),
        "seq": np.arange(1, n + 1),
        "exchange": pa.array(venue),
        "conditions": pa.array(conditions, pa.string()),
        "aggressor": pa.array(aggressor, pa.string()),
        "flags": pa.nulls(n, pa.int64()),
    }


def session(
    n: int,
    open_ns: int,
    symbols: dict[str, tuple[float, float]] | None = None,
    seed: int = 1,
    frame_ms: float = 10.0,
) -> pa.Table:
    """About ``n`` trades over one session, in journal order (by ts_event across symbols).
    ``frame_ms`` 0 gives every trade its own receive time (a worst case: no feed does)."""
    rng = np.random.default_rng(seed)
    symbols = symbols or SYMBOLS
    total = sum(share for _, share in symbols.values())
    parts = []
    for symbol, (price0, share) in symbols.items():
        count = max(1, round(n * share / total))
        parts.append(
            pa.Table.from_pydict(
                symbol_trades(rng, symbol, count, open_ns, price0), schema=SCHEMAS[Kind.TRADE]
            )
        )
    table = pa.concat_tables(parts).sort_by([("ts_event", "ascending")])
    ts = table.column("ts_event").to_numpy()
    recv = frame_recv(rng, ts, frame_ms) if frame_ms else ts + _delay(rng, ts.size)
    return table.set_column(1, "ts_recv", pa.array(recv))


def _delay(rng: np.random.Generator, n: int) -> np.ndarray:
    """Network and parse delay in ns: ~0.6 ms median, a long tail."""
    return rng.lognormal(np.log(600_000), 0.6, n).astype(np.int64)


def frame_recv(rng: np.random.Generator, ts: np.ndarray, frame_ms: float) -> np.ndarray:
    """``ts_recv`` as feeds stamp it: once per received frame (every adapter takes one
    clock reading per frame), a frame carrying every event since the previous one. Frames
    leave the venue at exponential gaps of ``frame_ms`` on average and arrive ``_delay``
    later, at nanosecond resolution."""
    span = int(ts[-1] - ts[0]) + 1
    frames = int(span / (frame_ms * 1e6)) + 2
    sent = ts[0] + np.cumsum(rng.exponential(frame_ms * 1e6, frames)).astype(np.int64)
    sent = np.append(sent, ts[-1] + 1)
    index = np.minimum(np.searchsorted(sent, ts, side="left"), sent.size - 1)
    arrival = sent + _delay(rng, sent.size)
    return np.maximum(arrival[index], ts)


def session_trades(n: int, open_ns: int, seed: int = 1, frame_ms: float = 10.0) -> pa.RecordBatch:
    """One symbol (SPY), ``n`` trades over one session, as one batch."""
    table = session(n, open_ns, {"SPY": (600.0, 1.0)}, seed, frame_ms)
    return table.combine_chunks().to_batches()[0]
