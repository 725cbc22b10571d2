"""A real pipeline around one gexbot source pointed at the fake, and what a test reads back."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

from tickpipe.clock import SystemClock
from tickpipe.config import Settings
from tickpipe.pipeline import Pipeline
from tickpipe.sources.gexbot import GexbotSource
from tickpipe.store import layout

from ...fakes.gexbot import KEY, FakeGexbot

UNIT = 1e6
WINDOWS = ("current", "one", "five", "ten", "fifteen", "thirty")


def gexbot_settings(settings: Settings, fake: FakeGexbot, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "gexbot_enabled": True,
        "gexbot_api_key": SecretStr(KEY),
        "gexbot_api_base_url": fake.base_url,
        "gexbot_tickers": ["SPX"],
        "gexbot_categories": ["full", "zero", "one"],
        "gexbot_requests_per_second": 20.0,
        "gexbot_gex_unit_usd": UNIT,
        "simulator": "false",
        "journal_segment_seconds": 0.5,
    }
    values.update(changes)
    return settings.model_copy(update=values)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Pipeline, GexbotSource]]:
    """The pipeline with just this source; stopping it flushes everything to the lake."""
    source = GexbotSource(settings, SystemClock())
    pipeline = Pipeline(settings, sources=[source])
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    try:
        yield pipeline, source
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``predicate`` (the pipeline offers no event for "this much was ingested")."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def pairs_status(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    state = pipeline.supervisor.states["gexbot"]
    pairs: dict[str, dict[str, Any]] = state.details.get("pairs", {})
    return pairs


def pair(pipeline: Pipeline, key: str) -> dict[str, Any]:
    """What /status shows of one (ticker, category); empty before the source published."""
    return pairs_status(pipeline).get(key, {})


def every_pair(pipeline: Pipeline, predicate: Callable[[dict[str, Any]], bool]) -> bool:
    pairs = pairs_status(pipeline)
    return bool(pairs) and all(predicate(p) for p in pairs.values())


def lake(data_dir: Path, dataset: str) -> list[dict[str, Any]]:
    files = layout.lake_files(data_dir / "lake", dataset)
    if not files:
        return []
    table = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
    return table.sort_by([("symbol", "ascending"), ("seq", "ascending")]).to_pylist()


def _level(value: float) -> float | None:
    return None if value == 0 else float(value)


def _usd(value: float) -> float | None:
    return None if value == 0 else value * UNIT


def expected_row(label: str, body: dict[str, Any], spot: float | None = None) -> dict[str, Any]:
    """The GexLevels fields a served body must become, worked out from the body itself."""
    if label.endswith("/maxchange"):
        pairs = [body[w] for w in WINDOWS]
        return {
            "spot": spot,
            "strikes": [p[0] if p[0] else math.nan for p in pairs],
            "gex_usd_per_1pct": [p[1] * UNIT if p[0] else math.nan for p in pairs],
        }
    if label.endswith("/majors"):
        names = {"mpos_vol": "major_pos_vol", "mpos_oi": "major_pos_oi"}
        names |= {"mneg_vol": "major_neg_vol", "mneg_oi": "major_neg_oi"}
        row = {ours: _level(body[theirs]) for theirs, ours in names.items()}
        return row | {
            "spot": body["spot"],
            "zero_gamma": _level(body["zero_gamma"]),
            "net_gex_vol": _usd(body["net_gex_vol"]),
            "net_gex_oi": _usd(body["net_gex_oi"]),
            "strikes": [],
        }
    ladder = sorted(body["strikes"], key=lambda r: r[0])
    return {
        "spot": body["spot"],
        "zero_gamma": _level(body["zero_gamma"]),
        "major_pos_vol": _level(body["major_pos_vol"]),
        "major_pos_oi": _level(body["major_pos_oi"]),
        "major_neg_vol": _level(body["major_neg_vol"]),
        "major_neg_oi": _level(body["major_neg_oi"]),
        "call_wall": _level(body["major_pos_oi"]),
        "put_wall": _level(body["major_neg_oi"]),
        "net_gex_vol": _usd(body["sum_gex_vol"]),
        "net_gex_oi": _usd(body["sum_gex_oi"]),
        "total_gex_usd_per_1pct": body["sum_gex_oi"] * UNIT,
        "strikes": [r[0] for r in ladder],
        "gex_usd_per_1pct": [r[2] * UNIT for r in ladder],
    }


def same(stored: dict[str, Any], want: dict[str, Any]) -> bool:
    """Every expected field equal (floats to 1e-9 relative; NaN equals NaN)."""

    def eq(a: Any, b: Any) -> bool:
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, float) and isinstance(b, float | int):
            return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9)
        return bool(a == b)

    return all(eq(stored[k], v) for k, v in want.items())
