"""A real pipeline with the tastytrade source, pointed at the local fake."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pyarrow as pa
import pytest
from pydantic import SecretStr

from tickpipe.api.app import create_app
from tickpipe.clock import SystemClock
from tickpipe.columnar import Grouped
from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.pipeline import Pipeline, api_context
from tickpipe.sources.base import SourceState
from tickpipe.sources.tastytrade import build
from tickpipe.sources.tastytrade.feed import TastytradeFeed

from ...fakes.dxlink import FakeTastytrade


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tasty_settings(settings: Settings, fake: FakeTastytrade, **update: Any) -> Settings:
    values: dict[str, Any] = {
        "tastytrade_enabled": True,
        "tastytrade_client_secret": SecretStr(fake.client_secret),
        "tastytrade_refresh_token": SecretStr(fake.refresh_token),
        "tastytrade_api_base_url": fake.rest_url,
        "tastytrade_symbols": ["SPY"],
        "simulator": "false",
        "supervisor_backoff_initial_s": 0.05,
        "supervisor_backoff_max_s": 0.2,
    }
    values.update(update)
    return settings.model_copy(update=values)


class Watch:
    """A hub listener: every accepted row, by kind, and a way to await what a test expects."""

    def __init__(self) -> None:
        self.rows: dict[Kind, list[dict[str, Any]]] = {kind: [] for kind in Kind}
        self._changed = asyncio.Condition()

    async def __call__(self, kind: Kind, grouped: Grouped) -> None:
        self.rows[kind] += grouped.batch.to_pylist()
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)


@dataclasses.dataclass
class Running:
    pipeline: Pipeline
    feed: TastytradeFeed
    watch: Watch
    client: httpx.AsyncClient
    token: str

    @property
    def state(self) -> SourceState:
        return self.pipeline.supervisor.states["tastytrade"]

    def status(self) -> dict[str, Any]:
        (source,) = [s for s in self.pipeline.status()["sources"] if s["name"] == "tastytrade"]
        return dict(source)

    async def get(self, path: str) -> Any:
        response = await self.client.get(path, headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 200, response.text
        return response.json()

    async def lake(self, dataset: str) -> pa.Table:
        """Everything of one dataset, after flushing the journal to Parquet."""
        await self.pipeline.hub.fanned_out()
        await self.pipeline.flush_once(force=True)
        return self.pipeline.query.events(dataset, None, 0, 2**62)

    async def eventually(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """For what no event announces (quarantine and gap counters): poll with a deadline."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(settings: Settings) -> AsyncIterator[Start]:
    """``await start(fake, **settings)``: the pipeline running the tastytrade source."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None], httpx.AsyncClient]] = []

    async def _start(fake: FakeTastytrade, **update: Any) -> Running:
        configured = tasty_settings(settings, fake, **update)
        (feed,) = build(configured, SystemClock())
        assert isinstance(feed, TastytradeFeed)
        pipeline = Pipeline(configured, sources=[feed])
        watch = Watch()
        pipeline.hub.add_listener("test", watch)
        ctx = api_context(pipeline)
        stop = asyncio.Event()
        task = asyncio.create_task(pipeline.run(stop))
        await pipeline.ready.wait()
        token, _ = ctx.keys.create("reader", ["read"], 1000)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
        )
        stops.append((stop, task, client))
        return Running(pipeline, feed, watch, client, token)

    yield _start
    for stop, task, client in stops:
        stop.set()
        await asyncio.wait_for(task, 30)
        await client.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTastytrade]:
    async with FakeTastytrade() as server:
        yield server
