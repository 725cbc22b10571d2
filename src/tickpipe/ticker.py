"""One tick of the live path: every delivery the intake took, checked once per source.

Per source, the tick concatenates each kind's batches in arrival order, stamps the source's
name on them, and runs the quality stage once; the source's rejects and outage gaps ride
along, and its last checkpoint is committed after all of its events. Verdicts do not
depend on how a stream is split into batches (see ``quality/rules.py``), so checking a
tick's worth at once gives exactly what checking each frame would.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tickpipe.datasets import GAP_SCHEMA
from tickpipe.events import SCHEMAS, Kind
from tickpipe.quality.stage import QualityStage, StageResult
from tickpipe.sources.base import Batches, Delivery
from tickpipe.store.checkpoints import checkpoint_batch

MAX_OUTAGE_SYMBOLS = 10_000


def check_tick(quality: QualityStage, deliveries: list[Delivery], now_ns: int) -> list[StageResult]:
    """The tick's deliveries, checked: one result per source, in first-arrival order."""
    by_source: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        by_source.setdefault(delivery.source, []).append(delivery)
    results: list[StageResult] = []
    for source, ds in by_source.items():
        results += _check_source(quality, source, ds, now_ns)
    return results


def _check_source(
    quality: QualityStage, source: str, deliveries: list[Delivery], now_ns: int
) -> list[StageResult]:
    outage = next((d.outage_since_ns for d in deliveries if d.outage_since_ns is not None), None)
    gaps = _outage_gaps(quality, source, outage, now_ns) if outage is not None else None
    per_kind: dict[Kind, list[pa.RecordBatch]] = {}
    for delivery in deliveries:
        for kind, batch in delivery.batches.items():
            if batch.num_rows:
                per_kind.setdefault(kind, []).append(batch)
    if all(all(b.schema.equals(SCHEMAS[k]) for b in bs) for k, bs in per_kind.items()):
        result = quality.process(
            source, {k: stamp_source(_concat(bs), source) for k, bs in per_kind.items()}
        )
        for delivery in deliveries:
            result.add(quarantine=delivery.quarantine, gaps=delivery.gaps)
        results = [result]
    else:  # an adapter sent columns of another shape: each delivery alone, as sent
        results = []
        for delivery in deliveries:
            result = quality.process(source, stamp_all(delivery.batches, source))
            result.add(quarantine=delivery.quarantine, gaps=delivery.gaps)
            results.append(result)
    results[-1].add(gaps=gaps)
    last = next((d.checkpoint for d in reversed(deliveries) if d.checkpoint is not None), None)
    if last is not None:
        results[-1].checkpoint = checkpoint_batch(source, last, now_ns)
    return results


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


def _outage_gaps(quality: QualityStage, source: str, since: int, now: int) -> pa.RecordBatch | None:
    """One ``outage`` gap per (kind, symbol) the source had delivered before it went down."""
    keys = list(quality.checkpoint(source))[:MAX_OUTAGE_SYMBOLS]
    if not keys:
        return None
    n = len(keys)
    return pa.RecordBatch.from_pydict(
        {
            "ts_event": np.full(n, now, np.int64),
            "symbol": [s for _, s in keys],
            "source": [source] * n,
            "kind": [k.value for k, _ in keys],
            "seq": np.zeros(n, np.int64),
            "gap": ["outage"] * n,
            "start_ns": np.full(n, since, np.int64),
            "end_ns": np.full(n, now, np.int64),
            "seconds": np.full(n, (now - since) / 1e9),
            "missing_seq": np.zeros(n, np.int64),
        },
        schema=GAP_SCHEMA,
    )


def stamp_source(batch: pa.RecordBatch, name: str) -> pa.RecordBatch:
    """The batch with every row's ``source`` set to the source's name (one identity: the
    quality state, the lake's checkpoints and the status all key on it)."""
    if "source" not in batch.schema.names:
        return batch
    index = batch.schema.get_field_index("source")
    column = batch.column(index)
    already = (
        column.null_count == 0
        and pa.types.is_string(column.type)
        and pc.all(pc.equal(column, pa.scalar(name))).as_py()  # a compare, not a hash
    )
    if already:
        return batch
    constant = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(batch.num_rows, np.int32)), pa.array([name])
    ).cast(pa.string())
    return batch.set_column(index, batch.schema.field(index).with_type(pa.string()), constant)


def stamp_all(batches: Batches, name: str) -> Batches:
    return {kind: stamp_source(b, name) for kind, b in batches.items() if b.num_rows}
