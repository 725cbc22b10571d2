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

import numpy as np
import numpy.typing as npt

DEV_WINDOW = 32
"""candidate moves averaged into the typical move"""
NETWORK_FROM = 256
"""candidates from which a sorting network beats ``np.sort``'s call per window (measured:
1 µs for one window; 2 ms for 65,536 windows of 5, against 0.6 ms for the network)"""

BoolArray = npt.NDArray[np.bool_]
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
    values: FloatArray,
    group: IntArray | None,
    counts: IntArray,
    tails: FloatArray,
    windows: IntArray,
) -> LookBack:
    """``values``: the candidates' prices in row order, ``group`` their group (None: one
    group), ``counts`` candidates per group; ``tails`` [group, W] and ``windows`` [group]
    from the state."""
    empty = np.zeros(0)
    if group is None:  # one symbol: its candidates sit in one run, read by slices
        flat = np.concatenate((tails[0], values))
        run = slice(tails.shape[1], flat.size)
        carried = flat[None, -tails.shape[1] :]
        if values.size == 0:
            return LookBack(empty, empty, carried)
        window = _run_windows(flat, run, int(windows[0]))
        return LookBack(_median(window), _typical_move(flat, run), carried)
    flat, position, carried = _blocks(values, group, counts, tails)
    if values.size == 0:
        return LookBack(empty, empty, carried)
    window = _gathered_windows(flat, position, windows, group)
    return LookBack(_median(window), _typical_move(flat, position), carried)


def _blocks(
    values: FloatArray, group: IntArray, counts: IntArray, tails: FloatArray
) -> tuple[FloatArray, IntArray, FloatArray]:
    """(the flat array, each candidate's position in it, each group's tail after it)."""
    width = tails.shape[1]
    ends = np.arange(width, width * (counts.size + 1), width) + counts.cumsum()
    position = group * width + (width + np.arange(values.size))
    flat = np.empty(ends[-1])
    flat[position] = values
    runs = _runs(flat, width)
    runs[ends - counts - width] = tails
    return flat, position, runs[ends - width]


Index = slice | IntArray
"""flat positions: a run (one symbol) or one per candidate"""


def _shift(index: Index, by: int) -> Index:
    if isinstance(index, slice):
        return slice(index.start + by, index.stop + by)
    return index + by


def _runs(flat: FloatArray, width: int) -> FloatArray:
    """[start, width]: row ``s`` is ``flat[s : s + width]``, a view. Rows overlap, so only
    disjoint ones may be written (a group's tail is its own); a row per group is one copy
    each way where a [group, width] index cost 4-10 times as much for 1,000 groups."""
    runs: FloatArray = np.lib.stride_tricks.as_strided(
        flat, shape=(flat.size - width + 1, width), strides=(flat.itemsize, flat.itemsize)
    )
    return runs


def _run_windows(flat: FloatArray, run: slice, width: int) -> FloatArray:
    """[w, candidate], a new array: row ``m`` holds each candidate's price ``w - m`` back,
    a slice of the run per row (a [w, candidate] index costs as much again as the prices
    it fetches: 4 ms at 65,536)."""
    window = np.empty((width, run.stop - run.start))
    for m in range(width):
        window[m] = flat[_shift(run, m - width)]
    return window


def _gathered_windows(
    flat: FloatArray, position: IntArray, windows: IntArray, group: IntArray
) -> FloatArray:
    """As ``_run_windows`` for candidates of several groups: one index serves every row,
    and a shorter window's extra rows hold NaN, which the median ignores."""
    widest = int(windows.max())
    window = np.empty((widest, position.size))
    same = int(windows.min()) == widest
    own = widest if same else windows[group]
    start = position - own
    for m in range(widest):
        # flat[m:] at start is flat at start + m, without an index array per row; past a
        # shorter window's end the gather reads neighbours, masked right after
        np.take(flat[m:], start, out=window[m], mode="clip")
    if not same:
        window[np.arange(widest)[:, None] >= own] = np.nan
    return window


def _median(window: FloatArray) -> FloatArray:
    """Column medians as np.sort orders them (NaN last): the mean of the two middle valid
    values, NaN for a column without any. Sorts ``window`` in place."""
    widest = window.shape[0]
    missing = np.isnan(window)
    if not missing.any():
        _sort_columns(window, None)
        middle: FloatArray = (window[(widest - 1) // 2] + window[widest // 2]) / 2
        return middle
    valid = widest - np.count_nonzero(missing, axis=0)
    _sort_columns(window, missing)
    columns = np.arange(window.shape[1])
    lo = np.maximum((valid - 1) // 2, 0)
    hi = np.maximum(valid // 2, 0)
    middle = (window[lo, columns] + window[hi, columns]) / 2
    median: FloatArray = np.where(valid > 0, middle, np.nan)
    return median


def _sort_columns(window: FloatArray, missing: BoolArray | None) -> None:
    """Each column sorted ascending, in place. The valid values come first either way:
    np.sort puts NaN last, and the network sorts NaN as +inf (a real +inf equals it, so
    the values at valid positions are the same)."""
    if window.shape[1] < NETWORK_FROM:
        window.sort(axis=0)
        return
    if missing is not None:
        window[missing] = np.inf
    n = window.shape[0]
    low = np.empty(window.shape[1])
    for rnd in range(n):  # odd-even transposition: n rounds sort n rows (a row per offset)
        for i in range(rnd % 2, n - 1, 2):
            np.minimum(window[i], window[i + 1], out=low)
            np.maximum(window[i], window[i + 1], out=window[i + 1])
            window[i] = low


def _typical_move(flat: FloatArray, position: Index) -> FloatArray:
    """Mean absolute move over each candidate's previous DEV_WINDOW prices, counting only
    the moves that are numbers (none while the tail is still NaN padding)."""
    moves = np.abs(flat[1:] - flat[:-1])
    first = _shift(position, -(DEV_WINDOW + 1))
    missing = np.isnan(moves)
    if not missing.any():
        full: FloatArray = window_sums(moves)[first] / DEV_WINDOW
        return full
    total = window_sums(np.where(missing, 0.0, moves))[first]
    present = np.empty(moves.size + 1, dtype=np.int64)
    present[0] = 0
    np.cumsum(~missing, out=present[1:])
    counted = present[_shift(first, DEV_WINDOW)] - present[first]
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
