"""``GET /metrics``: Prometheus text, rendered by ``prometheus_client``.

One scrape = the pipeline's status (``ctx.status()``, the same dict ``/api/v1/status``
serves) turned into metric families, a hot-store round trip and a journal listing taken
for this scrape, the process-wide feed-latency histogram, this app's request metrics,
and the process collector. Public, like the status: it holds no market data. In
``--role api`` processes the status is the ingest process's (read from Redis), and the
request metrics are this worker's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import GCCollector, ProcessCollector, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.responses import Response

from tickpipe import metrics
from tickpipe.api import protocol
from tickpipe.api.context import ApiContext
from tickpipe.events import Kind
from tickpipe.sources.base import SourceStatus

router = APIRouter(tags=["status"])
PROBE_TIMEOUT_S = 2.0
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
"""every name here is a classic one, so the format every Prometheus version reads"""
NS = 1_000_000_000


async def probe(ctx: ApiContext) -> dict[str, Any]:
    """Facts the status does not hold, measured now: the hot store's round trip and
    symbols, the journal backlog and flush lag. Shared with the dashboard."""
    hot = ctx.query.hot
    facts: dict[str, Any] = {"kind": hot.name, "reachable": True, "rtt_ms": None}
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            started = time.perf_counter()
            await hot.latest_quotes(["$tickpipe-probe"])
            facts["rtt_ms"] = round((time.perf_counter() - started) * 1000, 3)
            facts["symbols"] = {
                k.value: len(await hot.symbols(k)) for k in (Kind.TRADE, Kind.QUOTE)
            }
    except Exception as exc:  # a down Redis is what this probe is for
        facts.update(reachable=False, error=f"{type(exc).__name__}: {exc}")
    journal = await asyncio.to_thread(metrics.journal_backlog, ctx.settings.journal_dir)
    return {"hot_store": facts, "journal": journal}


def _pipeline_status(status: dict[str, Any]) -> dict[str, Any] | None:
    """The ingest pipeline's status: the dict itself, or in an API-only process the copy
    it read from Redis (None until the ingest process has published one)."""
    if status.get("role") == "api":
        ingest = status.get("ingest")
        return ingest if isinstance(ingest, dict) else None
    return status


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class StatusCollector:
    """Metric families from one status snapshot and one probe. Tolerant: a key that is
    missing or of another type is skipped, so new status fields never break a scrape."""

    def __init__(self, status: dict[str, Any], probed: dict[str, Any], now_ns: int) -> None:
        self.status = status
        self.probed = probed
        self.now_ns = now_ns

    def collect(self) -> Iterator[Metric]:
        yield from self._probe()
        status = _pipeline_status(self.status)
        available = _gauge("tickpipe_status_available", "1 if the pipeline status was readable")
        available.add_metric([], 0 if status is None else 1)
        yield available
        if status is None:
            return
        yield from self._sources(status)
        yield from self._quality(status)
        yield from self._services(status)

    def _probe(self) -> Iterator[Metric]:
        hot = self.probed.get("hot_store", {})
        info = _gauge("tickpipe_hot_store_up", "1 if the hot store answered", ("kind",))
        info.add_metric([str(hot.get("kind", ""))], 1 if hot.get("reachable") else 0)
        yield info
        if (rtt := _num(hot.get("rtt_ms"))) is not None:
            family = _gauge("tickpipe_hot_store_roundtrip_seconds", "one hot-store read, now")
            family.add_metric([], rtt / 1000)
            yield family
        symbols = _gauge("tickpipe_hot_store_symbols", "symbols held per kind", ("kind",))
        for kind, n in sorted(hot.get("symbols", {}).items()):
            symbols.add_metric([kind], n)
        yield symbols
        journal = self.probed.get("journal", {})
        segments = _gauge("tickpipe_journal_segments", "segments not yet in the lake", ("state",))
        segments.add_metric(["open"], journal.get("open_segments", 0))
        segments.add_metric(["closed"], journal.get("closed_segments", 0))
        yield segments
        lag = _gauge(
            "tickpipe_flush_lag_seconds", "age of the oldest accepted event not yet in the lake"
        )
        lag.add_metric([], _num(journal.get("flush_lag_s")) or 0.0)
        yield lag

    def _sources(self, status: dict[str, Any]) -> Iterator[Metric]:
        state = _gauge(
            "tickpipe_source_state", "1 for the state each source is in", ("source", "state")
        )
        events = _counter(
            "tickpipe_source_events", "accepted events per source and kind", ("source", "kind")
        )
        restarts = _counter("tickpipe_source_restarts", "attempts restarted", ("source",))
        rejected = _counter(
            "tickpipe_source_rejected", "frames quarantined as unparsable", ("source",)
        )
        age = _gauge("tickpipe_source_last_event_age_seconds", "since the last event", ("source",))
        counters = _counter(
            "tickpipe_source_counter", "feed-specific counters", ("source", "counter")
        )
        latency = _gauge(
            "tickpipe_source_latency_last_delivery_seconds",
            "feed latency percentiles of the last delivery",
            ("source", "quantile"),
        )
        backlog = _gauge(
            "tickpipe_source_backlog_bytes",
            "unread bytes on the feed's socket: above 1 MiB the source is falling behind",
            ("source",),
        )
        behind = _counter(
            "tickpipe_source_behind_episodes", "times the source fell behind its feed", ("source",)
        )
        states = [s.value for s in SourceStatus]
        for source in status.get("sources") or []:
            if not isinstance(source, dict) or "name" not in source:
                continue
            name = str(source["name"])
            current = source.get("status")
            for value in [*states, *([current] if current not in states else [])]:
                state.add_metric([name, str(value)], 1 if value == current else 0)
            for kind, n in sorted((source.get("by_kind") or {}).items()):
                events.add_metric([name, kind], n)
            restarts.add_metric([name], source.get("restarts", 0))
            rejected.add_metric([name], source.get("rejected", 0))
            backlog.add_metric([name], source.get("backlog_bytes", 0))
            behind.add_metric([name], source.get("behind_episodes", 0))
            if (last := _num(source.get("last_event_ns"))) is not None:
                age.add_metric([name], max(self.now_ns - last, 0) / NS)
            for counter, n in sorted((source.get("counters") or {}).items()):
                if (value := _num(n)) is not None:
                    counters.add_metric([name, counter], value)
            for quantile, key in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
                if (ms := _num((source.get("latency_ms") or {}).get(key))) is not None:
                    latency.add_metric([name, quantile], ms / 1000)
        yield from (state, events, restarts, rejected, age, counters, latency, backlog, behind)

    def _quality(self, status: dict[str, Any]) -> Iterator[Metric]:
        accepted = _counter("tickpipe_events_accepted", "events accepted, per kind", ("kind",))
        for kind, n in sorted((status.get("accepted") or {}).items()):
            accepted.add_metric([kind], n)
        yield accepted
        quarantined = _counter(
            "tickpipe_events_quarantined",
            "events quarantined by the quality rules, per source, kind and rule",
            ("source", "kind", "rule"),
        )
        quality = status.get("quality") or {}
        for source, rules in sorted((quality.get("rejected") or {}).items()):
            for label, n in sorted(rules.items()):
                kind, _, rule = label.partition(".")
                quarantined.add_metric([source, kind, rule], n)
        yield quarantined
        gaps = _counter(
            "tickpipe_gaps", "gaps recorded, per source and gap type", ("source", "gap")
        )
        for label, n in sorted((quality.get("gaps") or {}).items()):
            source, _, gap = label.rpartition(".")
            gaps.add_metric([source, gap], n)
        yield gaps
        for name, key, doc in (
            (
                "tickpipe_quarantined",
                "quarantined_total",
                "quarantine records written (all causes)",
            ),
            ("tickpipe_gap_records", "gaps_total", "gap records written"),
        ):
            if (value := _num(status.get(key))) is not None:
                family = _counter(name, doc)
                family.add_metric([], value)
                yield family

    def _services(self, status: dict[str, Any]) -> Iterator[Metric]:
        if (uptime := _num(status.get("uptime_s"))) is not None:
            yield GaugeMetricFamily("tickpipe_uptime_seconds", "pipeline uptime", value=uptime)
        services = status.get("services") or {}
        journal = services.get("journal") or {}
        lake = services.get("lake") or {}
        rows = (
            ("tickpipe_journal_open_rows", journal, "open_rows", "gauge", "journal backlog: rows in open segments"),
            ("tickpipe_journal_rows_written", journal, "rows_written", "counter", "rows appended to the journal"),
            ("tickpipe_journal_bytes_written", journal, "bytes_written", "counter", "journal bytes written"),
            ("tickpipe_journal_fsyncs", journal, "fsyncs", "counter", "journal fsyncs"),
            ("tickpipe_journal_errors", journal, "errors", "counter", "journal write errors"),
            ("tickpipe_journal_last_append_seconds", journal, "last_append_ms", "ms", "last group commit"),
            ("tickpipe_lake_bytes", lake, "bytes", "gauge", "Parquet lake size on disk"),
            ("tickpipe_lake_files_written", lake, "files_written", "counter", "lake files written"),
            ("tickpipe_lake_rows_written", lake, "rows_written", "counter", "rows flushed to the lake"),
            ("tickpipe_lake_flush_errors", lake, "flush_errors", "counter", "failed flushes"),
            ("tickpipe_hub_queue_depth", services, "hub_queue", "gauge", "deliveries waiting for the journal"),
            ("tickpipe_bus_subscribers", services, "bus_subscribers", "gauge", "live subscribers"),
            ("tickpipe_bus_published", services, "bus_published", "counter", "events published"),
            ("tickpipe_bus_dropped", services, "bus_dropped", "counter", "events dropped for slow subscribers"),
        )  # fmt: skip
        for name, source, key, kind, doc in rows:
            value = _num(source.get(key))
            if value is None:
                continue
            if kind == "counter":
                family: Metric = _counter(name, doc)
            else:
                family = _gauge(name, doc)
                value = value / 1000 if kind == "ms" else value
            family.add_metric([], value)  # type: ignore[attr-defined]
            yield family
        blocked = _gauge("tickpipe_journal_blocked", "1 while the journal refuses writes")
        blocked.add_metric([], 0 if journal.get("blocked_since") is None else 1)
        yield blocked
        yield from self._sinks(status.get("sinks") or {})

    def _sinks(self, sinks: dict[str, Any]) -> Iterator[Metric]:
        queued = _gauge("tickpipe_sink_queued", "deliveries queued per sink", ("sink",))
        dropped = _counter("tickpipe_sink_dropped", "deliveries dropped per sink", ("sink",))
        errors = _counter("tickpipe_sink_errors", "failed deliveries per sink", ("sink",))
        healthy = _gauge("tickpipe_sink_healthy", "1 if the sink's last delivery worked", ("sink",))
        for name, stats in sorted(sinks.items()):
            if not isinstance(stats, dict):
                continue
            queued.add_metric([name], stats.get("queued", 0))
            dropped.add_metric([name], stats.get("dropped", 0))
            errors.add_metric([name], stats.get("errors", 0))
            healthy.add_metric([name], 1 if stats.get("healthy", True) else 0)
        yield from (queued, dropped, errors, healthy)


class _Scrape:
    """Every collector of one scrape behind a single ``collect`` for a fresh registry."""

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


_runtime = CollectorRegistry(auto_describe=False)
"""the process and garbage-collector collectors; rendered with every scrape"""
ProcessCollector(registry=_runtime)
GCCollector(registry=_runtime)


@router.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    ctx: ApiContext = request.app.state.ctx
    probed = await probe(ctx)
    collectors: list[Any] = [StatusCollector(ctx.status(), probed, time.time_ns())]
    collectors.append(metrics.FEED_LATENCY)
    observer = getattr(request.app.state, "observer", None)
    if observer is not None:
        collectors += [observer.metrics, _AccessLogCollector(observer.access_log)]
    collectors += [_HeadRefusalsCollector(), _runtime]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(*collectors))
    # on the event loop: the request counters it reads are updated there
    return Response(generate_latest(registry), media_type=TEXT_FORMAT)


class _AccessLogCollector:
    def __init__(self, access_log: Any) -> None:
        self.log = access_log

    def collect(self) -> Iterator[Metric]:
        for name, value, doc in (
            ("tickpipe_access_log_lines", self.log.written, "access log lines written"),
            (
                "tickpipe_access_log_dropped",
                self.log.dropped,
                "lines dropped: the writer fell behind, or a write failed",
            ),
            ("tickpipe_access_log_errors", self.log.errors, "failed access log writes"),
        ):
            family = _counter(name, doc)
            family.add_metric([], value)
            yield family


class _HeadRefusalsCollector:
    """Connections refused before their request head was complete (``api.protocol``)."""

    def collect(self) -> Iterator[Metric]:
        family = _counter(
            "tickpipe_http_refused",
            "requests refused at the head: too large, too many fields, too slow, malformed",
            ("code",),
        )
        for code, count in protocol.refusals().items():
            family.add_metric([code], count)
        yield family
