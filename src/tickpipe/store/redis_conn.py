"""The one way tickpipe opens Redis: with timeouts on every call."""

from __future__ import annotations

import redis.asyncio as aioredis

from tickpipe.config import Settings

REDIS_TIMEOUT_S = 2.0


def redis_client(settings: Settings) -> aioredis.Redis | None:
    """A Redis client whose every call ends: a dead or black-holed server costs a bounded
    wait (``REDIS_TIMEOUT_S``), never a stuck task."""
    if not settings.redis_url:
        return None
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        health_check_interval=10,
    )
