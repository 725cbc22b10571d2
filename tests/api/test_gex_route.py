"""GEX end to end: the simulator's chain through the pipeline to /api/v1/gex/SPY."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.events import Kind
from tickpipe.gex import greeks
from tickpipe.gex.chain import expiry_instant_ns
from tickpipe.gex.exposure import MINUTES_PER_YEAR
from tickpipe.sources.simulator import Simulator

from .conftest import Api


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """GexLevels history every 50 ms, so the history test sees the engine's loop record."""
    return settings.model_copy(update={"gex_history_seconds": 0.05, "gex_interval_ms": 20})


async def feed(api: Api, sim: Simulator, steps: int) -> dict[Kind, list[pa.RecordBatch]]:
    out: dict[Kind, list[pa.RecordBatch]] = {}
    for _ in range(steps):
        batches = sim.step(3000, NS_PER_SECOND)
        await api.feed(batches, source="simulator")
        for kind, batch in batches.items():
            out.setdefault(kind, []).append(batch)
    return out


async def test_gex_of_the_simulated_chain(api: Api, settings: Settings) -> None:
    start = SystemClock().now_ns() - 120 * NS_PER_SECOND
    sim = Simulator(
        settings.model_copy(update={"simulator_start_ns": start, "simulator_bad_share": 0}),
        SystemClock(),
    )
    fed = await feed(api, sim, 30)
    api.pipeline.gex.recompute("SPY")
    response = await api.client.get("/api/v1/gex/SPY", headers=api.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    spot = body["spot"]
    assert abs(spot - 600) < 10
    # the simulator puts heavy put OI below spot and call OI above: the flip is near spot
    assert body["zero_gamma"] is not None and abs(body["zero_gamma"] / spot - 1) < 0.05
    assert body["chain_age_s"] < 60 and body["category"] == "full" and body["basis"] == "oi"

    # walls recomputed contract by contract with the scalar textbook formula
    options = pa.Table.from_batches(fed[Kind.OPTION]).to_pylist()
    latest = {row["symbol"]: row for row in options}
    now, floor_years = body["as_of_ns"], settings.gex_min_minutes / MINUTES_PER_YEAR
    gex_by: dict[tuple[str, float], float] = {}
    oi_near: dict[tuple[str, float], float] = {}
    for row in latest.values():
        years = max((expiry_instant_ns(row["expiry"]) - now) / 60e9 / MINUTES_PER_YEAR, floor_years)
        if expiry_instant_ns(row["expiry"]) <= now:
            continue
        gamma = float(greeks.gamma(spot, row["strike"], years, row["iv"]))
        key = (row["right"], row["strike"])
        gex_by[key] = gex_by.get(key, 0.0) + gamma * row["open_interest"] * 100 * spot**2 * 0.01
        if abs(row["strike"] / spot - 1) < 0.03:
            oi_near[key] = oi_near.get(key, 0.0) + row["open_interest"]
    assert body["call_wall"] == max(
        (k for r, k in gex_by if r == "C"), key=lambda k: gex_by[("C", k)]
    )
    assert body["put_wall"] == max(
        (k for r, k in gex_by if r == "P"), key=lambda k: gex_by[("P", k)]
    )
    # and, as traders expect, they sit on strikes that carry much open interest near spot
    for right, wall in (("C", body["call_wall"]), ("P", body["put_wall"])):
        ranked = sorted((k for r, k in oi_near if r == right), key=lambda k: -oi_near[(right, k)])
        assert wall in ranked[:8]

    ladder = body["strikes"]
    assert ladder["strike"] == sorted(ladder["strike"])
    assert sum(ladder["net_gex_usd_per_1pct"]) == pytest.approx(
        body["total_gex_usd_per_1pct"], rel=1e-6
    )
    assert len(ladder["call_contracts"]) == len(ladder["strike"])
    assert len(body["profile"]["spot"]) == settings.gex_grid_points and len(body["expiries"]) >= 2

    sim._mid[sim.symbols.index("SPY")] *= 1.01  # the market moves up 1 %
    await feed(api, sim, 5)
    api.pipeline.gex.recompute("SPY")
    moved = (await api.client.get("/api/v1/gex/SPY", headers=api.auth())).json()
    assert (
        moved["spot"] > spot + 3
        and moved["total_gex_usd_per_1pct"] != body["total_gex_usd_per_1pct"]
    )

    zero = (
        await api.client.get("/api/v1/gex/SPY?category=zero&basis=volume", headers=api.auth())
    ).json()
    assert zero["category"] == "zero" and len(zero["expiries"]) == 1


async def test_unknown_underlying_is_404_and_a_stale_chain_503(
    api: Api, settings: Settings
) -> None:
    missing = await api.client.get("/api/v1/gex/QQQ", headers=api.auth())
    assert missing.status_code == 404 and "QQQ" in missing.json()["error"]["message"]
    sim = Simulator(
        settings.model_copy(
            update={"simulator_start_ns": SystemClock().now_ns() - 60 * NS_PER_SECOND}
        ),
        SystemClock(),
    )
    await feed(api, sim, 5)
    api.pipeline.gex.recompute("SPY")
    engine = api.pipeline.gex
    for key, cached in list(engine.cache.items()):
        old = cached.chain_updated_ns - int((settings.gex_max_chain_age_s + 5) * NS_PER_SECOND)
        engine.cache[key] = dataclasses.replace(cached, chain_updated_ns=old)
    stale = await api.client.get("/api/v1/gex/SPY", headers=api.auth())
    assert stale.status_code == 503 and stale.json()["error"]["code"] == "stale_chain"
    bad = await api.client.get("/api/v1/gex/SPY?basis=delta", headers=api.auth())
    assert bad.status_code == 422


async def test_gex_levels_history_is_queryable_like_ticks(api: Api, settings: Settings) -> None:
    """The engine's own loop writes a GexLevels event per underlying every
    ``gex_history_seconds``; the historical route serves them like ticks."""
    sim = Simulator(
        settings.model_copy(
            update={"simulator_start_ns": SystemClock().now_ns() - 60 * NS_PER_SECOND}
        ),
        SystemClock(),
    )
    await feed(api, sim, 5)
    engine = api.pipeline.gex
    async with asyncio.timeout(30):  # the engine settles on the fed chain, then records it
        while True:
            await asyncio.sleep(0.02)
            if "SPY" not in engine.results or engine.due():
                continue
            latest = await api.pipeline.hot.latest(Kind.GEX, "SPY", 1)
            result = engine.results["SPY"][("full", "oi")]
            if latest.num_rows and latest.column("zero_gamma")[0].as_py() == result.zero_gamma:
                break
    await api.pipeline.hub.drained()
    now = SystemClock().now_ns()
    params = {
        "symbols": "SPY",
        "start_time": now - 60 * NS_PER_SECOND,
        "end_time": now + NS_PER_SECOND,
        "types": "gex",
    }
    data = (
        await api.client.get("/api/v1/ticks/historical", params=params, headers=api.auth())
    ).json()["data"]
    assert data and {row["type"] for row in data} == {"gex"}
    levels = data[-1]
    assert levels["source"] == "gex" and levels["symbol"] == "SPY"
    assert levels["zero_gamma"] == result.zero_gamma and levels["call_wall"] == result.call_wall
    assert np.allclose(levels["gex_usd_per_1pct"], result.net_gex_by_strike)
