"""Redis down (issue 12, finding 3): the routes that need it answer 503
``hot_store_unavailable`` with ``Retry-After`` instead of 500, the log says so a bounded
number of times, ``bus_published`` counts only what reached Redis, everything else goes
on, and service comes back by itself when Redis does."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tickpipe.api.app import create_app
from tickpipe.config import Settings
from tickpipe.pipeline import Pipeline, api_context

from ..conftest import IN_CI, free_port

pytestmark = pytest.mark.redis


class RedisServer:
    """A private redis-server this test may kill and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if IN_CI:
                pytest.fail("redis-server is not on PATH")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(
            [self.binary, *args],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # redis-server has no readiness signal to await
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


@pytest.fixture
async def pipeline(tmp_path: Path, redis: RedisServer) -> AsyncIterator[Pipeline]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        redis_url=redis.url,
        simulator_seed=4,
        simulator_rate=2000,
        simulator_batch_ms=50,
        journal_segment_seconds=0.5,
    )
    pipeline = Pipeline(settings)
    stop = asyncio.Event()
    run = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    yield pipeline
    stop.set()
    await asyncio.wait_for(run, 60)


async def until(predicate: object, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_redis_down_is_503_with_retry_after_and_the_rest_goes_on(
    pipeline: Pipeline, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = api_context(pipeline)
    token, _ = ctx.keys.create("reader", ["read"], 10_000)
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as api:
        await until(lambda: pipeline.bus.published > 0)
        ok = await api.get("/api/v1/ticks/realtime?symbols=SPY")
        assert ok.status_code == 200 and ok.json()["data"]

        redis.kill()
        await until(lambda: not pipeline.status()["sinks"]["bus"]["healthy"])
        published = pipeline.bus.published
        accepted = pipeline.status()["accepted_total"]
        with caplog.at_level(logging.WARNING):
            answers = []
            for _ in range(20):
                for path in (
                    "/api/v1/ticks/realtime?symbols=SPY",
                    "/api/v1/quotes/latest?symbols=SPY",
                ):
                    response = await api.get(path)
                    answers.append(
                        (
                            response.status_code,
                            response.json()["error"]["code"],
                            response.headers.get("retry-after"),
                        )
                    )
            assert set(answers) == {(503, "hot_store_unavailable", "1")}
            status = await api.get("/api/v1/status")
            health = (await api.get("/api/v1/health")).json()
            assert status.status_code == 200 and health["status"] == "degraded"
            assert any(r.startswith("hot_store failing") for r in health["reasons"]), health
            now = time.time_ns()
            history = await api.get(
                f"/api/v1/ticks/historical?symbols=SPY&start_time={now - 60 * 10**9}&end_time={now}"
            )
            assert history.status_code == 200 and history.json()["data"]  # journal and lake
            await until(lambda: pipeline.status()["accepted_total"] > accepted + 1000)
        assert pipeline.bus.published == published  # nothing reached Redis: nothing counted
        assert pipeline.bus.publish_failures > 0
        mine = [
            r
            for r in caplog.records
            if r.name in ("tickpipe.store.hot_redis", "tickpipe.store.bus", "tickpipe.api.errors")
        ]
        assert len(mine) <= 2, [r.getMessage() for r in mine]  # 40 refusals, not 40 lines
        assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"

        redis.start()  # same port: redis-py reconnects on the next command

        async def answers_again() -> None:
            while (await api.get("/api/v1/ticks/realtime?symbols=SPY")).status_code != 200:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(answers_again(), 10)
        await until(lambda: pipeline.bus.published > published)
