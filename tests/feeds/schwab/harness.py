"""A real pipeline around the Schwab sources pointed at the fake, and the fake's market."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tickpipe.clock import Clock, SystemClock
from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.pipeline import Pipeline
from tickpipe.sources.base import SourceState
from tickpipe.sources.registry import build_sources
from tickpipe.symbols import occ_symbol

from ...fakes.schwab import FakeSchwab, ms_now
from ..gexbot.harness import lake

__all__ = ["lake"]

EXPIRY = dt.date.today() + dt.timedelta(days=30)
OPTION = occ_symbol("SPXW", EXPIRY, "C", 6000)


@contextlib.asynccontextmanager
async def running(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Pipeline]:
    """The pipeline with the sources the settings enable; stopping flushes to the lake."""
    clock = clock or SystemClock()
    pipeline = Pipeline(settings, clock, sources=build_sources(settings, clock))
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    try:
        yield pipeline
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll ``predicate`` (sync or async): the pipeline offers no event for "ingested"."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def in_hot(pipeline: Pipeline, kind: Kind, symbol: str) -> bool:
    return (await pipeline.hot.latest(kind, symbol, 1)).num_rows > 0


def state(pipeline: Pipeline, name: str = "schwab") -> SourceState:
    return pipeline.supervisor.states[name]


async def streaming(pipeline: Pipeline, name: str = "schwab") -> SourceState:
    await until(lambda: state(pipeline, name).phase == "streaming")
    return state(pipeline, name)


async def open_market(fake: FakeSchwab) -> dict[str, dict[str, Any]]:
    """Full level-one values the fake sends on subscription (times: now)."""
    now = ms_now()
    values = {
        "SPY": {
            "1": 600.1,
            "2": 600.2,
            "3": 600.15,
            "4": 300,
            "5": 400,
            "8": 1_000_000,
            "9": 100,
            "34": now,
            "35": now - 50,
            "41": "ARCX",
            "delayed": False,
        },
        "/ES": {
            "1": 6001.25,
            "2": 6001.5,
            "3": 6001.25,
            "4": 12,
            "5": 9,
            "8": 50_000,
            "9": 2,
            "10": now,
            "11": now - 20,
            "21": "XCME",
        },
        OPTION: {
            "2": 31.2,
            "3": 31.9,
            "4": 31.5,
            "8": 120,
            "9": 4_500,
            "10": 18.25,
            "16": 10,
            "17": 12,
            "18": 1,
            "22": "$SPX",
            "28": 0.52,
            "29": 0.0012,
            "38": now,
            "39": now - 1000,
        },
    }
    services = {"SPY": "LEVELONE_EQUITIES", "/ES": "LEVELONE_FUTURES", OPTION: "LEVELONE_OPTIONS"}
    for key, fields in values.items():
        await fake.update(services[key], key, fields)
    return values
