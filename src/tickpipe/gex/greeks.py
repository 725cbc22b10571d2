"""Vectorised Black-Scholes greeks (numpy), with rate ``r`` and dividend yield ``q``.

Inputs broadcast: spot ``s``, strike ``k``, time to expiry ``t`` in years, volatility
``sigma`` as a decimal (0.2 = 20 %), ``is_call`` boolean. Gamma is the same for calls and
puts: Γ = e^(−qT)·φ(d1) / (S·σ·√T), per $1 of the underlying, per share.
Where ``t`` or ``sigma`` is not positive the greeks are NaN, never an exception.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def norm_cdf(x: ArrayLike) -> FloatArray:
    """Standard normal CDF, Hart (1968) as given by West (2005): double precision, no scipy."""
    xa = np.asarray(x, dtype=np.float64)
    ax = np.abs(xa)
    e = np.exp(-0.5 * ax * ax)
    num = 3.52624965998911e-02 * ax + 0.700383064443688
    for c in (
        6.37396220353165,
        33.912866078383,
        112.079291497871,
        221.213596169931,
        220.206867912376,
    ):
        num = num * ax + c
    den = 8.83883476483184e-02 * ax + 1.75566716318264
    for c in (
        16.064177579207,
        86.7807322029461,
        296.564248779674,
        637.333633378831,
        793.826512519948,
        440.413735824752,
    ):
        den = den * ax + c
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = ax + 0.65
        for c in (4.0, 3.0, 2.0, 1.0):
            tail = ax + c / tail
        small = np.where(ax < 7.07106781186547, e * num / den, e / tail / 2.506628274631)
    small = np.where(ax > 37.0, 0.0, small)
    return np.where(xa > 0, 1.0 - small, small)


def norm_pdf(x: ArrayLike) -> FloatArray:
    xa = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * xa * xa) / _SQRT_2PI


def d1_d2(
    s: ArrayLike, k: ArrayLike, t: ArrayLike, sigma: ArrayLike, r: float = 0.0, q: float = 0.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return d1, d2 and σ√T; entries with T ≤ 0 or σ ≤ 0 are NaN."""
    sa, ka, ta, va = (np.asarray(a, dtype=np.float64) for a in (s, k, t, sigma))
    with np.errstate(divide="ignore", invalid="ignore"):
        vol_t = np.where((ta > 0) & (va > 0), va * np.sqrt(np.maximum(ta, 0.0)), np.nan)
        d1 = (np.log(sa / ka) + (r - q + 0.5 * va * va) * ta) / vol_t
    return d1, d1 - vol_t, vol_t


def gamma(
    s: ArrayLike, k: ArrayLike, t: ArrayLike, sigma: ArrayLike, r: float = 0.0, q: float = 0.0
) -> FloatArray:
    d1, _, vol_t = d1_d2(s, k, t, sigma, r, q)
    sa = np.asarray(s, dtype=np.float64)
    ta = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp(-q * ta) * norm_pdf(d1) / (sa * vol_t)


def delta(
    s: ArrayLike,
    k: ArrayLike,
    t: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
    r: float = 0.0,
    q: float = 0.0,
) -> FloatArray:
    d1, _, _ = d1_d2(s, k, t, sigma, r, q)
    disc_q = np.exp(-q * np.asarray(t, dtype=np.float64))
    call = np.asarray(is_call, dtype=bool)
    return np.where(call, disc_q * norm_cdf(d1), disc_q * (norm_cdf(d1) - 1.0))


def price(
    s: ArrayLike,
    k: ArrayLike,
    t: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
    r: float = 0.0,
    q: float = 0.0,
) -> FloatArray:
    d1, d2, _ = d1_d2(s, k, t, sigma, r, q)
    sa, ka, ta = (np.asarray(a, dtype=np.float64) for a in (s, k, t))
    disc_q, disc_r = np.exp(-q * ta), np.exp(-r * ta)
    call = np.asarray(is_call, dtype=bool)
    call_px = sa * disc_q * norm_cdf(d1) - ka * disc_r * norm_cdf(d2)
    put_px = ka * disc_r * norm_cdf(-d2) - sa * disc_q * norm_cdf(-d1)
    return np.where(call, call_px, put_px)


def implied_vol(
    target_price: ArrayLike,
    s: ArrayLike,
    k: ArrayLike,
    t: ArrayLike,
    is_call: ArrayLike,
    r: float = 0.0,
    q: float = 0.0,
    *,
    low: float = 1e-4,
    high: float = 5.0,
    iterations: int = 60,
) -> FloatArray:
    """Black-Scholes implied volatility by vectorised bisection (robust where Newton is
    not: deep ITM/OTM, tiny vega). NaN where the price is outside the no-arbitrage range
    for vols in [low, high] or any input is missing."""
    price_t = np.asarray(target_price, dtype=np.float64)
    sa, ka, ta = (np.asarray(a, dtype=np.float64) for a in (s, k, t))
    call = np.asarray(is_call, dtype=bool)
    shape = np.broadcast(price_t, sa, ka, ta, call).shape
    lo = np.full(shape, low)
    hi = np.full(shape, high)
    p_lo = price(sa, ka, ta, lo, call, r, q)
    p_hi = price(sa, ka, ta, hi, call, r, q)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(price_t) & (price_t >= p_lo) & (price_t <= p_hi) & (ta > 0)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = price(sa, ka, ta, mid, call, r, q) > price_t
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return np.where(ok, 0.5 * (lo + hi), np.nan)
