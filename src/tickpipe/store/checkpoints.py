"""Source checkpoints in the lake: written with the events they cover, read on start.

A checkpoint row rides in the same journal group commit as its delivery and is appended
after the events, so after a crash the checkpoint on disk is never ahead of the events
(at worst behind: the source re-reads a little and the duplicate rule drops it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa

from tickpipe.datasets import CHECKPOINT_SCHEMA, CHECKPOINTS
from tickpipe.sources.base import Checkpoint
from tickpipe.store import layout

log = logging.getLogger(__name__)


def checkpoint_batch(source: str, checkpoint: Checkpoint, now_ns: int) -> pa.RecordBatch:
    text = orjson.dumps(checkpoint, option=orjson.OPT_NON_STR_KEYS).decode()
    return pa.RecordBatch.from_pydict(
        {"ts_event": [now_ns], "symbol": [source], "source": [source], "checkpoint": [text]},
        schema=CHECKPOINT_SCHEMA,
    )


def latest_checkpoints(lake_dir: Path, sources: list[str]) -> dict[str, Checkpoint]:
    """The newest checkpoint of each source, reading days newest first until every source
    is found (a file tail idle for a month still finds its offsets)."""
    found: dict[str, Checkpoint] = {}
    wanted = set(sources)
    for part in reversed(layout.partitions(lake_dir, CHECKPOINTS)):
        files, _ = layout.visible_files(part)
        if not files:
            continue
        with duckdb.connect() as con:
            rows = con.execute(
                "SELECT source, arg_max(checkpoint, ts_event) FROM read_parquet($files) "
                "GROUP BY source",
                {"files": [f.as_posix() for f in files]},
            ).fetchall()
        for source, text in rows:
            if source in wanted and source not in found:
                try:
                    found[source] = orjson.loads(text)
                except orjson.JSONDecodeError:
                    log.warning("unreadable checkpoint of %s ignored", source)
        if wanted <= found.keys():
            break
    return found
