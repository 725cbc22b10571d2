"""The source contract: what a feed adapter implements and what the pipeline gives it.

A source is an object with a ``name``, a ``policy`` and ``async def run(ctx)``. ``run``
connects, authenticates and subscribes, then hands every decoded delivery to
``ctx.emit`` until the feed ends (return) or fails (raise). It never retries: the
supervisor owns reconnects, with the source's own backoff and idle timeout. Long-lived
helpers of one connection (heartbeats, keepalives, a token refresher) run in a
``asyncio.TaskGroup`` opened inside ``run``, so they live and die with the attempt.

What ``run`` may raise, and what the supervisor does:

- ``ConfigError`` (bad credentials, a revoked token, a missing setting): the source stops
  with the error's sentence as its status; no retry until someone restarts it.
- anything else (``TransportError``, ``OSError``, a protocol surprise): backoff, then a
  new attempt. A ``ParseError`` that escapes is quarantined with its raw payload first.

Within a connection, a frame that cannot be parsed is ``await ctx.reject(raw, reason)``:
quarantined with its raw text while the connection stays up. Heartbeats and keepalives
that carry no data call ``ctx.alive()`` so the idle watchdog knows the feed lives.
A minimal adapter is sketched in ``docs/architecture.md`` ("The source contract").
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from tickpipe.clock import Clock
from tickpipe.events import Kind

Batches = dict[Kind, pa.RecordBatch]
"""One delivery from a source: a columnar batch per event kind, in arrival order."""

Checkpoint = dict[str, Any]
"""A source's own resume point (byte offsets, last poll times...): JSON-able, opaque to the
pipeline, committed in the same journal group commit as the events it covers."""

SeqCheckpoint = dict[tuple[Kind, str], tuple[int, int]]
"""(kind, symbol) -> (last seq, last accepted ts_event) the pipeline holds for a source."""


@dataclasses.dataclass(slots=True)
class Delivery:
    """One ``ctx.emit`` / ``ctx.reject`` as it was handed over, before any check."""

    source: str
    batches: Batches
    rows: int
    checkpoint: Checkpoint | None = None
    quarantine: pa.RecordBatch | None = None
    gaps: pa.RecordBatch | None = None
    outage_since_ns: int | None = None
    """set on the first delivery after a failed attempt: when the feed went down"""


@dataclasses.dataclass(frozen=True)
class SourcePolicy:
    """How the supervisor treats one source.

    ``idle_timeout_s``: with neither an event nor ``ctx.alive()`` for this long the attempt
    is cut and retried; ``None`` turns the watchdog off (a file tail after the close).
    """

    idle_timeout_s: float | None = 60.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


class SourceContext(Protocol):
    """The pipeline as one source sees it; one context per source, kept across attempts."""

    name: str
    clock: Clock
    checkpoint: Checkpoint | None
    """the last checkpoint committed with this source's events (None: never)"""
    sequences: SeqCheckpoint
    """last seq and time per (kind, symbol) of this source's accepted events, for feeds
    that number their own events and must continue where the last run stopped"""

    def backlog(self, unread_bytes: int) -> None:
        """How many bytes sit unread on the feed's socket (``sources/backlog.watch``)."""
        ...

    async def emit(self, batches: Batches, checkpoint: Checkpoint | None = None) -> None:
        """Check and commit one delivery; returns once it is queued for the journal
        (waits while the journal is behind: back-pressure). The events' ``source`` column
        is set to the source's name. ``checkpoint`` becomes durable with these events,
        never before them. Completes even if the caller is cancelled meanwhile."""
        ...

    async def reject(
        self,
        raw: str | bytes,
        reason: str,
        *,
        kind: Kind | None = None,
        symbol: str = "",
        rule: str = "parse_error",
    ) -> None:
        """Quarantine a frame that could not become events, with its raw text and why."""
        ...

    def alive(self) -> None:
        """The feed is alive though it sent no data (heartbeat, keepalive, empty poll)."""
        ...

    def phase(self, phase: str) -> None:
        """What the source is doing now, for /status: connecting, authenticating, subscribed..."""
        ...

    def info(self, **details: Any) -> None:
        """Merge feed-specific, JSON-able facts into the source's status (never secrets)."""
        ...

    def count(self, counter: str, n: int = 1) -> None:
        """Add to a named counter shown in the source's status (unknown fields, server errors)."""
        ...


@runtime_checkable
class Source(Protocol):
    """A feed: a websocket client, a REST poller and a file tail all fit."""

    name: str
    policy: SourcePolicy

    async def run(self, ctx: SourceContext) -> None: ...


class SourceStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    """stopped by a ConfigError: needs a settings change (or a restart) to run again"""


@dataclasses.dataclass
class SourceState:
    """What the status page shows about one source; mutated by the supervisor and the
    source's context only."""

    name: str
    status: SourceStatus = SourceStatus.STARTING
    phase: str = ""
    started_ns: int | None = None
    last_event_ns: int | None = None
    last_alive_ns: int | None = None
    events: int = 0
    batches: int = 0
    rejected: int = 0
    restarts: int = 0
    last_error: str | None = None
    last_error_ns: int | None = None
    next_retry_ns: int | None = None
    by_kind: dict[str, int] = dataclasses.field(default_factory=dict)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    backlog_bytes: int = 0
    """unread bytes on the feed's socket at the last sample (see sources/backlog.py)"""
    backlog_max_bytes: int = 0
    behind_since_ns: int | None = None
    """set while the backlog is above the falling-behind mark"""
    behind_episodes: int = 0
