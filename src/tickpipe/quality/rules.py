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

Every group of a batch is checked at once: per-group limits and state arrive as arrays
indexed by group, rows find theirs through ``group``; nothing loops over groups or rows.
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from tickpipe.columnar import segmented_prev_max
from tickpipe.quality.lookback import look_back

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Number = TypeVar("Number", bound=np.generic)
NO_TS = np.iinfo(np.int64).min
"""no candidate yet: the floor below every timestamp"""
_NONE: IntArray = np.zeros(0, dtype=np.int64)


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
    """What the stage carries for each group of the batch, numpy-aligned by group."""

    starts: IntArray
    counts: IntArray
    group: IntArray
    """each row's group"""
    last_seq: IntArray
    last_ts: IntArray
    tails: FloatArray
    """[group, W]: the last W candidate prices, NaN-padded; W covers every window"""
    windows: IntArray
    future_ns: IntArray
    max_age_ns: IntArray
    outlier_pct: FloatArray
    outlier_k: FloatArray
    gap_ns: IntArray

    def per_row(self, values: npt.NDArray[Number]) -> npt.NDArray[Number]:
        """A per-group array aligned to rows; one group's broadcasts as it is."""
        return values if values.size == 1 else values[self.group]


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    rule: npt.NDArray[np.int8]
    ref: FloatArray
    """the outlier rule's reference price per row (NaN where it did not apply)"""
    candidate: BoolArray
    """rows that passed every rule before ``outlier``: what the look-back carries"""
    seq_floor: IntArray
    """per row, the highest seq before it (the state's included): the duplicate bar"""
    ts_floor: IntArray
    """per row, the latest candidate ts_event before it: the out-of-order and gap floor"""
    last_seq: IntArray
    """per group, the state to carry: the highest seq seen"""
    last_ts: IntArray
    """per group, the state to carry: the latest candidate ts_event"""
    tails: FloatArray | None
    """per group, the tails to carry; None when the kind has no outlier rule"""

    @property
    def accepted(self) -> BoolArray:
        ok: BoolArray = self.rule == Rule.OK
        return ok


def evaluate(cols: Columns, state: GroupState, now_ns: int) -> Verdict:
    with np.errstate(all="ignore"):  # NaN and inf prices get verdicts, not warnings
        return _evaluate(cols, state, now_ns)


def _evaluate(cols: Columns, state: GroupState, now_ns: int) -> Verdict:
    rule = _value_rules(cols)
    ts = cols.ts_event
    free = rule == 0
    max_age = state.per_row(state.max_age_ns)
    # the later rule first, so that a row failing both keeps the earlier one
    rule[free & (max_age > 0) & (ts < now_ns - max_age)] = Rule.ANCIENT_TS
    rule[free & (ts > now_ns + state.per_row(state.future_ns))] = Rule.FUTURE_TS

    seq_floor = segmented_prev_max(cols.seq, state.starts, state.last_seq, state.group)
    rule[(rule == 0) & (cols.seq <= seq_floor)] = Rule.DUPLICATE

    free = rule == 0
    candidate_ts = np.where(free, ts, NO_TS)
    ts_floor = segmented_prev_max(candidate_ts, state.starts, state.last_ts, state.group)
    rule[free & (ts < ts_floor)] = Rule.OUT_OF_ORDER

    candidate = rule == 0
    last = state.starts + state.counts - 1
    # an out-of-order row lies below its floor and a duplicate below its seq floor, so
    # neither moves a maximum: the floors at each group's last row give the next state
    last_seq = np.maximum(seq_floor[last], cols.seq[last])
    last_ts = np.maximum(ts_floor[last], candidate_ts[last])
    if cols.reference is None:
        ref = np.empty(ts.size)
        ref.fill(np.nan)
        tails = None
    else:
        ref, tails, outlier = _outliers(cols.reference, candidate, state)
        rule[outlier] = Rule.OUTLIER
    return Verdict(rule, ref, candidate, seq_floor, ts_floor, last_seq, last_ts, tails)


def _value_rules(cols: Columns) -> npt.NDArray[np.int8]:
    """The rules that read one row alone. Assigned last rule first, so that each row ends
    with the first rule it fails."""
    rule = np.zeros(cols.ts_event.size, dtype=np.int8)
    if cols.bid_ask is not None:
        bid, ask = cols.bid_ask
        rule[bid > ask] = Rule.CROSSED
    for arr in cols.sizes:
        rule[~np.isfinite(arr) | (arr < 0)] = Rule.BAD_SIZE
    for arr in cols.prices:
        rule[arr < 0 if cols.zero_price_ok else arr <= 0] = Rule.NON_POSITIVE_PRICE
    for arr in cols.prices:
        rule[~np.isfinite(arr)] = Rule.NON_FINITE
    return rule


def _outliers(
    reference: FloatArray, candidate: BoolArray, state: GroupState
) -> tuple[FloatArray, FloatArray, IntArray]:
    """(the median each row was held against, NaN where none; the tails to carry; the
    outlier rows). Only candidates see or feed the look-back; when every row is one (an
    import chunk, a clean tick) nothing is gathered or scattered."""
    rows = None if candidate.all() else candidate.nonzero()[0]
    values = reference if rows is None else reference[rows]
    group: IntArray | None = None
    counts = np.array([values.size], dtype=np.int64)
    outlier_k, outlier_pct = state.outlier_k, state.outlier_pct
    if state.counts.size > 1:
        group = state.group if rows is None else state.group[rows]
        counts = np.bincount(group, minlength=state.counts.size).astype(np.int64)
        outlier_k, outlier_pct = outlier_k[group], outlier_pct[group]
    look = look_back(values, group, counts, state.tails, state.windows)
    limit = np.maximum(outlier_k * look.dev, outlier_pct * look.median)
    jumped = (np.abs(values - look.median) > limit).nonzero()[0]
    if rows is None:
        return look.median, look.tails, jumped
    ref = np.empty(reference.size)
    ref.fill(np.nan)
    ref[rows] = look.median
    return ref, look.tails, rows[jumped]


def time_gaps(
    ts: IntArray, candidate: BoolArray, ts_floor: IntArray, gap_ns: IntArray
) -> tuple[IntArray, IntArray]:
    """Candidate rows that end a silence longer than their group's limit: (row,
    gap_start_ns). The silence is measured between candidates, so an outlier print still
    shows that the feed was alive."""
    has_prev = ts_floor > NO_TS
    long = ts - np.where(has_prev, ts_floor, ts) > gap_ns
    if not long.any():
        return _NONE, _NONE
    rows = (candidate & has_prev & long).nonzero()[0]
    return rows, ts_floor[rows]


def sequence_gaps(
    seq: IntArray, rule: npt.NDArray[np.int8], seq_floor: IntArray
) -> tuple[IntArray, IntArray]:
    """Rows whose seq jumps past the previous one: (row, missing count). Duplicates ignored."""
    missing = seq - seq_floor - 1
    jumped = missing > 0
    if not jumped.any():
        return _NONE, _NONE
    rows = ((rule != Rule.DUPLICATE) & (seq_floor > 0) & jumped).nonzero()[0]
    return rows, missing[rows]
