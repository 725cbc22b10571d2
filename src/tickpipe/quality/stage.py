"""The quality stage: per-(kind, source, symbol) state, quarantine records, gap records, counters.

``process`` takes a source's deliveries (a whole ~1 ms tick of them, or one import chunk)
and returns what passed (grouped by symbol, ready for the hub), the quarantined rows with
rule and reason, and the gaps found. Good events are never dropped: a row is either
accepted or quarantined, and both are journaled.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.clock import Clock
from tickpipe.columnar import Grouped, group_by_symbol
from tickpipe.config import Settings
from tickpipe.datasets import GAP_SCHEMA, QUARANTINE_SCHEMA
from tickpipe.events import PRICE_COLUMNS, SCHEMAS, SIZE_COLUMNS, Kind
from tickpipe.metrics import record_feed_latency
from tickpipe.quality.records import (
    BAD_SCHEMA,
    bad_schema_batch,
    concat,
    gap_batch,
    quarantine_batch,
)
from tickpipe.quality.rules import (
    Columns,
    GroupState,
    Rule,
    Verdict,
    evaluate,
    sequence_gaps,
    time_gaps,
)
from tickpipe.quality.table import SymbolTable
from tickpipe.status import QualityStats

GAP_KINDS = frozenset({Kind.TRADE, Kind.QUOTE})
"""kinds whose silences are gaps; options and book levels may rest for long by nature"""

Checkpoint = dict[tuple[Kind, str], tuple[int, int]]
"""(kind, symbol) -> (last seq, last accepted ts_event)"""
LATENCY_SAMPLE = 4096
"""events from which /status percentiles are read off an even sample (the histogram for
/metrics still counts every event): an exact partition of 65,536 costs ~0.8 ms"""


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
            self.quarantine = concat(
                [b for b in (self.quarantine, quarantine) if b is not None], QUARANTINE_SCHEMA
            )
        if gaps is not None:
            self.gaps = concat([b for b in (self.gaps, gaps) if b is not None], GAP_SCHEMA)

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
    """Checks deliveries against the rules with per-symbol state, one (kind, source) table
    of numpy arrays at a time: a call's cost is paid per batch and per event, not per
    symbol, so a call can be a whole ~1 ms tick of a source's deliveries."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._tables: dict[tuple[Kind, str], SymbolTable] = {}
        self.accepted: Counter[tuple[str, str]] = Counter()
        """(source, kind) -> events accepted"""
        self.rejected: Counter[tuple[str, str, str]] = Counter()
        """(source, kind, rule) -> events quarantined"""
        self.gap_counts: Counter[tuple[str, str]] = Counter()
        """(source, gap kind) -> gap records"""
        self.latency_ms: dict[str, dict[str, float]] = {}
        """source -> feed latency percentiles of its last ``process`` call"""

    def _table(self, kind: Kind, source: str) -> SymbolTable:
        table = self._tables.get((kind, source))
        if table is None:
            table = self._tables[(kind, source)] = SymbolTable(self._settings)
        return table

    def seed(self, kind: Kind, source: str, symbol: str, last_seq: int, last_ts: int) -> None:
        """Resume ordering and duplicate checks after a restart (from the lake's maxima)."""
        self._table(kind, source).seed(symbol, last_seq, last_ts)

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
            (kind, symbol): (last_seq, last_ts)
            for (kind, src), table in self._tables.items()
            if src == source
            for symbol, last_seq, last_ts in table.items()
        }

    def process(self, source: str, batches: dict[Kind, pa.RecordBatch]) -> StageResult:
        """Check one call's events, each kind in one pass over all its symbols; its feed
        latency is recorded once."""
        now = self._clock.now_ns()
        accepted: dict[Kind, Grouped] = {}
        quarantined: list[pa.RecordBatch] = []
        gaps: list[pa.RecordBatch] = []
        latencies: list[npt.NDArray[np.int64]] = []
        for kind, raw in batches.items():
            if raw.num_rows == 0:
                continue
            batch = _conform(kind, raw)
            if batch is None:
                self.rejected[(source, kind.value, BAD_SCHEMA)] += raw.num_rows
                quarantined.append(bad_schema_batch(source, kind, raw, now))
                continue
            latencies.append(_latency(batch))
            good, bad, found = self._process_kind(source, kind, group_by_symbol(batch), now)
            if good.batch.num_rows:
                accepted[kind] = good
            if bad is not None:
                quarantined.append(bad)
            if found is not None:
                gaps.append(found)
        if latencies:
            self._record_latency(source, latencies)
        return StageResult(
            accepted=accepted,
            quarantine=concat(quarantined, QUARANTINE_SCHEMA),
            gaps=concat(gaps, GAP_SCHEMA),
        )

    def _record_latency(self, source: str, parts: list[npt.NDArray[np.int64]]) -> None:
        """Feed latency (ts_recv - ts_event) of one call, in ms for /status, and every
        event into the /metrics histogram."""
        latency = parts[0] if len(parts) == 1 else np.concatenate(parts)
        record_feed_latency(source, latency)
        self.latency_ms[source] = latency_percentiles(latency)

    def _process_kind(
        self, source: str, kind: Kind, grouped: Grouped, now: int
    ) -> tuple[Grouped, pa.RecordBatch | None, pa.RecordBatch | None]:
        table = self._table(kind, source)
        ids = table.ids(grouped.symbols)
        state = table.gather(ids, grouped)
        cols = _columns(kind, grouped.batch)
        verdict = evaluate(cols, state, now)
        table.scatter(ids, verdict)
        found = self._gaps(source, kind, grouped.batch, cols, verdict, state)
        ok = verdict.accepted
        n_ok = int(np.count_nonzero(ok))
        self.accepted[(source, kind.value)] += n_ok
        bad_batch = None
        if n_ok < ok.size:
            bad_rows = np.flatnonzero(~ok)
            rules = np.bincount(verdict.rule[bad_rows], minlength=len(Rule))
            for code in np.flatnonzero(rules).tolist():
                self.rejected[(source, kind.value, Rule(code).label)] += int(rules[code])
            bad_batch = quarantine_batch(
                source, kind, grouped.batch, bad_rows, verdict.rule, cols, verdict.ref
            )
        return grouped.filter(ok), bad_batch, found

    def _gaps(
        self,
        source: str,
        kind: Kind,
        batch: pa.RecordBatch,
        cols: Columns,
        verdict: Verdict,
        state: GroupState,
    ) -> pa.RecordBatch | None:
        seq_rows, missing = sequence_gaps(cols.seq, verdict.rule, verdict.seq_floor)
        time_rows = start = np.zeros(0, np.int64)
        if kind in GAP_KINDS:
            time_rows, start = time_gaps(
                cols.ts_event, verdict.candidate, verdict.ts_floor, state.per_row(state.gap_ns)
            )
        if not (seq_rows.size or time_rows.size):
            return None
        for gap, rows in (("sequence", seq_rows), ("time", time_rows)):
            if rows.size:
                self.gap_counts[(source, gap)] += rows.size
        return gap_batch(
            source, kind, batch, cols.ts_event, cols.seq, (seq_rows, missing), (time_rows, start)
        )


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


def _conform(kind: Kind, batch: pa.RecordBatch) -> pa.RecordBatch | None:
    """The batch in its kind's exact schema (safe casts only), or None if it cannot be."""
    schema = SCHEMAS[kind]
    if batch.schema.equals(schema):
        return batch
    try:
        return batch.select(schema.names).cast(schema)
    except (KeyError, ValueError, pa.ArrowException):
        return None


def _latency(batch: pa.RecordBatch) -> npt.NDArray[np.int64]:
    recv = batch.column("ts_recv").to_numpy()
    latency: npt.NDArray[np.int64] = recv - batch.column("ts_event").to_numpy()
    return latency


def latency_percentiles(latency_ns: npt.NDArray[np.int64]) -> dict[str, float]:
    """p50 and p99 (nearest rank) and the max, in ms, for /status. A partition costs a
    few µs where np.percentile costs ~50 even for one event; past LATENCY_SAMPLE events
    the ranks are read off an even sample (the max never is)."""
    step = -(-latency_ns.size // LATENCY_SAMPLE)
    sample = latency_ns[::step] if step > 1 else latency_ns
    ranks = [(sample.size - 1) // 2, (sample.size - 1) * 99 // 100]
    p50, p99 = np.partition(sample, ranks)[ranks].tolist()
    return {
        "p50": round(p50 / 1e6, 3),
        "p99": round(p99 / 1e6, 3),
        "max": round(int(latency_ns.max()) / 1e6, 3),
    }
