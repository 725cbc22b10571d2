"""The pipeline side of the source contract: one ``LiveContext`` per source.

It keeps the source's status current, feeds the idle watchdog, notes when a source comes
back after a failed attempt (the tick records an ``outage`` gap per symbol), and appends
deliveries, rejects and checkpoints to the pipeline's intake: a frame costs an append and
a few counters here; stamping the source's name, the checks and the journal happen once
per tick for everything pending. When the intake is full the wait is shielded: a delivery
handed over is kept even if the source is cancelled meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from tickpipe.clock import Clock
from tickpipe.datasets import quarantine_rows
from tickpipe.events import Kind
from tickpipe.sources.base import (
    Batches,
    Checkpoint,
    Delivery,
    SeqCheckpoint,
    Source,
    SourceState,
    SourceStatus,
)

log = logging.getLogger(__name__)

MAX_RAW_CHARS = 65_536
"""a rejected frame's text is kept up to this many characters (then marked as cut)"""
BEHIND_BYTES = 1 << 20
"""a feed with this much unread on its socket is falling behind (logged, on /status)"""
YIELD_EVERY = 1024
YIELD_S = 0.002
"""a source that never suspends on its own is suspended after this many deliveries or
this long, whichever comes first (a tick's worth)"""


class Intake(Protocol):
    """Where a context hands its deliveries: the live pipeline's tick, or a backfill run."""

    def try_put(self, delivery: Delivery) -> bool:
        """Append without waiting if there is room (the live path, every frame)."""
        ...

    async def put(self, delivery: Delivery) -> None:
        """Append, waiting while the intake is full (back-pressure)."""
        ...


ContextFactory = Callable[[Source, SourceState], "LiveContext"]


class LiveContext:
    behind_bytes = BEHIND_BYTES

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
        self._down_since_ns: int | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._unyielded = 0
        self._yield_at = 0.0

    def attach_deadline(self, deadline: asyncio.Timeout | None, idle: float | None) -> None:
        """The supervisor's idle watchdog for the current attempt (None between attempts)."""
        self._deadline = deadline
        self._idle = idle

    def attempt_failed(self) -> None:
        """Remember when the feed went down; the next delivery records the outage (one
        gap per symbol the source had delivered, built by the tick)."""
        if self._down_since_ns is None and self._state.events:
            self._down_since_ns = self._state.last_event_ns or self.clock.now_ns()

    def alive(self) -> None:
        self._state.last_alive_ns = self.clock.now_ns()
        if self._deadline is not None and self._idle is not None:
            self._deadline.reschedule(asyncio.get_running_loop().time() + self._idle)

    def phase(self, phase: str) -> None:
        self._state.phase = phase

    def info(self, **details: Any) -> None:
        self._state.details.update(details)

    def backlog(self, unread_bytes: int) -> None:
        """A sample of the feed's socket backlog; crossing ``behind_bytes`` is logged
        (and the way back under half of it), never once per sample."""
        state = self._state
        state.backlog_bytes = unread_bytes
        state.backlog_max_bytes = max(state.backlog_max_bytes, unread_bytes)
        if state.behind_since_ns is None and unread_bytes >= self.behind_bytes:
            state.behind_since_ns = self.clock.now_ns()
            state.behind_episodes += 1
            log.warning(
                "source %s is falling behind its feed: %d bytes unread on its socket "
                "(a server may disconnect a client that stays behind)",
                self.name,
                unread_bytes,
            )
        elif state.behind_since_ns is not None and unread_bytes < self.behind_bytes // 2:
            behind_s = (self.clock.now_ns() - state.behind_since_ns) / 1e9
            state.behind_since_ns = None
            log.warning("source %s caught up with its feed after %.1fs behind", self.name, behind_s)

    def count(self, counter: str, n: int = 1) -> None:
        self._state.counters[counter] = self._state.counters.get(counter, 0) + n

    async def emit(self, batches: Batches, checkpoint: Checkpoint | None = None) -> None:
        """Count and hand over; checks, stamping and the journal happen once per tick for
        everything pending (``tickpipe.ticker``), so a frame costs an append here."""
        state = self._state
        rows = 0
        for kind, batch in batches.items():
            n = batch.num_rows
            if n:
                rows += n
                state.by_kind[kind.value] = state.by_kind.get(kind.value, 0) + n
        now = self.clock.now_ns()
        self.alive()
        state.batches += 1
        if state.status is not SourceStatus.RUNNING:
            state.status = SourceStatus.RUNNING
            state.next_retry_ns = None
            if state.phase == "starting":  # a source that names no phases of its own
                state.phase = "streaming"
        outage = None
        if rows:
            state.events += rows
            state.last_event_ns = now
            outage, self._down_since_ns = self._down_since_ns, None
        elif checkpoint is None:
            return
        await self._hand_over(
            Delivery(self.name, batches, rows, checkpoint=checkpoint, outage_since_ns=outage)
        )
        if checkpoint is not None:
            self.checkpoint = checkpoint
        self._unyielded += 1
        if self._unyielded >= YIELD_EVERY or time.perf_counter() >= self._yield_at:
            # a feed with a backlog reads without ever suspending: let the tick (and
            # everything else on the loop) run at least every YIELD_S, and let a cancel land
            self._unyielded = 0
            await asyncio.sleep(0)
            self._yield_at = time.perf_counter() + YIELD_S

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
        await self._hand_over(Delivery(self.name, {}, batch.num_rows, quarantine=batch))

    async def _hand_over(self, delivery: Delivery) -> None:
        """Append at once when there is room; otherwise wait for room in a shielded task,
        so a delivery handed over is kept even if the source is cancelled meanwhile."""
        if self._intake.try_put(delivery):
            return
        task = asyncio.ensure_future(self._intake.put(delivery))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        await asyncio.shield(task)

    async def settled(self) -> None:
        """Wait for deliveries whose source was cancelled while they were handed over."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
