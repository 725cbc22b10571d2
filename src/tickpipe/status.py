"""The status model: what ``GET /api/v1/status`` answers, in every role, and nothing secret.

The ingest process builds it from each component's own figures; API processes
(``--role api``) serve the ingest process's copy from Redis, with their own ``api`` part.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class LatencyMs(BaseModel):
    """Feed latency (ts_recv − ts_event) of a source's last delivery, milliseconds."""

    p50: float
    p99: float
    max: float


class SourceStats(BaseModel):
    name: str
    status: str = Field(description="starting, running, backoff, stopped, failed or finished")
    phase: str = ""
    events: int = 0
    batches: int = 0
    by_kind: dict[str, int] = {}
    rejected: int = 0
    restarts: int = 0
    started_ns: int | None = None
    last_event_ns: int | None = None
    last_alive_ns: int | None = None
    last_error: str | None = None
    last_error_ns: int | None = None
    next_retry_ns: int | None = None
    latency_ms: LatencyMs | None = None
    backlog_bytes: int = Field(0, description="unread bytes on the feed's socket (last sample)")
    backlog_max_bytes: int = Field(0, description="largest backlog seen since start")
    behind_since_ns: int | None = Field(
        None, description="set while the feed is falling behind (backlog over the mark)"
    )
    behind_episodes: int = Field(0, description="times the feed fell behind")
    counters: dict[str, int] = {}
    details: dict[str, Any] = Field({}, description="feed-specific facts (connection, tokens)")


class JournalStats(BaseModel):
    rows_written: int
    open_rows: int
    fsyncs: int
    bytes_written: int
    appends: int
    last_append_ms: float
    mean_append_ms: float
    errors: int
    last_error: str | None
    blocked_since: float | None = Field(
        None, description="epoch seconds since which the journal refuses writes (disk full)"
    )
    append_errors: int = 0
    close_errors: int = 0
    corrupt_segments: int = Field(0, description="segments with invalid batches, salvaged")
    corrupt_batches: int = Field(0, description="invalid batches moved to journal/corrupt/")


class LakeStats(BaseModel):
    bytes: int
    files_written: int
    rows_written: int
    flush_errors: int
    segments_flushed: int
    compacted_files: int
    compacted_files_deleted: int
    errors: int = 0
    last_error: str | None = None
    blocked_since: float | None = Field(
        None, description="epoch seconds since which flushing to the lake fails"
    )


class Services(BaseModel):
    hot_store: str
    bus: str
    journal: JournalStats
    lake: LakeStats
    bus_subscribers: int
    bus_published: int
    bus_publish_failures: int = 0
    bus_dropped: int
    hub_queue: int


class SinkStats(BaseModel):
    """A best-effort fan-out target (hot store, bus, a listener) behind its own queue."""

    queued: int
    delivered: int
    dropped: int
    errors: int
    last_error: str | None
    healthy: bool


class QualityStats(BaseModel):
    rejected: dict[str, dict[str, int]] = Field(
        {}, description='source -> {"kind.rule": quarantined events}'
    )
    gaps: dict[str, int] = Field({}, description='"source.gap" -> gap records')


class ApiProcess(BaseModel):
    """The process that answered (differs from the ingest process in ``--role api``)."""

    role: str
    pid: int
    bus_subscribers: int
    ingest_status_age_s: float | None = Field(
        None, description="how old the ingest process's status is (--role api); None: live"
    )


class Status(BaseModel):
    role: str = Field(description="the ingest process's role: all or ingest")
    uptime_s: float
    services: Services
    sources: list[SourceStats]
    accepted: dict[str, int]
    accepted_total: int
    quarantined_total: int
    gaps_total: int
    quality: QualityStats
    sinks: dict[str, SinkStats]
    gex: dict[str, Any]
    api: ApiProcess | None = None
