"""Vector helpers over Arrow batches and numpy arrays for the hot path: no loop over rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

IntArray = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True, slots=True)
class Grouped:
    """A batch reordered so each symbol's rows are contiguous, arrival order kept within.

    ``symbols[i]`` owns rows ``starts[i] : starts[i] + counts[i]``; ``codes`` gives each
    row's group number.
    """

    batch: pa.RecordBatch
    symbols: list[str]
    starts: IntArray
    counts: IntArray
    codes: IntArray

    def slices(self) -> list[tuple[str, pa.RecordBatch]]:
        return [
            (sym, self.batch.slice(int(start), int(count)))
            for sym, start, count in zip(self.symbols, self.starts, self.counts, strict=True)
        ]

    def filter(self, keep: npt.NDArray[np.bool_]) -> Grouped:
        """Keep rows where ``keep`` is true; the result stays grouped."""
        if bool(keep.all()):
            return self
        codes = self.codes[keep]
        counts_all = np.bincount(codes, minlength=len(self.symbols)).astype(np.int64)
        present = counts_all > 0
        new_codes = np.cumsum(present) - 1
        counts = counts_all[present]
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        return Grouped(
            batch=self.batch.filter(pa.array(keep)),
            symbols=[s for s, p in zip(self.symbols, present, strict=True) if p],
            starts=starts,
            counts=counts,
            codes=new_codes[codes].astype(np.int64),
        )


def group_by_symbol(batch: pa.RecordBatch) -> Grouped:
    """Stable-sort a batch by symbol: one sort, one dictionary encode, one take, no row loop.

    A batch of one symbol (a websocket's single event, an import's chunk) is the common
    case and is recognised by one vectorised comparison instead (measured: 35 -> 2 µs for
    one event, 1.5 ms -> 0.2 ms for 65,536 events of one symbol).
    """
    n = batch.num_rows
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Grouped(batch, [], empty, empty, empty)
    column = batch.column("symbol")
    if _one_value(column):
        counts = np.array([n], dtype=np.int64)
        return Grouped(
            batch, [column[0].as_py()], np.zeros(1, np.int64), counts, np.zeros(n, np.int64)
        )
    order = pc.sort_indices(column).to_numpy()  # stable; bytewise is str order in UTF-8
    in_order = bool(np.all(order[1:] > order[:-1]))
    encoded = pc.dictionary_encode(column if in_order else column.take(order))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names: list[str] = encoded.dictionary.to_pylist()  # first seen in sorted rows: sorted
    counts = np.bincount(codes, minlength=len(names)).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    sorted_batch = batch if in_order else batch.take(order)
    return Grouped(batch=sorted_batch, symbols=names, starts=starts, counts=counts, codes=codes)


def _one_value(column: pa.Array) -> bool:
    """Whether every row holds the first row's (non-null) value; the last row is compared
    first, so a mixed batch rarely pays for the full comparison."""
    if column.null_count:
        return False
    if len(column) == 1:
        return True
    first = column[0]
    if column[len(column) - 1] != first:
        return False
    return bool(pc.all(pc.equal(column, first)).as_py())


def stable_order(codes: IntArray, groups: int) -> npt.NDArray[np.intp]:
    """A stable argsort of small non-negative codes: as int16, numpy radix-sorts them
    (measured 0.3 ms instead of 2.0 ms for 65 k rows)."""
    if groups <= np.iinfo(np.int16).max:
        return np.argsort(codes.astype(np.int16), kind="stable")
    return np.argsort(codes, kind="stable")


def cumcount(codes: IntArray) -> IntArray:
    """Position of each row within its group, in arrival order (0, 1, 2 ... per code)."""
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = stable_order(codes, int(codes.max()) + 1)
    sorted_codes = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, codes.size]))
    position = np.empty_like(codes)
    position[order] = np.arange(codes.size) - run_start
    return position


def segmented_prev_max(
    values: IntArray, starts: IntArray, initial: IntArray, group: IntArray | None = None
) -> IntArray:
    """For each row, the max of ``initial[group]`` and the earlier values in its group.

    Rows must be grouped (``starts`` ascending, groups contiguous); ``group`` (each row's
    group) saves recomputing it. Groups of similar size (a live tick) are laid out as the
    columns of a small matrix and accumulated down it; skewed ones use one accumulate
    over the flat rows, each group lifted above the previous one.
    """
    n = values.size
    if n == 0:
        return values.copy()
    if starts.size == 1:  # one group (a live feed's usual delivery): no offsets needed
        if values[0] >= initial[0] and (values[1:] >= values[:-1]).all():
            # already rising (seqs, clean timestamps): each row's floor is the row before,
            # one comparison where an int64 accumulate costs ~20 ns a row
            return np.concatenate((initial[:1], values[:-1]))
        running: IntArray = np.maximum.accumulate(np.concatenate((initial[:1], values)))
        return running[:-1]
    counts = np.diff(np.append(starts, n))
    if group is None:
        group = np.repeat(np.arange(starts.size), counts)
    deepest = int(counts.max())
    if (deepest + 1) * starts.size <= MATRIX_FACTOR * (n + starts.size):
        return _prev_max_by_matrix(values, starts, initial, group, deepest)
    return _prev_max_by_offsets(values, starts, initial, group, counts)


MATRIX_FACTOR = 4
"""how much padding the matrix layout may add over the rows before offsets are used"""


def _prev_max_by_matrix(
    values: IntArray, starts: IntArray, initial: IntArray, group: IntArray, deepest: int
) -> IntArray:
    """Row ``k`` of column ``g`` holds the group's ``k``-th value, row 0 its initial value;
    padding is the smallest int64, so it never wins a maximum."""
    depth = np.arange(values.size) - starts[group]
    matrix = np.full((deepest + 1, starts.size), np.iinfo(np.int64).min, dtype=np.int64)
    matrix[0] = initial
    matrix[depth + 1, group] = values
    np.maximum.accumulate(matrix, axis=0, out=matrix)
    out: IntArray = matrix[depth, group]
    return out


def _prev_max_by_offsets(
    values: IntArray, starts: IntArray, initial: IntArray, group: IntArray, counts: IntArray
) -> IntArray:
    sentinel = np.iinfo(np.int64).min
    real = np.concatenate((values[values != sentinel], initial[initial != sentinel]))
    if (values == sentinel).any() or (initial == sentinel).any():
        # "nothing yet" markers: compute with a stand-in just below the real values
        stand_in = (real.min() - 1) if real.size else 0
        values = np.where(values == sentinel, stand_in, values)
        initial = np.where(initial == sentinel, stand_in, initial)
        out = _prev_max_by_offsets(values, starts, initial, group, counts)
        return np.where(out == stand_in, sentinel, out)
    n = values.size
    floor = np.minimum(values.min(), initial.min())
    span = int(max(values.max(), initial.max())) - int(floor) + 1
    if span * (starts.size + 1) >= 2**62:
        out = np.empty_like(values)
        for g, (s, c) in enumerate(zip(starts, counts, strict=True)):
            seg = np.r_[initial[g], values[s : s + c]]
            out[s : s + c] = np.maximum.accumulate(seg)[:-1]
        return out
    shifted = np.empty(n + starts.size, dtype=np.int64)
    # interleave each group's initial value before its rows, offset by group so maxima
    # never leak from one group into the next
    positions = np.arange(n) + group + 1
    init_positions = starts + np.arange(starts.size)
    offset = np.arange(starts.size, dtype=np.int64) * span
    shifted[init_positions] = (initial - floor) + offset
    shifted[positions] = (values - floor) + offset[group]
    running = np.maximum.accumulate(shifted)
    result: IntArray = (running[positions - 1] - offset[group]) + floor
    return result
