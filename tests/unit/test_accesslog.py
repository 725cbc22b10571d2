"""The access log: one JSON line per request, written off the request path, bounded,
rotated, never holding a secret; and the bulk-counted histograms behind /metrics."""

from __future__ import annotations

import bisect
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tickpipe.api import observe
from tickpipe.api.observe import AccessLog, ObserveMiddleware, Observer, count_rows
from tickpipe.metrics import (
    FEED_LATENCY,
    NS,
    ApiMetrics,
    BucketHistogram,
    journal_backlog,
    record_feed_latency,
)
from tickpipe.store import layout
from tickpipe.store.keystore import KeyStore


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def entry(status: int = 200, body: bytes | None = None, **notes: object) -> observe._Entry:
    headers = [(b"host", b"x")]
    return (time.time_ns(), "GET", "/r", "/r", status, 1_500_000, headers, b"", body, 0, notes)


@pytest.fixture
def app_and_log(tmp_path: Path) -> tuple[FastAPI, AccessLog, str]:
    keys = KeyStore(tmp_path / "keys.sqlite")
    token, _ = keys.create("backtester", ["read"], 100)
    app = FastAPI()
    access_log = AccessLog("file", tmp_path / "logs" / "access.log", keys=keys)
    observer = Observer(ApiMetrics(), access_log)
    app.state.observer = observer
    app.add_middleware(ObserveMiddleware, observer=observer)

    @app.get("/items/{item}")
    async def item(request: Request, item: str) -> dict[str, object]:
        observe.note(request, cache="hit")
        return {"data": [{"id": item, "n": 1}, {"id": item, "n": 2}, {"id": item, "n": 3}]}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("broken route")

    return app, access_log, token


async def test_each_request_becomes_a_json_line_with_key_name_route_rows_and_cache(
    app_and_log: tuple[FastAPI, AccessLog, str], tmp_path: Path
) -> None:
    app, access_log, token = app_and_log
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        response = await c.get("/items/SPY?token=zzz", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert (await c.get("/nowhere")).status_code == 404
    assert access_log.pending == 2  # queued, not yet written: the request path only appends
    assert access_log.flush() == 2
    first, second = lines(tmp_path / "logs" / "access.log")
    assert first["key"] == "backtester"
    assert first["route"] == "/items/{item}" and first["path"] == "/items/SPY"
    assert (first["status"], first["rows"], first["cache"], first["method"]) == (
        200,
        3,
        "hit",
        "GET",
    )
    assert first["bytes"] == len(response.content)
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0
    assert first["time"].endswith("Z")
    assert (second["route"], second["status"], second["key"]) == ("<unmatched>", 404, None)
    text = (tmp_path / "logs" / "access.log").read_text()
    assert token not in text and token.split("_")[2] not in text and "zzz" not in text


async def test_request_metrics_count_per_route_template_and_status(
    app_and_log: tuple[FastAPI, AccessLog, str],
) -> None:
    app, _, _ = app_and_log
    metrics = app.state.observer.metrics
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for symbol in ("SPY", "QQQ", "IWM"):
            await c.get(f"/items/{symbol}")
        assert (await c.get("/boom")).status_code == 500
    assert metrics.responses[("/items/{item}", "GET", 200)] == 3
    assert metrics.responses[("/boom", "GET", 500)] == 1
    assert metrics.summary()["requests"] == 4 and metrics.summary()["errors_5xx"] == 1
    counts, _ = metrics.latency.snapshot()[("/items/{item}", "GET")]
    assert sum(counts) == 3


def test_a_rejected_key_is_logged_without_a_name(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.sqlite")
    token, _ = keys.create("reader", ["read"], 100)
    log = AccessLog("file", tmp_path / "a.log", keys=keys)
    auth = [(b"authorization", f"Bearer {token}".encode())]
    ok = (time.time_ns(), "GET", "/r", "/r", 200, 1, auth, b"", None, 0, {})
    refused = (time.time_ns(), "GET", "/r", "/r", 401, 1, auth, b"", None, 0, {})
    websocket = (
        time.time_ns(),
        "WS",
        "/s",
        "/s",
        101,
        1,
        [],
        f"token={token}".encode(),
        None,
        0,
        {},
    )
    for item in (ok, refused, websocket):
        log.record(item)
    log.flush()
    assert [line["key"] for line in lines(tmp_path / "a.log")] == ["reader", None, "reader"]


def test_the_queue_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    log = AccessLog("file", tmp_path / "a.log", queue_lines=3)
    for _ in range(5):
        log.record(entry())
    assert (log.pending, log.dropped) == (3, 2)
    log.flush()
    assert log.written == 3 and len(lines(tmp_path / "a.log")) == 3


def test_the_file_rotates_and_every_line_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = AccessLog("file", path, max_bytes=4096, backups=2)
    for batch in range(6):
        for _ in range(20):
            log.record(entry(status=200 + batch))
        log.flush()
    files = sorted(tmp_path.glob("a.log*"))
    assert [f.name for f in files] == ["a.log", "a.log.1", "a.log.2"]
    for f in files:
        assert f.stat().st_size <= 4096
        assert all(line["route"] == "/r" for line in lines(f))
    assert lines(path)[-1]["status"] == 205  # the newest batch is in the live file


def test_stdout_and_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = AccessLog("stdout")
    out.record(entry(status=204))
    out.flush()
    printed = capsys.readouterr().out.splitlines()
    assert [orjson.loads(line)["status"] for line in printed] == [204]
    off = AccessLog("off")
    assert not off.enabled
    with pytest.raises(ValueError, match="file, stdout or off"):
        AccessLog("syslog")


def test_the_log_thread_writes_without_being_asked(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = AccessLog("file", path)
    log.record(entry())
    deadline = time.monotonic() + 5
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # the thread offers no event to wait on
    assert len(lines(path)) == 1
    log.close()


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        (b'{"data":[]}', 0),
        (b'{"data":[{"a":1}]}', 1),
        (b'{"data":[{"a":1,"s":"x},{\\"y"},{"a":2},{"a":3}],"next_cursor":null}', 3),
        (b'{"spot":1.0,"strikes":{}}', None),
    ],
)
def test_rows_are_counted_from_data_bodies(body: bytes, rows: int | None) -> None:
    assert count_rows(body) == rows
    if rows is not None:
        assert rows == len(orjson.loads(body)["data"])


def test_bulk_histogram_counts_as_one_observation_per_value() -> None:
    bounds = (0.001, 0.01, 0.1, 1.0)
    bulk = BucketHistogram("h_seconds", "h", ("source",), bounds)
    rng = np.random.default_rng(3)
    values = (rng.exponential(0.02, 5000) * NS).astype(np.int64)
    values[:4] = [1_000_000, 10_000_000, -5, 2 * NS]  # on a bound (le: inclusive), below, above
    bulk.observe_many(("feed",), values[:3000])
    bulk.observe_many(("feed",), values[3000:])
    counts, total = bulk.snapshot()[("feed",)]
    bounds_ns = [int(b * NS) for b in bounds]
    expected = [0] * 5
    for v in values.tolist():
        expected[bisect.bisect_left(bounds_ns, v)] += 1
    assert counts == expected and total == int(values.sum())
    one_by_one = BucketHistogram("h_seconds", "h", ("source",), bounds)
    for v in values.tolist():
        one_by_one.observe(("feed",), v)
    assert one_by_one.snapshot() == bulk.snapshot()


def test_feed_latency_reaches_the_prometheus_text() -> None:
    FEED_LATENCY.clear()
    record_feed_latency("unit-feed", np.array([200_000, 3_000_000, 40_000_000_000], np.int64))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FEED_LATENCY)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    samples = {
        (s.name, s.labels.get("le")): s.value
        for s in families["tickpipe_feed_latency_seconds"].samples
        if s.labels["source"] == "unit-feed"
    }
    assert samples[("tickpipe_feed_latency_seconds_bucket", "0.0005")] == 1
    assert samples[("tickpipe_feed_latency_seconds_bucket", "0.005")] == 2
    assert samples[("tickpipe_feed_latency_seconds_bucket", "30.0")] == 2
    assert samples[("tickpipe_feed_latency_seconds_bucket", "+Inf")] == 3
    assert samples[("tickpipe_feed_latency_seconds_count", None)] == 3
    assert samples[("tickpipe_feed_latency_seconds_sum", None)] == pytest.approx(40.0032)
    FEED_LATENCY.clear()


def test_flush_lag_is_the_age_of_the_oldest_segment_still_in_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    now = 1_800_000_000 * NS
    for dataset, opened, closed in (("trade", now - 25 * NS, True), ("quote", now - 4 * NS, False)):
        path = layout.journal_path(
            journal, dataset, layout.segment_name(opened, "w", 1), closed=closed
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    assert journal_backlog(journal, now) == {
        "open_segments": 1,
        "closed_segments": 1,
        "flush_lag_s": 25.0,
    }
    assert journal_backlog(tmp_path / "none", now)["flush_lag_s"] is None


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (ENOSPC on write)")
def test_a_write_that_fails_is_counted_and_said_once_never_dumped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    access_log = AccessLog("file", tmp_path / "access.log")
    handler = access_log._handler
    assert handler is not None
    handler._open = lambda: open("/dev/full", "a", encoding="utf-8")  # type: ignore[method-assign]  # noqa: SIM115 - the handler closes it
    with caplog.at_level("INFO", logger="tickpipe.api.observe"):
        for _ in range(5):  # a full disk: every write fails
            access_log.record(entry())
            access_log.flush()
        assert (access_log.errors, access_log.dropped, access_log.written) == (5, 5, 0)
        del handler._open  # space again
        access_log.record(entry())
        access_log.flush()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert "cannot be written ([Errno 28] No space left on device)" in said[0]
    assert "written again after 5 failed writes (5 lines lost)" in said[1]
    assert "Logging error" not in capsys.readouterr().err
    assert len(lines(tmp_path / "access.log")) == access_log.written == 1
    access_log.close()
