"""What the API reads: settings, the query layer, keys and the live event feed.

The API never touches sources or the journal writer; in ``--role api`` processes there is
no pipeline at all, only these readers over the shared data dir and Redis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tickpipe.api.auth import RateLimiter
from tickpipe.api.params import Limits
from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.store.bus import Bus
from tickpipe.store.keystore import KeyStore
from tickpipe.store.query import Query


@dataclasses.dataclass(frozen=True)
class GexAnswer:
    body: bytes
    """ready JSON object without the ages"""
    chain_updated_ns: int
    spot_updated_ns: int


@dataclasses.dataclass
class ApiContext:
    settings: Settings
    query: Query
    keys: KeyStore
    bus: Bus
    status: Callable[[], dict[str, Any]]
    restart_source: Callable[[str], bool]
    ready: Callable[[], bool]
    gex: Callable[[str, str, str], Awaitable[GexAnswer | None]]
    """(underlying, category, basis) -> the precomputed GEX, or None if unknown"""
    limiter: RateLimiter = dataclasses.field(default_factory=RateLimiter)
    latest_json: dict[tuple[Kind, str, int], tuple[int, bytes, int | None]] = dataclasses.field(
        default_factory=dict
    )
    """real-time JSON and newest ts_event per (kind, symbol, limit), keyed to the hot
    store's version"""
    limits: Limits = dataclasses.field(default_factory=Limits)
    """what one request may cost (checked before its query runs)"""
    background: list[Callable[[], Coroutine[Any, Any, None]]] = dataclasses.field(
        default_factory=list
    )
    """long-lived tasks run for the app's lifetime (only in --role api processes)"""
    stop_source: Callable[[str], bool] = lambda name: False
    """stop one feed until a restart; False if no such source in this process"""
