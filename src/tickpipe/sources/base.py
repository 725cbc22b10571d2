"""The Source protocol and the per-source state the supervisor keeps for the status API."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Protocol, runtime_checkable

import pyarrow as pa

from tickpipe.events import Kind

Batches = dict[Kind, pa.RecordBatch]
"""One delivery from a source: a columnar batch per event kind, in arrival order."""


class Source(Protocol):
    """A feed: a websocket client, a REST poller and a file tail all fit.

    ``stream()`` connects, authenticates and subscribes, then yields batches until the
    feed ends (return) or fails (raise). It never retries: the supervisor owns reconnects.
    """

    name: str

    def stream(self) -> AsyncIterator[Batches]: ...


@runtime_checkable
class Resumable(Protocol):
    """A source that numbers its own events: told where the last run stopped."""

    def resume(self, checkpoint: dict[tuple[Kind, str], tuple[int, int]]) -> None: ...


class SourceStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FINISHED = "finished"
    STOPPED = "stopped"


@dataclasses.dataclass
class SourceState:
    """What the status page shows about one source; mutated only by the supervisor."""

    name: str
    status: SourceStatus = SourceStatus.STARTING
    started_ns: int | None = None
    last_event_ns: int | None = None
    events: int = 0
    batches: int = 0
    restarts: int = 0
    last_error: str | None = None
    last_error_ns: int | None = None
    next_retry_ns: int | None = None
    by_kind: dict[str, int] = dataclasses.field(default_factory=dict)
