"""The chain poller against the fake: the recorded $SPX chain becomes GEX on
/api/v1/gex/$SPX; 429s and oversized chains are answered as Schwab needs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import orjson
import pytest

from tickpipe.api.app import create_app
from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.events import Kind
from tickpipe.gex import greeks
from tickpipe.gex.chain import expiry_instant_ns
from tickpipe.gex.exposure import MINUTES_PER_YEAR
from tickpipe.pipeline import api_context

from ...fakes.schwab import SPX_CHAIN, FakeSchwab, ms_now, narrowed, rebased
from .conftest import schwab_settings
from .harness import lake, running, state, until

RECORDED_S = 1_746_824_400  # the chain's quotes were taken up to 2025-05-09 21:00 UTC


def chain_hits(fake: FakeSchwab) -> list[tuple[str | None, int]]:
    return [
        (h.params.get("strikeCount"), h.status)
        for h in fake.rest_hits
        if h.path == "/marketdata/v1/chains"
    ]


async def test_gex_of_the_recorded_spx_chain_is_served_on_the_api(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    recorded = orjson.loads(SPX_CHAIN.read_bytes())
    # the same chain moved to today (the API ages chains by the wall clock): strikes, IVs,
    # volumes and open interest as recorded, dates and times shifted alike
    fake.set_chain(rebased(recorded, ms_now()))
    [expiry_key] = fake.chains["$SPX"]["callExpDateMap"]
    expiry = dt.date.fromisoformat(expiry_key.split(":")[0])
    settings = schwab_settings(fake, tmp_path, schwab_chain_symbols=["$SPX"])
    async with running(settings) as pipeline:
        await until(lambda: pipeline.hub.accepted.get(Kind.OPTION.value, 0) == 162)
        await until(lambda: "$SPX" in pipeline.gex.spots)
        pipeline.gex.recompute("$SPX")
        ctx = api_context(pipeline)
        key, _ = ctx.keys.create("reader", ["read"], 1000)
        transport = httpx.ASGITransport(app=create_app(ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"Authorization": f"Bearer {key}"}
            by_volume = await client.get("/api/v1/gex/$SPX?basis=volume", headers=headers)
            by_oi = await client.get("/api/v1/gex/$SPX", headers=headers)
        assert state(pipeline, "schwab-chains").details["chains"]["$SPX"]["contracts"] == 162
    assert by_volume.status_code == 200, by_volume.text
    body = by_volume.json()
    assert body["symbol"] == "$SPX" and body["spot"] == 5659.91 and body["basis"] == "volume"
    assert [e["expiry"][:10] for e in body["expiries"]] == [expiry.isoformat()]

    # walls against a contract-by-contract textbook computation from the recorded JSON
    minutes = (expiry_instant_ns(expiry) - body["as_of_ns"]) / 60e9
    years = max(minutes, settings.gex_min_minutes) / MINUTES_PER_YEAR
    gex: dict[tuple[str, float], float] = {}
    for side, right in (("callExpDateMap", "C"), ("putExpDateMap", "P")):
        for strikes in recorded[side].values():
            for [c] in strikes.values():
                gamma = float(greeks.gamma(5659.91, c["strikePrice"], years, c["volatility"] / 100))
                gex[(right, c["strikePrice"])] = gamma * c["totalVolume"] * 100 * 5659.91**2 * 0.01
    assert body["call_wall"] == max((k for r, k in gex if r == "C"), key=lambda k: gex[("C", k)])
    assert body["put_wall"] == max((k for r, k in gex if r == "P"), key=lambda k: gex[("P", k)])
    calls = sum(v for (r, _), v in gex.items() if r == "C")
    puts = sum(v for (r, _), v in gex.items() if r == "P")
    assert body["total_gex_usd_per_1pct"] == pytest.approx(calls - puts, rel=1e-3)
    # the recording has open interest 0 on every contract: by OI there is no exposure
    assert by_oi.status_code == 200 and by_oi.json()["total_gex_usd_per_1pct"] == 0

    options = lake(tmp_path / "data", "option")
    assert len(options) == 162 and {o["source"] for o in options} == {"schwab-chains"}


async def test_an_oversized_chain_is_asked_again_narrower_and_remembered(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    fake.chain_max_strikes = 60
    clock = FakeClock(start_ns=RECORDED_S * NS_PER_SECOND)
    settings = schwab_settings(
        fake, tmp_path, schwab_chain_symbols=["$SPX"], schwab_chain_interval_s=0.1
    )
    async with running(settings, clock) as pipeline:
        await until(lambda: [s for _, s in chain_hits(fake)].count(200) >= 2)
        poller = state(pipeline, "schwab-chains")
        assert poller.details["chains"]["$SPX"]["strike_count"] == 25
        assert poller.counters["chain_too_big"] == 4
    hits = chain_hits(fake)
    assert hits[:6] == [
        (None, 502),
        ("200", 502),
        ("100", 502),
        ("50", 502),
        ("25", 200),
        ("25", 200),
    ]
    recorded = orjson.loads(SPX_CHAIN.read_bytes())
    expected = {
        c["symbol"]
        for side in ("callExpDateMap", "putExpDateMap")
        for strikes in narrowed(recorded, 25)[side].values()
        for [c] in strikes.values()
    }
    assert len(expected) == 50
    assert {o["symbol"] for o in lake(tmp_path / "data", "option")} == expected


async def test_a_429_skips_the_round_and_every_call_waits_for_retry_after(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    fake.chain_429 = 1
    fake.retry_after = "1"
    clock = FakeClock(start_ns=RECORDED_S * NS_PER_SECOND)
    settings = schwab_settings(
        fake, tmp_path, schwab_chain_symbols=["$SPX", "NOPE"], schwab_chain_interval_s=0.1
    )
    async with running(settings, clock) as pipeline:
        await until(lambda: (None, 200) in chain_hits(fake))
        poller = state(pipeline, "schwab-chains")
        await until(lambda: "NOPE" in poller.details.get("chains", {}))
        assert poller.counters["http_429"] == 1 and poller.restarts == 0
        assert "HTTP 404" in poller.details["chains"]["NOPE"]["last_error"]
    chains = [h for h in fake.rest_hits if h.path == "/marketdata/v1/chains"]
    assert [h.status for h in chains[:3]] == [429, 404, 200]
    assert chains[1].at - chains[0].at >= 1.0  # the next call waited out Retry-After
