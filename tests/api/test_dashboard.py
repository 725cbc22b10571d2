"""The dashboard's server side: the page and everything it loads come from the package,
its JSON helpers, the admin stop route, and the access log of real API requests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tickpipe.api.app import create_app
from tickpipe.api.routes.dashboard import assets
from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.events import Kind, Quote, Trade, to_batch
from tickpipe.pipeline import Pipeline, api_context
from tickpipe.sources.simulator import Simulator

from .conftest import Api

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def referenced_paths(text: str) -> set[str]:
    """Every URL a page or script asks the browser to load."""
    html = re.findall(r'(?:src|href)="([^"#]+)"', text)
    imports = re.findall(r'from "(\./[^"]+)"', text)
    workers = re.findall(r'new Worker\("([^"]+)"\)', text)
    return {*html, *("/web/" + i[2:] for i in imports), *workers}


async def test_root_redirects_to_the_page(api: Api) -> None:
    response = await api.client.get("/")
    assert response.status_code == 307
    assert response.headers["location"] == "/status.html"


async def test_the_page_and_every_file_it_loads_come_from_this_server(api: Api) -> None:
    page = await api.client.get("/status.html")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    to_load = referenced_paths(page.text)
    seen: set[str] = set()
    while to_load:
        path = to_load.pop()
        seen.add(path)
        if not path.startswith("/web/"):
            assert path in {"/docs", "/metrics"}  # footer links to the API's own pages
            continue
        response = await api.client.get(path)
        assert response.status_code == 200, path
        suffix = Path(path).suffix
        assert response.headers["content-type"].startswith(CONTENT_TYPES[suffix])
        to_load |= referenced_paths(response.text) - seen
    assert {"/web/app.js", "/web/charts.js", "/web/stream-worker.js", "/web/style.css"} <= seen
    for name, (data, _, _) in assets().items():
        text = re.sub(rb'xmlns="[^"]+"', b"", data)  # a namespace name, never fetched
        outside = re.findall(rb"(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+", text)
        assert outside == [], f"{name} refers to another host: {outside}"


async def test_assets_revalidate_by_etag_and_unknown_files_are_404(api: Api) -> None:
    first = await api.client.get("/web/app.js")
    again = await api.client.get("/web/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for path in ("/web/nothing.js", "/web/..%2F..%2Fconfig.py", "/web/__init__.py"):
        missing = await api.client.get(path)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


async def test_services_are_public_and_measured_now(api: Api) -> None:
    await api.client.get("/api/v1/health")
    facts = (await api.client.get("/api/v1/dashboard/services")).json()
    hot = facts["hot_store"]
    assert (hot["kind"], hot["reachable"]) == ("memory", True) and hot["rtt_ms"] >= 0
    assert facts["journal"]["flush_lag_s"] is None  # nothing accepted yet
    assert facts["api"]["requests"] >= 1 and facts["api"]["recent"]["p50_ms"] > 0
    assert facts["access_log"]["mode"] == "file"


async def test_symbols_need_a_read_key_and_list_what_the_hot_store_holds(api: Api) -> None:
    t0 = SystemClock().now_ns() - NS_PER_SECOND
    await api.feed(
        {
            Kind.TRADE: to_batch(Kind.TRADE, [Trade(t0, t0, "SPY", 600.0, 1, "feed", 1)]),
            Kind.QUOTE: to_batch(Kind.QUOTE, [Quote(t0, t0, "QQQ", 520, 1, 520.01, 1, "feed", 1)]),
        }
    )
    assert (await api.client.get("/api/v1/dashboard/symbols")).status_code == 401
    listed = await api.client.get("/api/v1/dashboard/symbols", headers=api.auth())
    assert listed.json() == {"symbols": ["QQQ", "SPY"]}


async def test_stop_needs_admin_and_a_known_source(api: Api) -> None:
    stop = "/api/v1/admin/sources/simulator/stop"
    assert (await api.client.post(stop, headers=api.auth())).status_code == 403
    unknown = await api.client.post(stop, headers=api.auth(api.admin))
    assert unknown.status_code == 404  # the default context stops nothing
    asked: list[str] = []
    api.ctx.stop_source = lambda name: asked.append(name) or name == "simulator"
    answer = await api.client.post(stop, headers=api.auth(api.admin))
    assert (answer.status_code, answer.json(), asked) == (
        200,
        {"stopping": "simulator"},
        ["simulator"],
    )


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[tuple[Pipeline, httpx.AsyncClient, str]]:
    """A pipeline with a slow real-time simulator, its API wired to the supervisor."""
    settings = settings.model_copy(update={"simulator_realtime": True, "simulator_rate": 200.0})
    pipeline = Pipeline(settings, sources=[Simulator(settings, SystemClock())])
    ctx = api_context(pipeline)
    ctx.stop_source = pipeline.supervisor.stop
    stop = asyncio.Event()
    run = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    admin, _ = ctx.keys.create("admin", ["read", "admin"], 1000)
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield pipeline, client, admin
    stop.set()
    await asyncio.wait_for(run, 30)


async def wait_status(client: httpx.AsyncClient, source: str, status: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the status is polled, as the page does
        rows = (await client.get("/api/v1/status")).json()["sources"]
        row = next(r for r in rows if r["name"] == source)
        if row["status"] == status:
            return dict(row)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{source} never became {status}")


async def test_stop_then_restart_a_running_feed(
    live: tuple[Pipeline, httpx.AsyncClient, str],
) -> None:
    _, client, admin = live
    auth = {"Authorization": f"Bearer {admin}"}
    await wait_status(client, "simulator", "running")
    stopped = await client.post("/api/v1/admin/sources/simulator/stop", headers=auth)
    assert stopped.status_code == 200
    row = await wait_status(client, "simulator", "stopped")
    events = row["events"]
    await asyncio.sleep(0.3)  # a stopped feed must stay stopped: nothing to await but time
    assert (await wait_status(client, "simulator", "stopped"))["events"] == events
    restarted = await client.post("/api/v1/admin/sources/simulator/restart", headers=auth)
    assert restarted.status_code == 200
    await wait_status(client, "simulator", "running")


async def test_access_log_of_real_requests(api: Api) -> None:
    t0 = SystemClock().now_ns() - NS_PER_SECOND
    trades = [Trade(t0 + i, t0 + i, "SPY", 600.0 + i, 1, "feed", i + 1) for i in range(7)]
    await api.feed({Kind.TRADE: to_batch(Kind.TRADE, trades)})
    response = await api.client.get(
        "/api/v1/ticks/realtime?symbols=SPY&types=trade&limit=5", headers=api.auth()
    )
    returned = len(response.json()["data"])
    path = api.ctx.settings.data_dir / "logs" / "access.log"
    deadline = time.monotonic() + 5
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline and not any(
        line["route"] == "/api/v1/ticks/realtime" for line in lines
    ):  # written by the log thread: nothing to await
        await asyncio.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            lines = [orjson.loads(x) for x in path.read_text().splitlines()]
    line = next(x for x in lines if x["route"] == "/api/v1/ticks/realtime")
    assert (line["key"], line["status"], line["rows"]) == ("reader", 200, returned)
    assert returned == 5
    assert api.read not in path.read_text()
