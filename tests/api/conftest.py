"""An API over a real pipeline (no live source): events are fed in by the tests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pyarrow as pa
import pytest
import uvicorn

from tickpipe.api.app import create_app
from tickpipe.api.context import ApiContext
from tickpipe.api.protocol import HttpProtocol
from tickpipe.cli import _Server
from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.pipeline import Pipeline, api_context

from ..conftest import free_port


@dataclasses.dataclass
class Api:
    pipeline: Pipeline
    ctx: ApiContext
    client: httpx.AsyncClient
    read: str
    stream: str
    admin: str
    base_url: str = ""

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.read}"}

    async def feed(self, batches: dict[Kind, pa.RecordBatch], source: str = "feed") -> None:
        """Check and commit one delivery now, as the pipeline would."""
        await self.pipeline.hub.accept(self.pipeline.quality.process(source, batches))


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    pipeline = Pipeline(settings, sources=[])
    ctx = api_context(pipeline)
    app = create_app(ctx)
    stop = asyncio.Event()
    run = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    read, _ = ctx.keys.create("reader", ["read"], 1000)
    stream, _ = ctx.keys.create("streamer", ["read", "stream"], 1000)
    admin, _ = ctx.keys.create("admin", ["read", "stream", "admin"], 1000)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(pipeline, ctx, client, read, stream, admin)
    stop.set()
    await asyncio.wait_for(run, 30)


@pytest.fixture
async def served(api: Api) -> AsyncIterator[Api]:
    """The same API on a real loopback port (for WebSockets)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(api.ctx),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        http=HttpProtocol,  # as the CLI serves it: head limits, parser refusals in JSON
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"
    api.base_url = f"http://127.0.0.1:{port}"
    yield api
    server.should_exit = True
    await asyncio.wait_for(task, 10)
