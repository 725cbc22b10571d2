"""The records the quality stage writes besides events: quarantine and gaps, as Arrow.

Both are rare next to accepted events, so the quarantine keeps the whole original row as
JSON (a Python pass over the rejected rows only); gaps are built column by column
straight into ``GAP_SCHEMA``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa

from tickpipe.clock import NS_PER_SECOND
from tickpipe.datasets import GAP_SCHEMA, QUARANTINE_SCHEMA
from tickpipe.events import SCHEMAS, Kind
from tickpipe.quality.rules import Columns, Rule

BAD_SCHEMA = "bad_schema"
IntArray = npt.NDArray[np.int64]


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


def quarantine_batch(
    source: str,
    kind: Kind,
    batch: pa.RecordBatch,
    rows: IntArray,
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


def bad_schema_batch(source: str, kind: Kind, batch: pa.RecordBatch, now: int) -> pa.RecordBatch:
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


def gap_batch(
    source: str,
    kind: Kind,
    batch: pa.RecordBatch,
    ts: IntArray,
    seq: IntArray,
    sequence: tuple[IntArray, IntArray],
    time: tuple[IntArray, IntArray],
) -> pa.RecordBatch:
    """Sequence gaps ``(row, missing)`` then time gaps ``(row, silence start)`` of one
    grouped batch, as ``GAP_SCHEMA`` records."""
    seq_rows, missing = sequence
    time_rows, silence_start = time
    rows = np.concatenate((seq_rows, time_rows))
    end = ts[rows]
    start = np.concatenate((end[: seq_rows.size], silence_start))
    n_seq, n = seq_rows.size, rows.size
    columns = {
        "ts_event": pa.array(end, pa.int64()),
        "symbol": batch.column("symbol").take(pa.array(rows)),
        "source": pa.array([source] * n, pa.string()),
        "kind": pa.array([kind.value] * n, pa.string()),
        "seq": pa.array(seq[rows], pa.int64()),
        "gap": pa.array(["sequence"] * n_seq + ["time"] * (n - n_seq), pa.string()),
        "start_ns": pa.array(start, pa.int64()),
        "end_ns": pa.array(end, pa.int64()),
        "seconds": pa.array((end - start) / NS_PER_SECOND, pa.float64()),
        "missing_seq": pa.array(np.concatenate((missing, np.zeros(n - n_seq, np.int64)))),
    }
    return pa.RecordBatch.from_arrays([columns[f.name] for f in GAP_SCHEMA], schema=GAP_SCHEMA)


def concat(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch | None:
    if not batches:
        return None
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches, schema=schema).combine_chunks().to_batches()[0]
