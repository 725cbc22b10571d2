"""Column builders shared by the .scid and .depth decoders: times, prices, constant strings.

Everything here is one vector pass; building a million-row string column from a Python list
would cost more than decoding the file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

SIERRA_EPOCH_DAYS = 25_569
"""days from Sierra's (and OLE's) epoch 1899-12-30 to 1970-01-01"""
US_PER_DAY = 86_400_000_000
SIERRA_EPOCH_US = SIERRA_EPOCH_DAYS * US_PER_DAY
MAX_UNIX_US = 4_102_444_800_000_000
"""2100-01-01: later stamps are garbage, not data"""

FloatArray = npt.NDArray[np.float64]


def unix_us_from_sierra(
    raw: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """SCDateTime values to Unix µs, and which of them are plausible dates.

    Current files hold int64 µs since 1899-12-30. Very old ones held an OLE double (days
    since the same epoch); read as int64 such a value is absurd (~4.7e18), and an int64 µs
    read as a double is a denormal, so each record tells which it is. Old-format times are
    rounded to the millisecond, the finest they carried."""
    unix_us = raw - SIERRA_EPOCH_US
    plausible = unix_us.view(np.uint64) < MAX_UNIX_US  # negatives wrap to huge: one compare
    if plausible.all():
        return unix_us, plausible
    days = raw.view("<f8")
    with np.errstate(invalid="ignore", over="ignore"):
        old = ~plausible & np.isfinite(days)
        old &= (days >= SIERRA_EPOCH_DAYS) & (days < SIERRA_EPOCH_DAYS + MAX_UNIX_US / US_PER_DAY)
    if old.any():
        ms = np.round((days[old] - SIERRA_EPOCH_DAYS) * (US_PER_DAY / 1000))
        unix_us = unix_us.copy()
        unix_us[old] = ms.astype(np.int64) * 1000
        plausible = plausible | old
    return unix_us, plausible


def tick_decimals(tick: float) -> int:
    """Decimals needed to write the tick size exactly (0.25 -> 2, 0.03125 -> 5, 5 -> 0)."""
    for decimals in range(10):
        if abs(round(tick, decimals) - tick) < 1e-12:
            return decimals
    return 10


def round_prices(values: npt.NDArray[np.float32], tick: float | None) -> FloatArray:
    """float32 prices to float64 without the float noise: to the tick when known, else to
    7 significant digits (what a float32 holds). The result is the double nearest the
    decimal price (4048.1 for a 0.1 tick, never 4048.1000000000004)."""
    prices = values.astype(np.float64)
    if tick is None:
        return _round_significant(prices)
    decimals = tick_decimals(tick)
    scale = 10.0**decimals
    steps = round(tick * scale)
    if steps == 1:  # ticks of 0.01, 0.1, 1: three in-place passes
        np.multiply(prices, scale, out=prices)
        np.rint(prices, out=prices)
        np.divide(prices, scale, out=prices)
        return prices
    # k ticks = k * steps units of 10**-decimals: an integer, then one correctly rounded division
    np.multiply(prices, scale / steps, out=prices)
    np.rint(prices, out=prices)
    np.multiply(prices, steps, out=prices)
    if decimals:
        np.divide(prices, scale, out=prices)
    return prices


def _round_significant(prices: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        magnitude = np.floor(np.log10(np.abs(prices)))
        magnitude = np.where(np.isfinite(magnitude), magnitude, 0)
        scale = np.power(10.0, 6 - magnitude)
        rounded: FloatArray = np.where(
            np.isfinite(prices) & (prices != 0), np.round(prices * scale) / scale, prices
        )
    return rounded


def constant_strings(value: str, n: int) -> pa.Array:
    """A string column holding one value n times, built from buffers."""
    data = value.encode()
    offsets = np.arange(0, (n + 1) * len(data), len(data) or 1, dtype=np.int32)
    if not data:
        offsets = np.zeros(n + 1, np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def aggressor_column(bid_volume: npt.NDArray[Any], ask_volume: npt.NDArray[Any]) -> pa.Array:
    """ "B" where the volume traded at the ask, "S" at the bid, null where neither side
    (or both) carries it; built from buffers (one byte per known row)."""
    known = bid_volume != ask_volume
    letters = np.where(bid_volume > ask_volume, np.uint8(ord("S")), np.uint8(ord("B")))
    n = letters.size
    if known.all():
        offsets = np.arange(n + 1, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(letters))
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(known, out=offsets[1:])
    validity = pa.py_buffer(np.packbits(known, bitorder="little"))
    data = pa.py_buffer(np.ascontiguousarray(letters[known]))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), data, validity)
