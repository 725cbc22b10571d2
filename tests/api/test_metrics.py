"""/metrics: what a Prometheus scrape shows matches what the pipeline was given."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from tickpipe.api.routes.metrics import StatusCollector
from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.events import Kind, Quote, Trade, to_batch

from .conftest import Api

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(api: Api) -> Samples:
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def feed_with_one_crossed_quote_and_one_gap(api: Api) -> None:
    t0 = SystemClock().now_ns() - 120 * NS_PER_SECOND
    trades = [Trade(t0 + i, t0 + i + 5, "SPY", 600 + i / 100, 10, "feed", i + 1) for i in range(10)]
    quotes = [
        Quote(t0, t0, "SPY", 600.0, 1, 600.01, 1, "feed", 1),
        Quote(t0 + 1, t0 + 1, "SPY", 600.5, 1, 600.01, 1, "feed", 2),  # crossed
        Quote(t0 + 90 * NS_PER_SECOND, t0, "SPY", 600.0, 1, 600.01, 1, "feed", 3),  # 90 s gap
    ]
    await api.feed(
        {Kind.TRADE: to_batch(Kind.TRADE, trades), Kind.QUOTE: to_batch(Kind.QUOTE, quotes)}
    )


async def test_accepted_quarantined_and_gaps_per_source_and_rule(api: Api) -> None:
    await feed_with_one_crossed_quote_and_one_gap(api)
    samples = await scrape(api)
    assert value(samples, "tickpipe_events_accepted_total", kind="trade") == 10
    assert value(samples, "tickpipe_events_accepted_total", kind="quote") == 2
    crossed = value(
        samples, "tickpipe_events_quarantined_total", source="feed", kind="quote", rule="crossed"
    )
    assert crossed == 1
    assert value(samples, "tickpipe_gaps_total", source="feed", gap="time") == 1
    assert value(samples, "tickpipe_status_available") == 1


async def test_hot_store_journal_and_lake_sizes(api: Api) -> None:
    await feed_with_one_crossed_quote_and_one_gap(api)
    samples = await scrape(api)
    assert value(samples, "tickpipe_hot_store_up", kind="memory") == 1
    assert value(samples, "tickpipe_hot_store_symbols", kind="trade") == 1
    assert value(samples, "tickpipe_hot_store_roundtrip_seconds") >= 0
    journal = api.pipeline.settings.journal_dir
    assert value(samples, "tickpipe_journal_segments", state="open") == len(
        list(journal.glob("*/*.open"))
    )
    # 12 accepted events + the quarantined quote + the gap record, none flushed yet
    assert value(samples, "tickpipe_journal_open_rows") == 12 + 1 + 1
    assert 0 <= value(samples, "tickpipe_flush_lag_seconds") < 60

    await api.pipeline.flush_once(force=True)
    samples = await scrape(api)
    lake = api.pipeline.settings.lake_dir
    on_disk = sum(p.stat().st_size for p in lake.rglob("*.parquet"))
    assert on_disk > 0 and value(samples, "tickpipe_lake_bytes") == on_disk
    assert value(samples, "tickpipe_journal_segments", state="open") == 0


async def test_api_latency_histogram_per_route_template(api: Api) -> None:
    for _ in range(3):
        ok = await api.client.get("/api/v1/ticks/realtime?symbols=SPY", headers=api.auth())
        assert ok.status_code == 200
    assert (await api.client.get("/api/v1/ticks/realtime?symbols=SPY")).status_code == 401
    assert (await api.client.get("/api/v1/gex/QQQ", headers=api.auth())).status_code == 404
    samples = await scrape(api)
    route = "/api/v1/ticks/realtime"
    count = value(samples, "tickpipe_api_request_duration_seconds_count", route=route, method="GET")
    assert count == 4
    buckets = value(
        samples,
        "tickpipe_api_request_duration_seconds_bucket",
        route=route,
        method="GET",
        le="+Inf",
    )
    assert buckets == 4
    assert (
        value(samples, "tickpipe_api_responses_total", route=route, method="GET", status="200") == 3
    )
    assert (
        value(samples, "tickpipe_api_responses_total", route=route, method="GET", status="401") == 1
    )
    # the path's symbol never becomes a label: the route template does
    assert (
        value(
            samples,
            "tickpipe_api_responses_total",
            route="/api/v1/gex/{symbol}",
            method="GET",
            status="404",
        )
        == 1
    )


async def test_the_process_and_access_log_are_exposed(api: Api) -> None:
    await api.client.get("/api/v1/health")
    deadline = time.monotonic() + 5
    while True:  # the log thread drains every 0.25 s and offers nothing to await
        samples = await scrape(api)
        if value(samples, "tickpipe_access_log_lines_total") >= 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert value(samples, "tickpipe_access_log_lines_total") >= 1
    assert value(samples, "tickpipe_access_log_dropped_total") == 0
    assert value(samples, "process_resident_memory_bytes") > 0


def test_a_status_with_new_or_missing_keys_still_scrapes() -> None:
    now = time.time_ns()
    odd = {
        "uptime_s": 5,
        "sources": [
            {"name": "newfeed", "status": "paused", "something_new": {"x": 1}},
            {"no_name": True},
        ],
        "services": {"journal": {"open_rows": "n/a"}},
        "quality": {"rejected": {"newfeed": {"trade.duplicate": 2}}},
        "a_future_section": [1, 2, 3],
    }
    samples = parse_collected(StatusCollector(odd, {}, now))
    assert value(samples, "tickpipe_source_state", source="newfeed", state="paused") == 1
    assert value(samples, "tickpipe_source_state", source="newfeed", state="running") == 0
    dup = value(
        samples,
        "tickpipe_events_quarantined_total",
        source="newfeed",
        kind="trade",
        rule="duplicate",
    )
    assert dup == 2
    assert ("tickpipe_journal_open_rows", frozenset()) not in samples

    api_only = {"role": "api", "ingest": None, "bus_subscribers": 0}
    samples = parse_collected(StatusCollector(api_only, {}, now))
    assert value(samples, "tickpipe_status_available") == 0


def parse_collected(collector: StatusCollector) -> Samples:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return parse(generate_latest(registry).decode())


async def test_every_metric_the_grafana_dashboard_queries_is_exposed(api: Api) -> None:
    import json
    import re
    from pathlib import Path

    import numpy as np

    from tickpipe.metrics import record_feed_latency

    await feed_with_one_crossed_quote_and_one_gap(api)
    record_feed_latency("feed", np.array([1_000_000], np.int64))
    await api.client.get("/api/v1/health")
    text = (await api.client.get("/metrics")).text
    families = list(text_string_to_metric_families(text))
    # a family is declared even while it has no samples (no feed has reported latency yet)
    exposed = {f.name for f in families} | {s.name for f in families for s in f.samples}
    exposed |= {f"{f.name}_total" for f in families if f.type == "counter"}
    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\btickpipe_[a-z_]+", target["expr"])
    }
    assert len(queried) > 15
    assert queried - exposed == set()
