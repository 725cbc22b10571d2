"""The pipeline side of the source contract: one ``LiveContext`` per source.

It stamps the source's name on its events, keeps the source's status current, feeds the
idle watchdog, records an ``outage`` gap per symbol when a source comes back after a
failed attempt, and passes deliveries, rejects and checkpoints to the pipeline's intake.
The intake call is shielded: a delivery handed over is checked and queued even if the
source is cancelled meanwhile (a restart or shutdown never drops half a delivery).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from tickpipe.clock import Clock
from tickpipe.datasets import GAP_SCHEMA, quarantine_rows
from tickpipe.events import Kind
from tickpipe.sources.base import (
    Batches,
    Checkpoint,
    SeqCheckpoint,
    Source,
    SourceState,
    SourceStatus,
)

log = logging.getLogger(__name__)

MAX_RAW_CHARS = 65_536
"""a rejected frame's text is kept up to this many characters (then marked as cut)"""
MAX_OUTAGE_SYMBOLS = 10_000


class Intake(Protocol):
    """Where a context hands its work: the live pipeline, or a backfill run."""

    async def submit(
        self,
        source: str,
        batches: Batches,
        *,
        checkpoint: Checkpoint | None = None,
        quarantine: pa.RecordBatch | None = None,
        gaps: pa.RecordBatch | None = None,
    ) -> None: ...


ContextFactory = Callable[[Source, SourceState], "LiveContext"]


class LiveContext:
    def __init__(
        self,
        name: str,
        state: SourceState,
        clock: Clock,
        intake: Intake,
        *,
        checkpoint: Checkpoint | None = None,
        sequences: SeqCheckpoint | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.checkpoint = checkpoint
        self.sequences: SeqCheckpoint = sequences or {}
        self._state = state
        self._intake = intake
        self._deadline: asyncio.Timeout | None = None
        self._idle: float | None = None
        self._seen: dict[tuple[Kind, str], None] = {}
        self._down_since_ns: int | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def attach_deadline(self, deadline: asyncio.Timeout | None, idle: float | None) -> None:
        """The supervisor's idle watchdog for the current attempt (None between attempts)."""
        self._deadline = deadline
        self._idle = idle

    def attempt_failed(self) -> None:
        """Remember when the feed went down; the next delivery records the outage."""
        if self._down_since_ns is None and self._seen:
            self._down_since_ns = self._state.last_event_ns or self.clock.now_ns()

    def alive(self) -> None:
        self._state.last_alive_ns = self.clock.now_ns()
        if self._deadline is not None and self._idle is not None:
            self._deadline.reschedule(asyncio.get_running_loop().time() + self._idle)

    def phase(self, phase: str) -> None:
        self._state.phase = phase

    def info(self, **details: Any) -> None:
        self._state.details.update(details)

    def count(self, counter: str, n: int = 1) -> None:
        self._state.counters[counter] = self._state.counters.get(counter, 0) + n

    async def emit(self, batches: Batches, checkpoint: Checkpoint | None = None) -> None:
        state = self._state
        rows = 0
        stamped: Batches = {}
        for kind, batch in batches.items():
            if batch.num_rows == 0:
                continue
            rows += batch.num_rows
            stamped[kind] = _with_source(batch, self.name)
            state.by_kind[kind.value] = state.by_kind.get(kind.value, 0) + batch.num_rows
        now = self.clock.now_ns()
        self.alive()
        state.batches += 1
        if state.status is not SourceStatus.RUNNING:
            state.status = SourceStatus.RUNNING
            state.next_retry_ns = None
            if state.phase == "starting":  # a source that names no phases of its own
                state.phase = "streaming"
        gaps = None
        if rows:
            state.events += rows
            state.last_event_ns = now
            gaps = self._outage(stamped, now)
        if not stamped and checkpoint is None:
            return
        await self._hand_over(stamped, checkpoint=checkpoint, gaps=gaps)

    async def reject(
        self,
        raw: str | bytes,
        reason: str,
        *,
        kind: Kind | None = None,
        symbol: str = "",
        rule: str = "parse_error",
    ) -> None:
        text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)
        if len(text) > MAX_RAW_CHARS:
            text = text[:MAX_RAW_CHARS] + f"… ({len(text) - MAX_RAW_CHARS} more characters)"
        self._state.rejected += 1
        self.count(rule)
        log.warning("source %s: %s rejected: %s", self.name, rule, reason[:200])
        batch = quarantine_rows(
            ts_ns=self.clock.now_ns(),
            source=self.name,
            kind=kind,
            symbol=symbol,
            rule=rule,
            reason=reason,
            payload=text,
        )
        await self._hand_over({}, quarantine=batch)

    async def _hand_over(
        self,
        batches: Batches,
        *,
        checkpoint: Checkpoint | None = None,
        quarantine: pa.RecordBatch | None = None,
        gaps: pa.RecordBatch | None = None,
    ) -> None:
        task = asyncio.ensure_future(
            self._intake.submit(
                self.name, batches, checkpoint=checkpoint, quarantine=quarantine, gaps=gaps
            )
        )
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        await asyncio.shield(task)
        if checkpoint is not None:
            self.checkpoint = checkpoint

    async def settled(self) -> None:
        """Wait for deliveries whose source was cancelled while they were handed over."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    def _outage(self, batches: Batches, now: int) -> pa.RecordBatch | None:
        """Note the symbols seen; after a failed attempt, one ``outage`` gap per symbol."""
        for kind, batch in batches.items():
            for symbol in batch.column("symbol").unique().to_pylist():
                if len(self._seen) < MAX_OUTAGE_SYMBOLS:
                    self._seen[(kind, symbol)] = None
        since, self._down_since_ns = self._down_since_ns, None
        if since is None:
            return None
        keys = list(self._seen)
        n = len(keys)
        return pa.RecordBatch.from_pydict(
            {
                "ts_event": np.full(n, now, np.int64),
                "symbol": [s for _, s in keys],
                "source": [self.name] * n,
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


def _with_source(batch: pa.RecordBatch, name: str) -> pa.RecordBatch:
    """The batch with every row's ``source`` set to the source's name (one identity: the
    quality state, the lake's checkpoints and the status all key on it)."""
    if "source" not in batch.schema.names:
        return batch
    index = batch.schema.get_field_index("source")
    column = batch.column(index)
    if column.null_count == 0 and pa.types.is_string(column.type):
        uniq = column.unique()
        if len(uniq) == 1 and uniq[0].as_py() == name:
            return batch
    constant = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(batch.num_rows, np.int32)), pa.array([name])
    ).cast(pa.string())
    return batch.set_column(index, batch.schema.field(index).with_type(pa.string()), constant)
