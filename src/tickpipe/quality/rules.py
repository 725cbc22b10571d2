"""Pure, vectorised quality rules over one grouped batch; no state is kept here.

Rules run cheap first and each rejected row carries the first rule it failed. The order
is the contract: a NaN price is reported as ``non_finite``, not as ``crossed``.

Verdicts do not depend on how a stream is split into batches: every rule that looks back
reads only what the stage carries between batches, defined per event, never per batch.

- ``duplicate``: seq at or below the highest seq seen before (any verdict but duplicate).
- ``out_of_order``: ts_event below the latest ts_event of the earlier *candidates*.
- ``outlier``: a candidate whose price is further from the median of the previous
  ``outlier_window`` candidate prices than both ``outlier_pct`` of it and ``outlier_k``
  times the typical move (the mean absolute move over the previous ``DEV_WINDOW``
  candidate prices).

A *candidate* is an event that passed every rule before ``outlier``. Outliers stay in the
look-back on purpose: a genuine repricing is accepted once it holds for about half a
window, while a lone spike never moves the median.
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from tickpipe.columnar import segmented_prev_max

DEV_WINDOW = 32
"""candidate moves averaged into the typical move"""

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Rule(IntEnum):
    """Why an event was quarantined; 0 means it passed."""

    OK = 0
    NON_FINITE = 1
    NON_POSITIVE_PRICE = 2
    BAD_SIZE = 3
    CROSSED = 4
    FUTURE_TS = 5
    ANCIENT_TS = 6
    DUPLICATE = 7
    OUT_OF_ORDER = 8
    OUTLIER = 9

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclasses.dataclass(frozen=True, slots=True)
class Columns:
    """The numeric columns the rules read, already grouped by symbol."""

    ts_event: IntArray
    seq: IntArray
    prices: list[FloatArray]
    sizes: list[FloatArray]
    bid_ask: tuple[FloatArray, FloatArray] | None
    reference: FloatArray | None
    """the price the outlier rule watches (trade price, quote mid); None: no outlier rule"""
    zero_price_ok: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class GroupState:
    """Per-group state gathered from the stage, one entry per group, numpy-aligned."""

    starts: IntArray
    last_seq: IntArray
    last_ts: IntArray
    tails: list[FloatArray]
    """per group, the last ``tail_length(window)`` candidate prices (NaN-padded)"""
    windows: IntArray
    future_ns: IntArray
    max_age_ns: IntArray
    outlier_pct: FloatArray
    outlier_k: FloatArray


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    rule: npt.NDArray[np.int8]
    ref: FloatArray
    """the outlier rule's reference price per row (NaN where it did not apply)"""
    candidate: BoolArray
    """rows that passed every rule before ``outlier``: what the look-back carries"""

    @property
    def accepted(self) -> BoolArray:
        ok: BoolArray = self.rule == Rule.OK
        return ok


def _group_index(starts: IntArray, n: int) -> IntArray:
    return np.repeat(np.arange(starts.size), np.diff(np.r_[starts, n]))


def evaluate(cols: Columns, state: GroupState, now_ns: int) -> Verdict:
    n = cols.ts_event.size
    group = _group_index(state.starts, n)
    rule = np.zeros(n, dtype=np.int8)

    def apply(mask: BoolArray, which: Rule) -> None:
        rule[(rule == 0) & mask] = which

    finite = np.ones(n, dtype=bool)
    for arr in cols.prices:
        finite &= np.isfinite(arr)
    apply(~finite, Rule.NON_FINITE)
    with np.errstate(invalid="ignore"):
        for arr in cols.prices:
            apply(arr < 0 if cols.zero_price_ok else arr <= 0, Rule.NON_POSITIVE_PRICE)
        for arr in cols.sizes:
            apply(~np.isfinite(arr) | (arr < 0), Rule.BAD_SIZE)
        if cols.bid_ask is not None:
            bid, ask = cols.bid_ask
            apply(bid > ask, Rule.CROSSED)
    ts = cols.ts_event
    apply(ts > now_ns + state.future_ns[group], Rule.FUTURE_TS)
    max_age = state.max_age_ns[group]
    apply((max_age > 0) & (ts < now_ns - max_age), Rule.ANCIENT_TS)

    prev_seq = segmented_prev_max(cols.seq, state.starts, state.last_seq)
    apply(cols.seq <= prev_seq, Rule.DUPLICATE)

    candidate_ts = np.where(rule == 0, ts, np.iinfo(np.int64).min)
    prev_ts = segmented_prev_max(candidate_ts, state.starts, state.last_ts)
    apply(ts < prev_ts, Rule.OUT_OF_ORDER)

    candidate = rule == 0
    ref = np.full(n, np.nan)
    if cols.reference is not None:
        ref, dev = _look_back(cols.reference, candidate, state)
        with np.errstate(invalid="ignore"):
            jump = np.abs(cols.reference - ref)
            limit = np.maximum(state.outlier_k[group] * dev, state.outlier_pct[group] * ref)
            apply(jump > limit, Rule.OUTLIER)
    return Verdict(rule=rule, ref=ref, candidate=candidate)


def tail_length(window: int) -> int:
    """Candidate prices carried per group: enough for the median and the typical move."""
    return max(window, DEV_WINDOW + 1)


def _look_back(
    values: FloatArray, candidate: BoolArray, state: GroupState
) -> tuple[FloatArray, FloatArray]:
    """Per candidate row: the median of the previous ``w`` candidate values and the mean
    absolute move over the previous ``DEV_WINDOW`` (0 before there is any)."""
    n = values.size
    ref = np.full(n, np.nan)
    dev = np.zeros(n)
    ends = np.r_[state.starts[1:], n]
    for g, (start, end) in enumerate(zip(state.starts, ends, strict=True)):
        rows = np.flatnonzero(candidate[start:end]) + start
        if rows.size == 0:
            continue
        tail, w = state.tails[g], int(state.windows[g])
        ext = np.concatenate((tail, values[rows]))
        k = tail.size
        medians = sliding_window_view(ext[k - w :], w)[: rows.size]
        moves = np.abs(np.diff(ext[k - DEV_WINDOW - 1 :]))
        recent = sliding_window_view(moves, DEV_WINDOW)[: rows.size]
        with np.errstate(all="ignore"):
            ref[rows] = _nan_median_rows(medians)
            counted = np.sum(~np.isnan(recent), axis=1)
            dev[rows] = np.where(counted > 0, np.nansum(recent, axis=1) / np.maximum(counted, 1), 0)
    return ref, dev


def _nan_median_rows(windows: FloatArray) -> FloatArray:
    """Row medians ignoring NaN (the warm-up padding), without numpy's all-NaN warning."""
    ordered = np.sort(windows, axis=1)  # NaN sorts last
    valid = np.sum(~np.isnan(windows), axis=1)
    lo = np.maximum((valid - 1) // 2, 0)
    hi = np.maximum(valid // 2, 0)
    rows = np.arange(windows.shape[0])
    med = (ordered[rows, lo] + ordered[rows, hi]) / 2
    return np.where(valid > 0, med, np.nan)


def time_gaps(
    ts: IntArray, candidate: BoolArray, starts: IntArray, last_ts: IntArray, gap_ns: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """Candidate rows that end a silence longer than the group's limit:
    (row, gap_start_ns, group). The silence is measured between candidates, so an outlier
    print still shows that the feed was alive."""
    n = ts.size
    group = _group_index(starts, n)
    marked = np.where(candidate, ts, np.iinfo(np.int64).min)
    prev = segmented_prev_max(marked, starts, last_ts)
    has_prev = prev > np.iinfo(np.int64).min
    hit = candidate & has_prev & ((ts - prev) > gap_ns[group])
    rows = np.flatnonzero(hit)
    return rows, prev[rows], group[rows]


def sequence_gaps(
    seq: IntArray, rule: npt.NDArray[np.int8], starts: IntArray, last_seq: IntArray
) -> tuple[IntArray, IntArray]:
    """Rows whose seq jumps past the previous one: (row, missing count). Duplicates ignored."""
    fresh = rule != Rule.DUPLICATE
    marked = np.where(fresh, seq, np.iinfo(np.int64).min)
    prev = segmented_prev_max(marked, starts, last_seq)
    started = prev > 0
    missing = seq - prev - 1
    rows = np.flatnonzero(fresh & started & (missing > 0))
    return rows, missing[rows]
