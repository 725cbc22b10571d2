"""The API without a pipeline: ``tickpipe run --role api`` processes.

They share the data dir (journal + lake, read-only) and Redis (hot store, bus, the ingest
process's status) with one ingest process, so several of them, on one machine or many
with shared storage, can serve while one process writes.

Per worker, Redis sees at most ``POOL_SIZE + 1`` connections: one bounded pool for
commands (a pub/sub connection taken from it only while a WebSocket client of the worker
wants live events) and the hot store's tracking connection. Real-time answers come from
the worker's mirror of the streams its clients ask for (``store/hot_mirror.py``), live
events from ``RedisRelay`` (``store/bus.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from tickpipe.api.context import ApiContext, GexAnswer
from tickpipe.config import Settings
from tickpipe.errors import ConfigError, QueryError
from tickpipe.store import keys
from tickpipe.store.bus import Bus, RedisRelay
from tickpipe.store.hot_mirror import MirroredHotStore
from tickpipe.store.hot_redis import RedisHotStore
from tickpipe.store.keystore import KeyStore
from tickpipe.store.query import Query
from tickpipe.store.redis_conn import raise_if_cancelled, redis_client

log = logging.getLogger(__name__)

POOL_SIZE = 8
"""Redis connections per worker for commands (and the pub/sub one while it is needed);
a request that finds them all busy waits up to ``REDIS_TIMEOUT_S`` for one"""
RESTART_CAP_S = 2.0
"""longest wait before a failed background job (relay, tracking, status) starts again"""


async def forever(what: str, job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job`` again after it fails (Redis restarted, a network blip), with a capped
    backoff that starts over after a run that lasted, so an API worker never silently
    stops relaying and is back within ``RESTART_CAP_S`` of Redis; a Redis outage is logged
    when it starts, not at every attempt."""
    delay = 0.1
    quiet = False
    while True:
        started = time.monotonic()
        try:
            await job()
            log.warning("%s ended; starting it again", what)
        except (aioredis.RedisError, OSError) as exc:
            (log.debug if quiet else log.warning)(
                "%s lost Redis (%s); trying again every %.0f s at most", what, exc, RESTART_CAP_S
            )
            quiet = True
        except Exception:
            log.exception("%s failed; starting it again in %.1fs", what, delay)
        if time.monotonic() - started > RESTART_CAP_S:
            delay, quiet = 0.1, False
        await asyncio.sleep(delay)
        delay = min(delay * 2, RESTART_CAP_S)


def api_context(settings: Settings) -> ApiContext:
    if not settings.redis_url:
        raise ConfigError(
            "--role api needs TICKPIPE_REDIS_URL: API processes share Redis with the ingest "
            "process (in-memory mode runs as one process: use --role all)"
        )
    client = redis_client(settings, max_connections=POOL_SIZE, name="tickpipe-api")
    assert client is not None
    capacities = settings.hot_capacities()
    hot = MirroredHotStore(RedisHotStore(client, capacities), settings.redis_url, capacities)
    bus = Bus(settings)  # in-process fan-out only: this process never publishes
    relay = RedisRelay(settings, client, bus)
    status_cache: dict[str, Any] = {}
    fetched = [0.0]

    async def poll_status() -> None:
        while True:
            raw = await client.get(keys.status_key())
            raise_if_cancelled()
            status_cache.clear()
            if raw:
                status_cache.update(orjson.loads(raw))
                fetched[0] = time.monotonic()
            await asyncio.sleep(1.0)

    def status() -> dict[str, Any]:
        """The ingest process's status (same shape in every role) with this process's part."""
        if not status_cache:
            raise QueryError(
                "the ingest process has not published its status to Redis yet "
                "(is `tickpipe run --role ingest` running against the same TICKPIPE_REDIS_URL?)",
                code="ingest_unavailable",
                status=503,
            )
        return status_cache | {
            "api": {
                "role": "api",
                "pid": os.getpid(),
                "bus_subscribers": len(bus.subscribers),
                "ingest_status_age_s": round(time.monotonic() - fetched[0], 3),
            }
        }

    async def gex(underlying: str, category: str, basis: str) -> GexAnswer | None:
        raw = cast(bytes | None, await client.get(keys.gex_key(underlying, category, basis)))
        if raw is None:
            return None
        head, _, body = raw.partition(b"\n")
        meta = orjson.loads(head)
        return GexAnswer(body, meta["chain_updated_ns"], meta["spot_updated_ns"])

    return ApiContext(
        settings=settings,
        query=Query(settings.lake_dir, settings.journal_dir, hot),
        keys=KeyStore(settings.keys_path),
        bus=bus,
        status=status,
        restart_source=lambda name: False,
        ready=lambda: True,
        gex=gex,
        background=[
            lambda: forever("Redis bus relay", relay.run),
            lambda: forever("hot store tracking", hot.track),
            lambda: forever("ingest status poller", poll_status),
        ],
    )
