"""The one way tickpipe opens Redis: with timeouts on every call."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from tickpipe.config import Settings

REDIS_TIMEOUT_S = 2.0


def redis_client(
    settings: Settings, *, max_connections: int | None = None, name: str | None = None
) -> aioredis.Redis | None:
    """A Redis client whose every call ends: a dead or black-holed server costs a bounded
    wait (``REDIS_TIMEOUT_S``), never a stuck task.

    ``max_connections`` bounds its pool: a command that finds every connection busy waits
    up to ``REDIS_TIMEOUT_S`` for one instead of opening another, so N processes hold at
    most N x ``max_connections``. ``name`` is what ``CLIENT LIST`` shows for them."""
    if not settings.redis_url:
        return None
    options: dict[str, Any] = {
        "socket_timeout": REDIS_TIMEOUT_S,
        "socket_connect_timeout": REDIS_TIMEOUT_S,
        "health_check_interval": 10,
    }
    if name is not None:
        options["client_name"] = name
    if max_connections is None:
        return aioredis.Redis.from_url(settings.redis_url, **options)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=max_connections, timeout=REDIS_TIMEOUT_S, **options
    )
    return aioredis.Redis.from_pool(pool)


def raise_if_cancelled() -> None:
    """Re-raise a cancellation redis-py swallowed. On Python 3.11 ``asyncio.wait_for``
    returns its result instead of raising when the task is cancelled just as the awaited
    work finishes, and redis-py sends every command through one (measured: about one
    cancel in ten lost while a connection is being set up), so a loop that awaits Redis
    calls this after each call, or a cancelled worker never stops."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
