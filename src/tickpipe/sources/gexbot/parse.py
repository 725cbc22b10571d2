"""gexbot REST bodies -> GexLevels columns. Pure: bytes in, Arrow out, no I/O.

A classic chain (``GET /v2/SPX/classic/zero``, gexbot's README example, ladder trimmed)::

    {"timestamp": 1777492800, "ticker": "SPX", "min_dte": 0, "sec_min_dte": 1,
     "spot": 7138.55, "zero_gamma": 7112.95, "major_pos_vol": 7135, "major_pos_oi": 7200,
     "major_neg_vol": 7100, "major_neg_oi": 6900,
     "strikes": [[6890, -228.01, -86.9, [-240.55, -243.15, -245.22, -221.27, -220.12]], ...],
     "sum_gex_vol": 1712585.519, "sum_gex_oi": 51521.105, "delta_risk_reversal": 0.118,
     "max_priors": [[7140, 170979.742], [7135, 1145886.722], ...]}

What real recordings show and the parser tolerates: ``0`` means "not computed" (a holiday
zeroes zero gamma and every volume field), so a 0 level or sum is stored as missing,
never as a price of 0; ladder rows are ``[strike, gex_vol, gex_oi, priors]`` (the row
layout is community knowledge, not documented; only the first three columns are read);
unknown top-level fields are reported, not fatal. Nonsense is refused with a reason the
poller quarantines beside the raw body: a spot that is not a positive number, a ladder
value that is not finite, a zero gamma far outside the ladder.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa

from tickpipe.clock import NS_PER_SECOND
from tickpipe.errors import ParseError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.sources.gexbot.endpoints import View

SOURCE = "gexbot"
FloatArray = npt.NDArray[np.float64]

CHAIN_FIELDS = frozenset(
    {
        "timestamp",
        "ticker",
        "min_dte",
        "sec_min_dte",
        "spot",
        "zero_gamma",
        "major_pos_vol",
        "major_pos_oi",
        "major_neg_vol",
        "major_neg_oi",
        "strikes",
        "sum_gex_vol",
        "sum_gex_oi",
        "delta_risk_reversal",
        "max_priors",
    }
)
MAJORS_FIELDS = frozenset(
    {
        "timestamp",
        "ticker",
        "spot",
        "mpos_vol",
        "mpos_oi",
        "mneg_vol",
        "mneg_oi",
        "zero_gamma",
        "net_gex_vol",
        "net_gex_oi",
    }
)
MAXCHANGE_WINDOWS = ("current", "one", "five", "ten", "fifteen", "thirty")
"""max-change look-backs in the order stored: now, 1, 5, 10, 15 and 30 minutes"""
MAXCHANGE_FIELDS = frozenset({"timestamp", "ticker", *MAXCHANGE_WINDOWS})

ZERO_GAMMA_SPOT_RANGE = (0.5, 1.5)
"""without a ladder, a zero gamma outside spot x this range is refused as nonsense"""


def to_usd_per_1pct(values: FloatArray | float, unit_usd: float) -> FloatArray | float:
    """gexbot's GEX numbers in tickpipe's unit. The one place units are converted.

    tickpipe: USD of dealer delta change per 1 % move of the underlying, per contract
    Γ·OI·100·S²·0.01 (``gex/exposure.py``), dealers long calls and short puts.
    gexbot: the same quantity (calls positive, puts negative, per 1 % move) in a unit it
    does not document; ``GEXBOT_GEX_UNIT_USD`` says how many USD one unit is (default
    1e6, the community's reading "$ millions"). Prices (spot, zero gamma, majors,
    strikes) are plain prices on REST: the x100/x1000 integer scaling is the WebSocket's.
    """
    return values * unit_usd


@dataclasses.dataclass(frozen=True, slots=True)
class Levels:
    """One decoded answer; GEX values already in USD per 1 % move."""

    ts_ns: int
    spot: float
    zero_gamma: float | None = None
    major_pos_vol: float | None = None
    major_pos_oi: float | None = None
    major_neg_vol: float | None = None
    major_neg_oi: float | None = None
    net_gex_vol: float | None = None
    net_gex_oi: float | None = None
    strikes: FloatArray = dataclasses.field(default_factory=lambda: np.empty(0))
    gex_oi: FloatArray = dataclasses.field(default_factory=lambda: np.empty(0))
    """per strike, by open interest (the ladder tickpipe stores, as its own engine does)"""
    unknown: tuple[str, ...] = ()
    """top-level fields this parser does not know (counted, not fatal)"""


def decode(
    body: bytes,
    view: View,
    *,
    ticker: str,
    unit_usd: float,
    spot: float | None = None,
) -> Levels:
    """One REST body of ``view`` for ``ticker``; ``spot`` is the ticker's latest spot,
    needed by max-change answers, which carry none. Raises ParseError with the reason."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc}", source=SOURCE, raw=body) from exc
    if not isinstance(obj, dict):
        raise ParseError(
            f"expected a JSON object, got {type(obj).__name__}", source=SOURCE, raw=body
        )
    try:
        return _decode(obj, view, ticker=ticker, unit_usd=unit_usd, spot=spot)
    except ParseError as exc:
        exc.source, exc.symbol, exc.raw = SOURCE, ticker, body
        raise


def _decode(
    obj: dict[str, Any], view: View, *, ticker: str, unit_usd: float, spot: float | None
) -> Levels:
    answered = obj.get("ticker")
    if answered is not None and str(answered).upper() != ticker:
        raise ParseError(f"asked for {ticker}, the answer is for {answered!r}")
    stamp = _number(obj, "timestamp", required=True)
    assert stamp is not None
    if not 946_684_800 <= stamp < 4_102_444_800:  # 2000-01-01 .. 2100-01-01, in seconds
        raise ParseError(f"timestamp {stamp!r} is not Unix seconds")
    ts_ns = round(stamp * NS_PER_SECOND)
    if view is View.MAXCHANGE:
        if spot is None:
            raise ParseError("a max-change answer has no spot and none is known yet")
        return _maxchange(obj, ts_ns, spot, unit_usd)
    spot_value = _number(obj, "spot", required=True)
    assert spot_value is not None
    if spot_value <= 0:
        raise ParseError(f"spot {spot_value!r} is not a positive price")
    if view is View.MAJORS:
        levels = Levels(
            ts_ns=ts_ns,
            spot=spot_value,
            zero_gamma=_level(obj, "zero_gamma"),
            major_pos_vol=_level(obj, "mpos_vol"),
            major_pos_oi=_level(obj, "mpos_oi"),
            major_neg_vol=_level(obj, "mneg_vol"),
            major_neg_oi=_level(obj, "mneg_oi"),
            net_gex_vol=_usd(obj, "net_gex_vol", unit_usd),
            net_gex_oi=_usd(obj, "net_gex_oi", unit_usd),
            unknown=tuple(sorted(obj.keys() - MAJORS_FIELDS)),
        )
    else:
        strikes, gex_oi = _ladder(obj.get("strikes"))
        levels = Levels(
            ts_ns=ts_ns,
            spot=spot_value,
            zero_gamma=_level(obj, "zero_gamma"),
            major_pos_vol=_level(obj, "major_pos_vol"),
            major_pos_oi=_level(obj, "major_pos_oi"),
            major_neg_vol=_level(obj, "major_neg_vol"),
            major_neg_oi=_level(obj, "major_neg_oi"),
            net_gex_vol=_usd(obj, "sum_gex_vol", unit_usd),
            net_gex_oi=_usd(obj, "sum_gex_oi", unit_usd),
            strikes=strikes,
            gex_oi=np.asarray(to_usd_per_1pct(gex_oi, unit_usd), dtype=np.float64),
            unknown=tuple(sorted(obj.keys() - CHAIN_FIELDS)),
        )
    _check_zero_gamma(levels)
    return levels


def _number(obj: dict[str, Any], key: str, *, required: bool = False) -> float | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ParseError(f"{key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(f"{key} is {value!r}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ParseError(f"{key} is {value!r}, not a finite number")
    return number


def _level(obj: dict[str, Any], key: str) -> float | None:
    """A price level; 0 (or absent) means gexbot has not computed it."""
    value = _number(obj, key)
    if value is None or value == 0:
        return None
    if value < 0:
        raise ParseError(f"{key} is {value!r}, not a price")
    return value


def _usd(obj: dict[str, Any], key: str, unit_usd: float) -> float | None:
    """A GEX sum in USD per 1 %; exactly 0 means not computed (a holiday's volume sums)."""
    value = _number(obj, key)
    if value is None or value == 0:
        return None
    return float(to_usd_per_1pct(value, unit_usd))


def _ladder(rows: object) -> tuple[FloatArray, FloatArray]:
    """(strikes, gex by OI) ascending by strike, from ``[strike, gex_vol, gex_oi, ...]``."""
    if rows is None:
        raise ParseError("strikes is missing")
    if not isinstance(rows, list):
        raise ParseError(f"strikes is {type(rows).__name__}, not a list of rows")
    if not rows:
        return np.empty(0), np.empty(0)
    try:
        table = np.array([row[:3] for row in rows], dtype=np.float64)
    except (TypeError, ValueError, KeyError) as exc:
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, list) or len(r) < 3), None)
        where = f"strikes[{bad}]" if bad is not None else "a strikes row"
        raise ParseError(f"{where} is not [strike, gex_vol, gex_oi, ...]: {exc}") from exc
    if table.ndim != 2 or table.shape[1] != 3:
        raise ParseError("strikes rows are not [strike, gex_vol, gex_oi, ...]")
    finite = np.isfinite(table).all(axis=1)
    if not finite.all():
        raise ParseError(f"strikes[{int(np.argmin(finite))}] has a value that is not finite")
    if (table[:, 0] <= 0).any():
        raise ParseError(f"strikes[{int(np.argmax(table[:, 0] <= 0))}] has a strike <= 0")
    order = np.argsort(table[:, 0], kind="stable")
    return table[order, 0].copy(), table[order, 2].copy()


def _check_zero_gamma(levels: Levels) -> None:
    """A zero gamma far outside the ladder (beyond one ladder width on either side), or
    without a ladder outside spot x 0.5..1.5, is nonsense, not a level."""
    zg = levels.zero_gamma
    if zg is None:
        return
    if levels.strikes.size >= 2:
        lo, hi = float(levels.strikes[0]), float(levels.strikes[-1])
        width = hi - lo
        if not lo - width <= zg <= hi + width:
            raise ParseError(f"zero_gamma {zg} is far outside the ladder {lo}..{hi}")
        return
    low, high = ZERO_GAMMA_SPOT_RANGE
    if not low * levels.spot <= zg <= high * levels.spot:
        raise ParseError(f"zero_gamma {zg} is far from spot {levels.spot}")


def _maxchange(obj: dict[str, Any], ts_ns: int, spot: float, unit_usd: float) -> Levels:
    """The six look-back windows as a small ladder: strikes[i] is the strike whose GEX
    changed most over window i (now, 1, 5, 10, 15, 30 min), gex its change; a window
    gexbot has not computed ([0, 0]) is NaN."""
    strikes = np.full(len(MAXCHANGE_WINDOWS), np.nan)
    change = np.full(len(MAXCHANGE_WINDOWS), np.nan)
    for i, window in enumerate(MAXCHANGE_WINDOWS):
        pair = obj.get(window)
        if pair is None:
            continue
        if (
            not isinstance(pair, list)
            or len(pair) < 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair[:2])
            or not all(math.isfinite(v) for v in pair[:2])
        ):
            raise ParseError(f"{window} is {pair!r}, not [strike, change]")
        if pair[0] > 0:
            strikes[i] = pair[0]
            change[i] = pair[1]
    return Levels(
        ts_ns=ts_ns,
        spot=spot,
        strikes=strikes,
        gex_oi=np.asarray(to_usd_per_1pct(change, unit_usd), dtype=np.float64),
        unknown=tuple(sorted(obj.keys() - MAXCHANGE_FIELDS)),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One decoded answer ready to emit: where it belongs and its place in the sequence."""

    symbol: str
    category: str
    seq: int
    recv_ns: int
    levels: Levels
    view: View = View.CHAIN


def levels_batch(rows: Sequence[Row]) -> pa.RecordBatch:
    """GexLevels columns for a delivery, built column by column.

    ``call_wall``/``put_wall`` carry gexbot's majors by open interest (the strikes of the
    most positive and most negative net GEX: what gexbot's users call the walls);
    ``total_gex_usd_per_1pct`` its net GEX by open interest (0 when not computed)."""
    n = len(rows)
    levels = [r.levels for r in rows]
    chain = [r.view is not View.MAXCHANGE for r in rows]
    lengths = np.array([lv.strikes.size for lv in levels], dtype=np.int32)
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    strikes = np.concatenate([lv.strikes for lv in levels]) if n else np.empty(0)
    gex = np.concatenate([lv.gex_oi for lv in levels]) if n else np.empty(0)

    def opt(values: list[float | None]) -> pa.Array:
        return pa.array(values, pa.float64())

    columns: dict[str, pa.Array] = {
        "ts_event": pa.array([lv.ts_ns for lv in levels], pa.int64()),
        "ts_recv": pa.array([r.recv_ns for r in rows], pa.int64()),
        "symbol": pa.array([r.symbol for r in rows], pa.string()),
        "spot": pa.array([lv.spot for lv in levels], pa.float64()),
        "zero_gamma": opt([lv.zero_gamma for lv in levels]),
        "call_wall": opt(
            [lv.major_pos_oi if c else None for lv, c in zip(levels, chain, strict=True)]
        ),
        "put_wall": opt(
            [lv.major_neg_oi if c else None for lv, c in zip(levels, chain, strict=True)]
        ),
        "total_gex_usd_per_1pct": pa.array([lv.net_gex_oi or 0.0 for lv in levels], pa.float64()),
        "strikes": pa.ListArray.from_arrays(offsets, pa.array(strikes, pa.float64())),
        "gex_usd_per_1pct": pa.ListArray.from_arrays(offsets, pa.array(gex, pa.float64())),
        "source": pa.array([SOURCE] * n, pa.string()),
        "seq": pa.array([r.seq for r in rows], pa.int64()),
        "category": pa.array([r.category for r in rows], pa.string()),
        "major_pos_vol": opt([lv.major_pos_vol for lv in levels]),
        "major_pos_oi": opt([lv.major_pos_oi for lv in levels]),
        "major_neg_vol": opt([lv.major_neg_vol for lv in levels]),
        "major_neg_oi": opt([lv.major_neg_oi for lv in levels]),
        "net_gex_vol": opt([lv.net_gex_vol for lv in levels]),
        "net_gex_oi": opt([lv.net_gex_oi for lv in levels]),
    }
    schema = SCHEMAS[Kind.GEX]
    return pa.RecordBatch.from_arrays([columns[f.name] for f in schema], schema=schema)
