"""The API without a pipeline: ``tickpipe run --role api`` processes.

They share the data dir (journal + lake, read-only) and Redis (hot store, bus, the ingest
process's status) with one ingest process, so several of them, on one machine or many
with shared storage, can serve while one process writes. Live events reach their
WebSocket clients from Redis pub/sub.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
import pyarrow as pa
import redis.asyncio as aioredis

from tickpipe.api.context import ApiContext, GexAnswer
from tickpipe.columnar import group_by_symbol
from tickpipe.config import Settings
from tickpipe.errors import ConfigError, QueryError
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store import keys
from tickpipe.store.bus import Bus
from tickpipe.store.hot_redis import RedisHotStore
from tickpipe.store.keystore import KeyStore
from tickpipe.store.query import Query
from tickpipe.store.redis_conn import redis_client

log = logging.getLogger(__name__)


async def relay_redis_bus(settings: Settings, client: aioredis.Redis, bus: Bus) -> None:
    """Feed Redis pub/sub messages to this process's in-process subscribers."""
    by_channel: dict[str, list[Kind]] = {}
    for kind in Kind:
        by_channel.setdefault(keys.channel_for(kind, settings), []).append(kind)
    pubsub = client.pubsub()
    await pubsub.subscribe(*by_channel)
    try:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                events = orjson.loads(message["data"])
                for kind in {Kind(e["type"]) for e in events}:
                    rows = [e for e in events if e["type"] == kind.value]
                    batch = _from_json_rows(kind, rows)
                    await bus.publish(kind, group_by_symbol(batch))
            except (ValueError, KeyError, pa.ArrowException) as exc:
                log.warning("unreadable bus message skipped: %s", exc)
    finally:
        await pubsub.aclose()


def _from_json_rows(kind: Kind, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """JSON events back to their Arrow schema (dates arrive as ISO strings)."""
    schema = SCHEMAS[kind]
    dates = [f.name for f in schema if pa.types.is_date32(f.type)]
    for row in rows:
        for name in dates:
            row[name] = dt.date.fromisoformat(row[name])
    return pa.RecordBatch.from_pylist(rows, schema=schema)


async def forever(what: str, job: Callable[[], Awaitable[None]]) -> None:
    """Run ``job`` again after it fails (Redis restarted, a network blip), with a capped
    backoff, logging once per outage, so an API worker never silently stops relaying."""
    delay = 0.5
    while True:
        try:
            await job()
            log.warning("%s ended; starting it again", what)
        except (aioredis.RedisError, OSError) as exc:
            log.warning("%s lost Redis (%s); reconnecting in %.1fs", what, exc, delay)
        except Exception:
            log.exception("%s failed; starting it again in %.1fs", what, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def api_context(settings: Settings) -> ApiContext:
    if not settings.redis_url:
        raise ConfigError(
            "--role api needs TICKPIPE_REDIS_URL: API processes share Redis with the ingest "
            "process (in-memory mode runs as one process: use --role all)"
        )
    client = redis_client(settings)
    assert client is not None
    hot = RedisHotStore(client, settings.hot_capacities())
    bus = Bus(settings)  # in-process fan-out only: this process never publishes
    status_cache: dict[str, Any] = {}
    fetched = [0.0]

    async def poll_status() -> None:
        while True:
            raw = await client.get(keys.status_key())
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
            lambda: forever("Redis bus relay", lambda: relay_redis_bus(settings, client, bus)),
            lambda: forever("ingest status poller", poll_status),
        ],
    )
