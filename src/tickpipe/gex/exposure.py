"""Gamma exposure (GEX) from an option-chain snapshot: pure functions, numpy only.

Units and conventions (every output field carries its unit in its name):

- Per option, dollars of delta change per 1 % move of the underlying:
  ``GEX_i = sign_i · Γ_i · OI_i · M · S² · 0.01`` (Perfiliev), with Γ the Black-Scholes
  gamma per share per $1, OI in contracts (or today's volume for ``basis="volume"``),
  M the contract multiplier (100).
- Sign convention (``convention``): ``long_calls_short_puts`` (default; dealers long the
  calls and short the puts customers trade: calls +, puts −), ``short_calls_short_puts``
  (SpotGamma-style: both −), ``short_calls_long_puts`` (calls −, puts +).
- Time to expiry is counted in minutes to the expiry instant (16:00 America/New_York
  unless the feed says otherwise), floored at ``min_minutes`` so 0DTE gamma stays finite;
  expired contracts are left out.
- Zero gamma: the spot S′ where the *repriced* profile GEX(S′) (each option's gamma
  recomputed at S′ with its own IV) changes sign: found on a grid over ±``grid_pct``,
  then refined by bracketed secant (Illinois) steps. Every crossing is reported; the one
  nearest spot is chosen.
- Walls: call wall = strike with the largest call GEX; put wall = strike with the largest
  |put GEX|; absolute-gamma strike = strike with the largest Σ|GEX|.

Cost: one matrix φ(d1) of (grid points × options) serves every category and basis at once
(a matrix product with the weight columns), so a full recompute is one pass over the chain.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

NS_PER_MINUTE = 60 * 1_000_000_000
MINUTES_PER_YEAR = 365.0 * 24 * 60
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

Convention = Literal["long_calls_short_puts", "short_calls_short_puts", "short_calls_long_puts"]
Category = Literal["full", "zero", "one"]
Basis = Literal["oi", "volume"]
CATEGORIES: tuple[Category, ...] = ("full", "zero", "one")
BASES: tuple[Basis, ...] = ("oi", "volume")
_SIGNS: dict[str, tuple[float, float]] = {
    "long_calls_short_puts": (1.0, -1.0),
    "short_calls_short_puts": (-1.0, -1.0),
    "short_calls_long_puts": (-1.0, 1.0),
}


@dataclasses.dataclass(frozen=True)
class Chain:
    """One underlying's option chain at one moment; arrays share one index."""

    underlying: str
    spot: float
    now_ns: int
    strike: FloatArray
    expiry_ns: IntArray
    """expiry instant, ns since the epoch (16:00 New York of the expiry date, usually)"""
    is_call: BoolArray
    open_interest: FloatArray
    volume: FloatArray
    iv: FloatArray
    """decimal; NaN where unknown (solve it from the mid first: ``greeks.implied_vol``)"""
    multiplier: float = 100.0


@dataclasses.dataclass(frozen=True)
class Params:
    r: float = 0.0
    q: float = 0.0
    min_minutes: float = 30.0
    full_max_days: float = 90.0
    grid_pct: float = 0.15
    grid_points: int = 61
    convention: Convention = "long_calls_short_puts"


@dataclasses.dataclass(frozen=True)
class Result:
    """GEX for one category and basis; dollar figures per 1 % move of the underlying."""

    category: Category
    basis: Basis
    spot: float
    contracts: int
    total_gex_usd_per_1pct: float
    call_gex_usd_per_1pct: float
    put_gex_usd_per_1pct: float
    zero_gamma: float | None
    zero_gamma_crossings: list[float]
    call_wall: float | None
    put_wall: float | None
    abs_gamma_strike: float | None
    strikes: FloatArray
    call_gex_by_strike: FloatArray
    put_gex_by_strike: FloatArray
    call_weight_by_strike: FloatArray
    put_weight_by_strike: FloatArray
    expiries_ns: IntArray
    gex_by_expiry: FloatArray
    profile_spot: FloatArray
    profile_gex: FloatArray

    @property
    def net_gex_by_strike(self) -> FloatArray:
        return self.call_gex_by_strike + self.put_gex_by_strike


def years_to_expiry(expiry_ns: IntArray, now_ns: int, min_minutes: float) -> FloatArray:
    """Minutes to the expiry instant, floored at ``min_minutes``, in years (365-day)."""
    minutes = (expiry_ns - now_ns) / NS_PER_MINUTE
    return np.maximum(minutes, min_minutes) / MINUTES_PER_YEAR


def category_masks(chain: Chain, live: BoolArray, params: Params) -> dict[Category, BoolArray]:
    """full: every live expiry up to ``full_max_days``; zero: the next expiry; one: the one after."""
    horizon = chain.now_ns + int(params.full_max_days * 1440 * NS_PER_MINUTE)
    full = live & (chain.expiry_ns <= horizon)
    upcoming = np.unique(chain.expiry_ns[full])
    zero = full & (chain.expiry_ns == upcoming[0]) if upcoming.size > 0 else np.zeros_like(full)
    one = full & (chain.expiry_ns == upcoming[1]) if upcoming.size > 1 else np.zeros_like(full)
    return {"full": full, "zero": zero, "one": one}


def _phi_terms(
    chain: Chain, params: Params, rows: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per option a, b, c with d1(S′) = (ln S′ + a)·b and Γ(S′)·S′ = c·φ(d1)."""
    t = years_to_expiry(chain.expiry_ns[rows], chain.now_ns, params.min_minutes)
    sigma = chain.iv[rows]
    vol_t = sigma * np.sqrt(t)
    a = (params.r - params.q + 0.5 * sigma * sigma) * t - np.log(chain.strike[rows])
    b = 1.0 / vol_t
    c = np.exp(-params.q * t) / vol_t * _INV_SQRT_2PI
    return a, b, c


def _gex_at(
    spots: FloatArray, spot: float, a: FloatArray, b: FloatArray, cw: FloatArray
) -> FloatArray:
    """GEX(S′) for each S′ in ``spots`` and each weight column of ``cw`` (options × k):
    0.01 · S′ · Σ_i cw_i · exp(−d1²/2). One (grid × options) matrix, then one product.

    The matrix is float32 (5x faster than float64 here), with d1 written around the spot,
    d1 = (ln(S′/S) + ln S + a)·b, so no large logs cancel in single precision: the profile
    stays within ~1e-6 of its float64 value relative to its peak. Roots are then refined
    in float64 (``_refine``)."""
    centred = (math.log(spot) + a).astype(np.float32)
    d1 = np.log(spots / spot).astype(np.float32)[:, None] + centred[None, :]
    d1 *= b.astype(np.float32)[None, :]
    np.square(d1, out=d1)
    d1 *= np.float32(-0.5)
    np.exp(d1, out=d1)
    result: FloatArray = (d1 @ cw.astype(np.float32)).astype(np.float64) * (0.01 * spots)[:, None]
    return result


def compute_all(chain: Chain, params: Params = Params()) -> dict[tuple[Category, Basis], Result]:
    """Every category and basis from one pass over the chain."""
    sign_call, sign_put = _SIGNS[params.convention]
    with np.errstate(invalid="ignore"):
        usable = (
            (chain.expiry_ns > chain.now_ns)
            & np.isfinite(chain.iv)
            & (chain.iv > 0)
            & np.isfinite(chain.strike)
            & (chain.strike > 0)
        )
    masks = category_masks(chain, usable, params)
    rows = np.flatnonzero(masks["full"])
    sign = np.where(chain.is_call[rows], sign_call, sign_put)
    weights = {
        "oi": np.nan_to_num(chain.open_interest[rows]) * chain.multiplier,
        "volume": np.nan_to_num(chain.volume[rows]) * chain.multiplier,
    }
    combos = [(cat, basis) for cat in CATEGORIES for basis in BASES]
    w = np.empty((rows.size, len(combos)))
    for j, (cat, basis) in enumerate(combos):
        w[:, j] = weights[basis] * sign * masks[cat][rows]
    s = chain.spot
    grid = np.linspace(s * (1 - params.grid_pct), s * (1 + params.grid_pct), params.grid_points)
    a, b, c = _phi_terms(chain, params, rows)
    cw = c[:, None] * w
    at_spot_and_grid = _gex_at(np.concatenate(([s], grid)), s, a, b, cw)
    # per-option GEX at spot, for the ladder: 0.01·S·c·φ(d1(S))·w
    d1 = (math.log(s) + a) * b
    unit = 0.01 * s * c * np.exp(-0.5 * d1 * d1)
    out: dict[tuple[Category, Basis], Result] = {}
    strikes_all = chain.strike[rows]
    calls = chain.is_call[rows].astype(bool)
    expiries = chain.expiry_ns[rows]
    for j, (cat, basis) in enumerate(combos):
        gex = unit * w[:, j]
        profile = at_spot_and_grid[1:, j]
        crossings = _crossings(grid, profile, a, b, cw[:, j])
        out[(cat, basis)] = _summarise(
            cat,
            basis,
            s,
            strikes_all,
            calls,
            expiries,
            gex,
            np.abs(w[:, j]) > 0,
            weights[basis] / chain.multiplier,
            grid,
            profile,
            crossings,
        )
    return out


def _crossings(
    grid: FloatArray, profile: FloatArray, a: FloatArray, b: FloatArray, cw: FloatArray
) -> list[float]:
    """Every sign change of the profile, refined inside its grid bracket."""
    if not np.any(profile != 0):
        return []  # no exposure at all (no open interest, say): no level to report
    sign = np.sign(profile)
    brackets = np.flatnonzero(sign[:-1] * sign[1:] < 0)
    roots = [float(grid[i]) for i in np.flatnonzero(profile == 0)]
    live = np.abs(cw) > 0
    a, b, cw = a[live], b[live], cw[live]
    for i in brackets:
        lo, hi = float(grid[i]), float(grid[i + 1])
        # options whose d1 stays beyond ±12 across the bracket add less than e^-72: skip them
        d_lo, d_hi = (math.log(lo) + a) * b, (math.log(hi) + a) * b
        near = ~(((d_lo > 12) & (d_hi > 12)) | ((d_lo < -12) & (d_hi < -12)))
        f_lo, f_hi = float(profile[i]), float(profile[i + 1])
        roots.append(_refine(lo, hi, f_lo, f_hi, a[near], b[near], cw[near]))
    return sorted(roots)


def _refine(
    lo: float, hi: float, f_lo: float, f_hi: float, a: FloatArray, b: FloatArray, cw: FloatArray
) -> float:
    """Illinois-modified regula falsi: bracketed, superlinear, one chain pass per step."""
    side = 0
    for _ in range(30):
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        d1 = (math.log(x) + a) * b
        f_x = 0.01 * x * float(np.dot(cw, np.exp(-0.5 * d1 * d1)))
        if f_x == 0 or (hi - lo) < 1e-7 * x:
            return x
        if (f_x > 0) == (f_hi > 0):
            hi, f_hi = x, f_x
            if side == 1:
                f_lo *= 0.5
            side = 1
        else:
            lo, f_lo = x, f_x
            if side == -1:
                f_hi *= 0.5
            side = -1
    return 0.5 * (lo + hi)


def _summarise(
    category: Category,
    basis: Basis,
    spot: float,
    strikes: FloatArray,
    calls: BoolArray,
    expiries: IntArray,
    gex: FloatArray,
    included: BoolArray,
    contracts_weight: FloatArray,
    grid: FloatArray,
    profile: FloatArray,
    crossings: list[float],
) -> Result:
    keep = included
    k, is_call, e, g, cnt = (
        strikes[keep],
        calls[keep],
        expiries[keep],
        gex[keep],
        contracts_weight[keep],
    )
    ladder, idx = np.unique(k, return_inverse=True)
    call_gex = _sum_by(idx, np.where(is_call, g, 0.0), ladder.size)
    put_gex = _sum_by(idx, np.where(is_call, 0.0, g), ladder.size)
    call_w = _sum_by(idx, np.where(is_call, cnt, 0.0), ladder.size)
    put_w = _sum_by(idx, np.where(is_call, 0.0, cnt), ladder.size)
    abs_gex = np.abs(call_gex) + np.abs(put_gex)
    exp_keys, eidx = np.unique(e, return_inverse=True)
    by_expiry = _sum_by(eidx, g, exp_keys.size)

    def argmax_strike(values: FloatArray) -> float | None:
        if values.size == 0 or not np.any(values > 0):
            return None
        return float(ladder[int(np.argmax(values))])

    zero = min(crossings, key=lambda x: abs(x - spot)) if crossings else None
    return Result(
        category=category,
        basis=basis,
        spot=spot,
        contracts=int(keep.sum()),
        total_gex_usd_per_1pct=float(g.sum()),
        call_gex_usd_per_1pct=float(g[is_call].sum()),
        put_gex_usd_per_1pct=float(g[~is_call].sum()),
        zero_gamma=zero,
        zero_gamma_crossings=crossings,
        call_wall=argmax_strike(np.abs(call_gex)),
        put_wall=argmax_strike(np.abs(put_gex)),
        abs_gamma_strike=argmax_strike(abs_gex),
        strikes=ladder,
        call_gex_by_strike=call_gex,
        put_gex_by_strike=put_gex,
        call_weight_by_strike=call_w,
        put_weight_by_strike=put_w,
        expiries_ns=exp_keys.astype(np.int64),
        gex_by_expiry=by_expiry,
        profile_spot=grid,
        profile_gex=profile,
    )


def compute(
    chain: Chain, category: Category = "full", basis: Basis = "oi", params: Params = Params()
) -> Result:
    return compute_all(chain, params)[(category, basis)]


def _sum_by(group: npt.NDArray[np.intp], values: FloatArray, size: int) -> FloatArray:
    return np.bincount(group, weights=values, minlength=size).astype(np.float64)
