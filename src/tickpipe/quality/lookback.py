"""The outlier rule's look-back, for every symbol of a batch at once.

Each group's carried tail (its last ``W`` candidate prices, NaN-padded on the left) and
then its candidates' prices are laid out block after block in one flat array. A candidate
at flat position ``p`` finds its previous ``w`` prices at ``p - w .. p - 1`` and its
previous ``DEV_WINDOW`` moves among the prices at ``p - DEV_WINDOW - 1 .. p - 1``, in
whichever group it is: so one gather serves every median, one pass of shifted adds every
typical move, and one gather the tails to carry, with no loop over groups or rows.

What a candidate sees is only its own previous prices, combined in a fixed order, so its
numbers do not depend on how the stream was split into batches (see rules.py); they are
the same bits the previous per-group implementation (np.sort, np.nansum) gave.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt

DEV_WINDOW = 32
"""candidate moves averaged into the typical move"""
NETWORK_FROM = 256
"""candidates from which a sorting network beats ``np.sort``'s call per window (measured:
1 µs for one window; 2 ms for 65,536 windows of 5, against 0.6 ms for the network)"""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, slots=True)
class LookBack:
    median: FloatArray
    """per candidate: the median of its previous ``w`` prices, NaN ignored (NaN if none)"""
    dev: FloatArray
    """per candidate: the mean absolute move over its previous DEV_WINDOW prices (0 if none)"""
    tails: FloatArray
    """[group, W]: each group's last ``W`` candidate prices after this batch"""


def tail_length(window: int) -> int:
    """Candidate prices carried per symbol: enough for the median and the typical move."""
    return max(window, DEV_WINDOW + 1)


def look_back(
    values: FloatArray, group: IntArray, counts: IntArray, tails: FloatArray, windows: IntArray
) -> LookBack:
    """``values``: the candidates' prices in row order, ``group`` their group, ``counts``
    candidates per group; ``tails`` [group, W] and ``windows`` [group] from the state."""
    width = tails.shape[1]
    if counts.size == 1:
        flat = np.concatenate((tails[0], values))
        position = width + np.arange(values.size)
        carried = flat[None, -width:]
    else:
        ends = np.arange(width, width * (counts.size + 1), width) + counts.cumsum()
        position = group * width + (width + np.arange(values.size))
        flat = np.empty(ends[-1])
        flat[position] = values
        flat[(ends - counts)[:, None] + _lanes(width)] = tails
        carried = flat[ends[:, None] + _lanes(width)]
    if values.size == 0:
        return LookBack(np.zeros(0), np.zeros(0), carried)
    window = _windows(flat, position, windows, group)
    return LookBack(_median(window), _typical_move(flat, position), carried)


@functools.cache
def _lanes(width: int) -> IntArray:
    """``-width .. -1``: a block's offsets back from its end."""
    return np.arange(-width, 0, dtype=np.int64)


@functools.cache
def _back(window: int) -> IntArray:
    """[window, 1]: offsets ``-window .. -1`` down the rows of a window matrix."""
    return np.arange(-window, 0, dtype=np.int64)[:, None]


def _windows(
    flat: FloatArray, position: IntArray, windows: IntArray, group: IntArray
) -> FloatArray:
    """[w, candidate]: each candidate's previous ``w`` prices down its column; a shorter
    window's extra rows hold NaN, which the median ignores."""
    widest = int(windows.max()) if windows.size > 1 else int(windows[0])
    if windows.size == 1 or int(windows.min()) == widest:
        window: FloatArray = flat[position + _back(widest)]
        return window
    own = windows[group]
    row = np.arange(widest)[:, None]
    inside = row < own
    index = position - own + row
    return np.where(inside, flat[np.where(inside, index, 0)], np.nan)


def _median(window: FloatArray) -> FloatArray:
    """Column medians as np.sort orders them (NaN last): the mean of the two middle valid
    values, NaN for a column without any."""
    ordered = _sorted_columns(window)
    widest = window.shape[0]
    missing = np.isnan(window)
    if not missing.any():
        middle: FloatArray = (ordered[(widest - 1) // 2] + ordered[widest // 2]) / 2
        return middle
    valid = widest - np.count_nonzero(missing, axis=0)
    columns = np.arange(window.shape[1])
    lo = np.maximum((valid - 1) // 2, 0)
    hi = np.maximum(valid // 2, 0)
    middle = (ordered[lo, columns] + ordered[hi, columns]) / 2
    median: FloatArray = np.where(valid > 0, middle, np.nan)
    return median


def _sorted_columns(window: FloatArray) -> FloatArray:
    """Each column sorted ascending. The valid values come first either way: np.sort puts
    NaN last, and the network sorts NaN as +inf (a real +inf equals it, so the values at
    valid positions are the same)."""
    if window.shape[1] < NETWORK_FROM:
        return np.sort(window, axis=0)
    rows = np.where(np.isnan(window), np.inf, window)
    n = rows.shape[0]
    low = np.empty(rows.shape[1])
    for rnd in range(n):  # odd-even transposition: n rounds sort n rows (a row per offset)
        for i in range(rnd % 2, n - 1, 2):
            np.minimum(rows[i], rows[i + 1], out=low)
            np.maximum(rows[i], rows[i + 1], out=rows[i + 1])
            rows[i] = low
    return rows


def _typical_move(flat: FloatArray, position: IntArray) -> FloatArray:
    """Mean absolute move over each candidate's previous DEV_WINDOW prices, counting only
    the moves that are numbers (none while the tail is still NaN padding)."""
    moves = np.abs(flat[1:] - flat[:-1])
    first = position - (DEV_WINDOW + 1)
    missing = np.isnan(moves)
    if not missing.any():
        full: FloatArray = window_sums(moves)[first] / DEV_WINDOW
        return full
    total = window_sums(np.where(missing, 0.0, moves))[first]
    present = np.empty(moves.size + 1, dtype=np.int64)
    present[0] = 0
    np.cumsum(~missing, out=present[1:])
    counted = present[first + DEV_WINDOW] - present[first]
    dev: FloatArray = np.where(counted > 0, total / np.maximum(counted, 1), 0.0)
    return dev


def window_sums(x: FloatArray) -> FloatArray:
    """``out[s]`` = the sum of ``x[s : s + DEV_WINDOW]`` (written out for 32), added in
    numpy's order for 32 values (eight running sums of every eighth value, then pairwise), so each window's sum
    is the bits ``np.sum`` gives it and depends on nothing outside the window: six shifted
    adds over the array instead of 32 per window, and unlike a difference of cumulative
    sums no rounding carried in from earlier windows, which would make a verdict depend on
    where the batch began. Two buffers take turns: every fresh large array costs page
    faults once glibc has handed freed memory back (measured 0.45 ms for 34,000 values
    with four temporaries)."""
    eighths = x[:-24] + x[8:-16]
    eighths += x[16:-8]
    eighths += x[24:]
    pairs = eighths[:-1] + eighths[1:]
    n = eighths.size
    quads = np.add(pairs[:-2], pairs[2:], out=eighths[: n - 3])
    out: FloatArray = np.add(quads[:-4], quads[4:], out=pairs[: n - 7])
    return out
