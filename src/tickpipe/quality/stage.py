"""The quality stage: per-(kind, source, symbol) state, quarantine records, gap records, counters.

``process`` takes one delivery from a source and returns what passed (grouped by symbol,
ready for the hub), the quarantined rows with rule and reason, and the gaps found. Good
events are never dropped: a row is either accepted or quarantined, and both are journaled.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.columnar import Grouped, group_by_symbol
from tickpipe.config import QualityThresholds, Settings
from tickpipe.datasets import GAP_SCHEMA, QUARANTINE_SCHEMA
from tickpipe.events import PRICE_COLUMNS, SCHEMAS, SIZE_COLUMNS, Kind
from tickpipe.metrics import record_feed_latency
from tickpipe.quality.rules import (
    Columns,
    GroupState,
    Rule,
    Verdict,
    evaluate,
    sequence_gaps,
    tail_length,
    time_gaps,
)
from tickpipe.status import QualityStats

GAP_KINDS = frozenset({Kind.TRADE, Kind.QUOTE})
"""kinds whose silences are gaps; options and book levels may rest for long by nature"""

_NO_TS = np.iinfo(np.int64).min
Checkpoint = dict[tuple[Kind, str], tuple[int, int]]
"""(kind, symbol) -> (last seq, last accepted ts_event)"""
BAD_SCHEMA = "bad_schema"


@dataclasses.dataclass
class _SymbolState:
    last_seq: int
    last_ts: int
    """latest ts_event of a candidate (see rules.py): the out-of-order and gap floor"""
    tail: npt.NDArray[np.float64]
    """the last candidate prices, NaN-padded: the outlier rule's look-back"""
    window: int


@dataclasses.dataclass
class StageResult:
    accepted: dict[Kind, Grouped]
    quarantine: pa.RecordBatch | None
    gaps: pa.RecordBatch | None
    checkpoint: pa.RecordBatch | None = None
    """the source's checkpoint row, committed after the events above"""

    def add(
        self, *, quarantine: pa.RecordBatch | None = None, gaps: pa.RecordBatch | None = None
    ) -> None:
        """Add records found outside the rules (bad frames, outages)."""
        if quarantine is not None:
            self.quarantine = _concat(
                [b for b in (self.quarantine, quarantine) if b is not None], QUARANTINE_SCHEMA
            )
        if gaps is not None:
            self.gaps = _concat([b for b in (self.gaps, gaps) if b is not None], GAP_SCHEMA)

    @property
    def rows(self) -> int:
        """Records of every dataset this result will write (what the hub's budget counts)."""
        return int(
            sum(g.batch.num_rows for g in self.accepted.values())
            + (self.quarantine.num_rows if self.quarantine is not None else 0)
            + (self.gaps.num_rows if self.gaps is not None else 0)
        )

    @property
    def empty(self) -> bool:
        return (
            not self.accepted
            and self.quarantine is None
            and self.gaps is None
            and self.checkpoint is None
        )


class QualityStage:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._state: dict[tuple[Kind, str, str], _SymbolState] = {}
        self.accepted: Counter[tuple[str, str]] = Counter()
        """(source, kind) -> events accepted"""
        self.rejected: Counter[tuple[str, str, str]] = Counter()
        """(source, kind, rule) -> events quarantined"""
        self.gap_counts: Counter[tuple[str, str]] = Counter()
        """(source, gap kind) -> gap records"""
        self.latency_ms: dict[str, dict[str, float]] = {}
        """source -> feed latency percentiles of its last delivery"""

    def seed(self, kind: Kind, source: str, symbol: str, last_seq: int, last_ts: int) -> None:
        """Resume ordering and duplicate checks after a restart (from the lake's maxima)."""
        state = self._symbol_state(kind, source, symbol)
        state.last_seq = max(state.last_seq, last_seq)
        state.last_ts = max(state.last_ts, last_ts)

    def _record_latency(self, source: str, batch: pa.RecordBatch) -> None:
        """Feed latency (ts_recv - ts_event) of the last delivery, in ms, for /status."""
        latency = batch.column("ts_recv").to_numpy() - batch.column("ts_event").to_numpy()
        record_feed_latency(source, latency)
        ranks = [(latency.size - 1) // 2, (latency.size - 1) * 99 // 100]
        # nearest rank by partition: np.percentile costs ~50 us even for one event
        p50, p99 = np.partition(latency, ranks)[ranks] / 1e6
        self.latency_ms[source] = {
            "p50": round(float(p50), 3),
            "p99": round(float(p99), 3),
            "max": round(float(latency.max()) / 1e6, 3),
        }

    def stats(self) -> QualityStats:
        rejected: dict[str, dict[str, int]] = {}
        for (source, kind, rule), count in self.rejected.items():
            rejected.setdefault(source, {})[f"{kind}.{rule}"] = count
        gaps = {f"{s}.{g}": n for (s, g), n in self.gap_counts.items()}
        return QualityStats(rejected=rejected, gaps=gaps)

    def checkpoint(self, source: str) -> Checkpoint:
        """Last seq and accepted time per (kind, symbol) of one source, so a restarted
        feed that numbers its own events continues instead of repeating."""
        return {
            (kind, symbol): (state.last_seq, state.last_ts)
            for (kind, src, symbol), state in self._state.items()
            if src == source
        }

    def _symbol_state(self, kind: Kind, source: str, symbol: str) -> _SymbolState:
        key = (kind, source, symbol)
        state = self._state.get(key)
        if state is None:
            window = self._settings.thresholds(symbol).outlier_window
            state = _SymbolState(0, _NO_TS, np.full(tail_length(window), np.nan), window)
            self._state[key] = state
        return state

    def process(self, source: str, batches: dict[Kind, pa.RecordBatch]) -> StageResult:
        now = self._clock.now_ns()
        accepted: dict[Kind, Grouped] = {}
        quarantined: list[pa.RecordBatch] = []
        gaps: list[pa.RecordBatch] = []
        for kind, raw in batches.items():
            if raw.num_rows == 0:
                continue
            batch = _conform(kind, raw)
            if batch is None:
                self.rejected[(source, kind.value, BAD_SCHEMA)] += raw.num_rows
                quarantined.append(_bad_schema_batch(source, kind, raw, now))
                continue
            self._record_latency(source, batch)
            grouped = group_by_symbol(batch)
            good, bad, found = self._process_kind(source, kind, grouped, now)
            if good.batch.num_rows:
                accepted[kind] = good
            if bad is not None:
                quarantined.append(bad)
            if found is not None:
                gaps.append(found)
        return StageResult(
            accepted=accepted,
            quarantine=_concat(quarantined, QUARANTINE_SCHEMA),
            gaps=_concat(gaps, GAP_SCHEMA),
        )

    def _process_kind(
        self, source: str, kind: Kind, grouped: Grouped, now: int
    ) -> tuple[Grouped, pa.RecordBatch | None, pa.RecordBatch | None]:
        batch = grouped.batch
        states = [self._symbol_state(kind, source, sym) for sym in grouped.symbols]
        limits = [self._settings.thresholds(sym) for sym in grouped.symbols]
        cols = _columns(kind, batch)
        group_state = _gather(grouped, states, limits)
        verdict = evaluate(cols, group_state, now)
        ok = verdict.accepted
        gap_batch = self._gaps(source, kind, grouped, cols, verdict, group_state, limits)
        self._update(grouped, states, cols, verdict)
        label = kind.value
        n_ok = int(ok.sum())
        self.accepted[(source, label)] += n_ok
        bad_batch = None
        if n_ok < batch.num_rows:
            bad_rows = np.flatnonzero(~ok)
            for code, count in zip(
                *np.unique(verdict.rule[bad_rows], return_counts=True), strict=True
            ):
                self.rejected[(source, label, Rule(int(code)).label)] += int(count)
            bad_batch = _quarantine_batch(
                source, kind, batch, bad_rows, verdict.rule, cols, verdict.ref
            )
        return grouped.filter(ok), bad_batch, gap_batch

    def _gaps(
        self,
        source: str,
        kind: Kind,
        grouped: Grouped,
        cols: Columns,
        verdict: Verdict,
        state: GroupState,
        limits: list[QualityThresholds],
    ) -> pa.RecordBatch | None:
        symbols = np.array(grouped.symbols, dtype=object)
        parts: list[dict[str, object]] = []
        seq_rows, missing = sequence_gaps(cols.seq, verdict.rule, state.starts, state.last_seq)
        if seq_rows.size:
            seq_group = grouped.codes[seq_rows]
            parts.append(
                dict(
                    ts_event=cols.ts_event[seq_rows],
                    symbol=symbols[seq_group],
                    seq=cols.seq[seq_rows],
                    gap=np.full(seq_rows.size, "sequence", dtype=object),
                    start_ns=cols.ts_event[seq_rows],
                    end_ns=cols.ts_event[seq_rows],
                    missing_seq=missing,
                )
            )
        if kind in GAP_KINDS:
            gap_ns = np.array([int(lim.gap_seconds * NS_PER_SECOND) for lim in limits], np.int64)
            rows, start, group = time_gaps(
                cols.ts_event, verdict.candidate, state.starts, state.last_ts, gap_ns
            )
            if rows.size:
                parts.append(
                    dict(
                        ts_event=cols.ts_event[rows],
                        symbol=symbols[group],
                        seq=cols.seq[rows],
                        gap=np.full(rows.size, "time", dtype=object),
                        start_ns=start,
                        end_ns=cols.ts_event[rows],
                        missing_seq=np.zeros(rows.size, np.int64),
                    )
                )
        if not parts:
            return None
        frames = [pl.DataFrame(p) for p in parts]
        frame = pl.concat(frames).with_columns(
            source=pl.lit(source),
            kind=pl.lit(kind.value),
            seconds=(pl.col("end_ns") - pl.col("start_ns")) / NS_PER_SECOND,
        )
        self.gap_counts.update(zip([source] * frame.height, frame["gap"].to_list(), strict=True))
        return _to_schema(frame.to_arrow(), GAP_SCHEMA)

    def _update(
        self, grouped: Grouped, states: list[_SymbolState], cols: Columns, verdict: Verdict
    ) -> None:
        """Carry the look-back to the next batch, exactly as the rules define it: seq over
        every non-duplicate, time and prices over candidates (see rules.py)."""
        fresh = verdict.rule != Rule.DUPLICATE
        candidate = verdict.candidate
        ends = np.r_[grouped.starts[1:], cols.ts_event.size]
        for state, start, end in zip(states, grouped.starts, ends, strict=True):
            seg_fresh = fresh[start:end]
            if seg_fresh.any():
                state.last_seq = max(state.last_seq, int(cols.seq[start:end][seg_fresh].max()))
            seg = candidate[start:end]
            if not seg.any():
                continue
            state.last_ts = max(state.last_ts, int(cols.ts_event[start:end][seg].max()))
            if cols.reference is not None:
                values = cols.reference[start:end][seg]
                k = state.tail.size
                state.tail = np.concatenate((state.tail, values))[-k:]


def _columns(kind: Kind, batch: pa.RecordBatch) -> Columns:
    """The numbers the rules read. A null (missing) size or quote side is an absence, not a
    fault: it reads as a value every rule passes, while a NaN the feed sent stays NaN and
    is rejected as ``non_finite`` / ``bad_size``."""

    def num(name: str, missing: float = np.nan) -> npt.NDArray[np.float64]:
        column = batch.column(name)
        if column.null_count:
            column = pc.fill_null(column, missing)
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)

    def absent(name: str) -> npt.NDArray[np.bool_]:
        column = batch.column(name)
        if not column.null_count:
            return np.zeros(len(column), dtype=bool)
        return np.asarray(pc.is_null(column).to_numpy(zero_copy_only=False), dtype=bool)

    prices = [num(c) for c in PRICE_COLUMNS[kind]]
    bid_ask = None
    reference = None
    if kind is Kind.OPTION:
        bid_ask = (prices[0], prices[1])
    elif kind is Kind.TRADE:
        reference = prices[0]
    elif kind is Kind.QUOTE:
        no_bid, no_ask = absent("bid"), absent("ask")
        bid, ask = prices
        prices = [np.where(no_bid, 1.0, bid), np.where(no_ask, 1.0, ask)]
        bid_ask = (np.where(no_bid, -np.inf, bid), np.where(no_ask, np.inf, ask))
        reference = np.where(no_bid | no_ask, np.nan, (bid + ask) / 2)
    return Columns(
        ts_event=batch.column("ts_event").to_numpy().astype(np.int64, copy=False),
        seq=batch.column("seq").to_numpy().astype(np.int64, copy=False),
        prices=prices,
        sizes=[num(c, 0.0) for c in SIZE_COLUMNS[kind]],
        bid_ask=bid_ask,
        reference=reference,
        zero_price_ok=kind is Kind.OPTION,
    )


def _gather(
    grouped: Grouped, states: list[_SymbolState], limits: list[QualityThresholds]
) -> GroupState:
    return GroupState(
        starts=grouped.starts,
        last_seq=np.array([s.last_seq for s in states], np.int64),
        last_ts=np.array([s.last_ts for s in states], np.int64),
        tails=[s.tail for s in states],
        windows=np.array([s.window for s in states], np.int64),
        future_ns=np.array([int(t.future_tolerance_s * NS_PER_SECOND) for t in limits], np.int64),
        max_age_ns=np.array([int(t.max_age_s * NS_PER_SECOND) for t in limits], np.int64),
        outlier_pct=np.array([t.outlier_pct for t in limits]),
        outlier_k=np.array([t.outlier_k for t in limits]),
    )


def _reason(rule: Rule, row: dict[str, Any], ref: float) -> str:
    if rule is Rule.CROSSED:
        return f"bid {row['bid']} > ask {row['ask']}"
    if rule is Rule.OUTLIER:
        watched = row.get("price")
        if watched is None:
            watched = (float(row["bid"]) + float(row["ask"])) / 2
        return f"price {watched} jumps {abs(float(watched) / ref - 1):.2%} from median {ref}"
    if rule in (Rule.FUTURE_TS, Rule.ANCIENT_TS, Rule.OUT_OF_ORDER):
        return f"ts_event {row['ts_event']} is {rule.label.replace('_', ' ')}"
    if rule is Rule.DUPLICATE:
        return f"seq {row['seq']} already seen"
    return f"{rule.label.replace('_', ' ')}: " + ", ".join(
        f"{k}={row[k]}" for k in ("price", "bid", "ask", "size", "bid_size", "ask_size") if k in row
    )


def _quarantine_batch(
    source: str,
    kind: Kind,
    batch: pa.RecordBatch,
    rows: npt.NDArray[np.int64],
    rule: npt.NDArray[np.int8],
    cols: Columns,
    ref: npt.NDArray[np.float64],
) -> pa.RecordBatch:
    """Rejected rows with rule, reason and the whole original row as JSON (rare path)."""
    bad = batch.take(pa.array(rows)).to_pylist()
    rules = [Rule(int(r)) for r in rule[rows]]
    refs = ref[rows].tolist()
    return pa.RecordBatch.from_pydict(
        {
            "ts_event": cols.ts_event[rows],
            "ts_recv": [r["ts_recv"] for r in bad],
            "symbol": [r["symbol"] for r in bad],
            "source": [source] * len(bad),
            "kind": [kind.value] * len(bad),
            "seq": cols.seq[rows],
            "rule": [r.label for r in rules],
            "reason": [_reason(r, row, f) for r, row, f in zip(rules, bad, refs, strict=True)],
            "payload": [
                orjson.dumps(row, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()
                for row in bad
            ],
        },
        schema=QUARANTINE_SCHEMA,
    )


def _conform(kind: Kind, batch: pa.RecordBatch) -> pa.RecordBatch | None:
    """The batch in its kind's exact schema (safe casts only), or None if it cannot be."""
    schema = SCHEMAS[kind]
    if batch.schema.equals(schema):
        return batch
    try:
        return batch.select(schema.names).cast(schema)
    except (KeyError, ValueError, pa.ArrowException):
        return None


def _bad_schema_batch(source: str, kind: Kind, batch: pa.RecordBatch, now: int) -> pa.RecordBatch:
    """Rows whose columns do not fit the event model: quarantined whole, original kept."""
    rows = batch.to_pylist()
    expected = ", ".join(f"{f.name}: {f.type}" for f in SCHEMAS[kind])
    got = ", ".join(f"{f.name}: {f.type}" for f in batch.schema)

    def as_int(value: object, default: int) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    return pa.RecordBatch.from_pydict(
        {
            "ts_event": [as_int(r.get("ts_event"), now) for r in rows],
            "ts_recv": [as_int(r.get("ts_recv"), now) for r in rows],
            "symbol": [str(r.get("symbol", "")) for r in rows],
            "source": [source] * len(rows),
            "kind": [kind.value] * len(rows),
            "seq": [as_int(r.get("seq"), 0) for r in rows],
            "rule": [BAD_SCHEMA] * len(rows),
            "reason": [f"columns ({got}) do not fit {kind.value} ({expected})"] * len(rows),
            "payload": [orjson.dumps(r, default=str).decode() for r in rows],
        },
        schema=QUARANTINE_SCHEMA,
    )


def _to_schema(table: pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    table = table.select(schema.names).cast(schema)
    return table.combine_chunks().to_batches()[0]


def _concat(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch | None:
    if not batches:
        return None
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches, schema=schema).combine_chunks().to_batches()[0]
