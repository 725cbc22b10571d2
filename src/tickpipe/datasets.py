"""The lake's datasets beside the events: quarantine, gaps and source checkpoints.

Every layer (quality stage, hub, journal, query, API) reads these names and schemas from
here, so none of them has to import another layer to know a dataset's shape.
"""

from __future__ import annotations

import pyarrow as pa

from tickpipe.events import SCHEMAS, Kind

QUARANTINE = "quarantine"
GAPS = "gaps"
CHECKPOINTS = "checkpoints"

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("ts_event", pa.int64()),
        pa.field("ts_recv", pa.int64()),
        pa.field("symbol", pa.string()),
        pa.field("source", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("seq", pa.int64()),
        pa.field("rule", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("payload", pa.string()),
    ],
    metadata={b"tickpipe.kind": QUARANTINE.encode()},
)

GAP_SCHEMA = pa.schema(
    [
        pa.field("ts_event", pa.int64()),
        pa.field("symbol", pa.string()),
        pa.field("source", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("seq", pa.int64()),
        pa.field("gap", pa.string()),
        pa.field("start_ns", pa.int64()),
        pa.field("end_ns", pa.int64()),
        pa.field("seconds", pa.float64()),
        pa.field("missing_seq", pa.int64()),
    ],
    metadata={b"tickpipe.kind": GAPS.encode()},
)
"""``gap``: ``time`` (a silence), ``sequence`` (seq jumped by ``missing_seq``), ``outage``
(the source's connection was down from ``start_ns`` to ``end_ns``)."""

CHECKPOINT_SCHEMA = pa.schema(
    [
        pa.field("ts_event", pa.int64()),
        pa.field("symbol", pa.string()),
        pa.field("source", pa.string()),
        pa.field("checkpoint", pa.string()),
    ],
    metadata={b"tickpipe.kind": CHECKPOINTS.encode()},
)
"""One row per committed source checkpoint; ``symbol`` repeats the source name so the lake's
generic (symbol, ts_event) sort and day split apply. ``checkpoint`` is the JSON text."""

DATASET_SCHEMAS: dict[str, pa.Schema] = {
    **{kind.value: schema for kind, schema in SCHEMAS.items()},
    QUARANTINE: QUARANTINE_SCHEMA,
    GAPS: GAP_SCHEMA,
    CHECKPOINTS: CHECKPOINT_SCHEMA,
}


def quarantine_rows(
    *,
    ts_ns: int,
    source: str,
    kind: Kind | None,
    symbol: str,
    rule: str,
    reason: str,
    payload: str,
) -> pa.RecordBatch:
    """One quarantine record for something that never became an event (a bad frame)."""
    return pa.RecordBatch.from_pydict(
        {
            "ts_event": [ts_ns],
            "ts_recv": [ts_ns],
            "symbol": [symbol],
            "source": [source],
            "kind": [kind.value if kind is not None else "frame"],
            "seq": [0],
            "rule": [rule],
            "reason": [reason],
            "payload": [payload],
        },
        schema=QUARANTINE_SCHEMA,
    )
