"""Metric definitions: histograms counted in bulk, rendered by ``prometheus_client``.

Feed latency arrives as one numpy array per delivery (the pipeline ingests ~1 M events/s),
so ``BucketHistogram.observe_many`` counts a whole delivery with one ``searchsorted`` and
one ``bincount`` instead of one Python call per event; API requests, one at a time, use
``observe`` (a ``bisect``). Both are ``prometheus_client`` collectors yielding
``HistogramMetricFamily``: the text format is the library's, never written by hand.

Values are kept in integer nanoseconds (what the clocks give) and exposed in seconds.
Prometheus buckets are cumulative and inclusive (``le``), hence ``side="left"``.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from tickpipe.store import layout

NS = 1_000_000_000

FEED_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""from co-located feeds (sub-millisecond) to delayed REST snapshots (tens of seconds)"""
API_LATENCY_BUCKETS_S = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
RECENT_REQUESTS = 2048
"""API request durations kept for the dashboard's recent percentiles"""


class BucketHistogram:
    """A labelled histogram of nanosecond values; thread-safe (the quality stage records
    from its worker thread while the event loop scrapes)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets_s: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds_s = tuple(buckets_s)
        self._bounds_ns = [round(b * NS) for b in buckets_s]
        self._bounds_array = np.asarray(self._bounds_ns, dtype=np.int64)
        self._series: dict[tuple[str, ...], tuple[list[int], list[int]]] = {}
        """labels -> (per-bucket counts, last one +Inf; [sum in ns])"""
        self._lock = threading.Lock()

    def _get(self, labels: tuple[str, ...]) -> tuple[list[int], list[int]]:
        series = self._series.get(labels)
        if series is None:
            series = ([0] * (len(self._bounds_ns) + 1), [0])
            self._series = {**self._series, labels: series}  # readers never see it resized
        return series

    def observe(self, labels: tuple[str, ...], value_ns: int) -> None:
        """One value, from one writer thread (the API's event loop): no lock on this path,
        which runs per request; a concurrent snapshot may miss the value being added."""
        series = self._series.get(labels) or self._get(labels)
        series[0][bisect.bisect_left(self._bounds_ns, value_ns)] += 1
        series[1][0] += value_ns

    def observe_many(self, labels: tuple[str, ...], values_ns: npt.NDArray[np.int64]) -> None:
        """Count a whole array at once: one ``searchsorted``, one ``bincount``."""
        if values_ns.size == 0:
            return
        index = np.searchsorted(self._bounds_array, values_ns, side="left")
        added = np.bincount(index, minlength=len(self._bounds_ns) + 1).tolist()
        value_sum = int(values_ns.sum(dtype=np.int64))
        with self._lock:
            counts, total = self._get(labels)
            for i, n in enumerate(added):
                counts[i] += n
            total[0] += value_sum

    def snapshot(self) -> dict[tuple[str, ...], tuple[list[int], int]]:
        """labels -> (per-bucket counts, sum in ns), copied under the lock."""
        with self._lock:
            return {k: (list(c), t[0]) for k, (c, t) in self._series.items()}

    def clear(self) -> None:
        with self._lock:
            self._series.clear()

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (counts, total_ns) in sorted(self.snapshot().items()):
            cumulative = np.cumsum(counts).tolist()
            buckets = [(_le(b), float(n)) for b, n in zip(self._bounds_s, cumulative, strict=False)]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, total_ns / NS)
        yield family


def _le(bound: float) -> str:
    return repr(float(bound))


FEED_LATENCY = BucketHistogram(
    "tickpipe_feed_latency_seconds",
    "Feed latency of accepted events: ts_recv - ts_event (clock skew can make it negative; "
    "those count in the first bucket)",
    ("source",),
    FEED_LATENCY_BUCKETS_S,
)


def record_feed_latency(source: str, latency_ns: npt.NDArray[np.int64]) -> None:
    """Add one delivery's feed latencies (ts_recv - ts_event, int64 ns) to the histogram.
    Cost: one vectorised pass over the array (no Python loop over events)."""
    FEED_LATENCY.observe_many((source,), np.asarray(latency_ns, dtype=np.int64))


class ApiMetrics:
    """API request latency per route template, responses per status, recent percentiles.

    One per app; ``observe`` runs on the request path, so it is a bisect, two dict updates
    and a ring write."""

    def __init__(self, recent: int = RECENT_REQUESTS) -> None:
        self.latency = BucketHistogram(
            "tickpipe_api_request_duration_seconds",
            "API request duration per route template (HTTP; WebSocket sessions excluded)",
            ("route", "method"),
            API_LATENCY_BUCKETS_S,
        )
        self.responses: dict[tuple[str, str, int], int] = {}
        """(route, method, status) -> responses"""
        self.websockets: Counter[str] = Counter()
        self.requests = 0
        self.errors = 0
        """responses with a 5xx status"""
        self._recent = [0] * recent
        self._next = 0

    def observe(self, route: str, method: str, status: int, duration_ns: int) -> None:
        self.latency.observe((route, method), duration_ns)
        key = (route, method, status)
        self.responses[key] = self.responses.get(key, 0) + 1
        self.requests += 1
        if status >= 500:
            self.errors += 1
        self._recent[self._next % len(self._recent)] = duration_ns
        self._next += 1

    def websocket(self, route: str) -> None:
        self.websockets[route] += 1

    def summary(self) -> dict[str, Any]:
        """Totals and percentiles of the most recent requests, for the dashboard."""
        window = np.asarray(self._recent[: min(self._next, len(self._recent))], dtype=np.int64)
        p50 = p99 = None
        if window.size:
            p50, p99 = (round(float(v) / 1e6, 3) for v in np.percentile(window, [50, 99]))
        return {
            "requests": self.requests,
            "errors_5xx": self.errors,
            "websocket_sessions": sum(self.websockets.values()),
            "recent": {"requests": int(window.size), "p50_ms": p50, "p99_ms": p99},
        }

    def collect(self) -> Iterator[Metric]:
        yield from self.latency.collect()
        responses = CounterMetricFamily(
            "tickpipe_api_responses", "API responses", labels=("route", "method", "status")
        )
        for (route, method, status), n in sorted(self.responses.items()):
            responses.add_metric([route, method, str(status)], n)
        yield responses
        sessions = CounterMetricFamily(
            "tickpipe_api_websocket_sessions", "WebSocket sessions opened", labels=("route",)
        )
        for route, n in sorted(self.websockets.items()):
            sessions.add_metric([route], n)
        yield sessions


def journal_backlog(journal_dir: Path, now_ns: int | None = None) -> dict[str, Any]:
    """Segments still in the journal and the flush lag: how long ago the oldest of them was
    opened, i.e. the age of the oldest accepted event not yet in the lake. In a healthy
    pipeline it stays under the segment length plus a flush tick; it grows when flushing
    stalls. A directory listing, so call it off the event loop."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    open_segments = closed = 0
    oldest: int | None = None
    if journal_dir.is_dir():
        for dataset in journal_dir.iterdir():
            if not dataset.is_dir():
                continue
            for path in dataset.iterdir():
                if path.suffix == layout.OPEN_SUFFIX:
                    open_segments += 1
                elif path.suffix == layout.CLOSED_SUFFIX:
                    closed += 1
                else:
                    continue
                opened = _opened_ns(path)
                if opened is not None and (oldest is None or opened < oldest):
                    oldest = opened
    lag = None if oldest is None else round(max(now_ns - oldest, 0) / NS, 3)
    return {"open_segments": open_segments, "closed_segments": closed, "flush_lag_s": lag}


def _opened_ns(path: Path) -> int | None:
    """The open time a segment's name starts with (``layout.segment_name``)."""
    head = layout.segment_of(path).split("-", 1)[0]
    return int(head) if head.isdigit() else None
