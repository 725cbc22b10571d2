"""gexbot's levels through the GEX routes: served as stored, and compared with our own."""

from __future__ import annotations

from typing import Any

import pytest

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.events import GexLevels, Kind, to_batch
from tickpipe.sources.simulator import Simulator

from .conftest import Api

SHARED = {
    "symbol",
    "category",
    "basis",
    "spot",
    "zero_gamma",
    "call_wall",
    "put_wall",
    "total_gex_usd_per_1pct",
    "strikes",
    "units",
    "as_of",
    "as_of_ns",
    "source",
}
"""fields both sources answer with the same meaning"""


def levels(
    symbol: str, category: str, seq: int, ago_s: float, source: str = "gexbot", **fields: Any
) -> GexLevels:
    ts = SystemClock().now_ns() - int(ago_s * NS_PER_SECOND)
    values: dict[str, Any] = {
        "spot": 7138.55,
        "zero_gamma": 7112.95,
        "call_wall": 7200.0,
        "put_wall": 6900.0,
        "total_gex_usd_per_1pct": 5.15e10,
        "strikes": [6890.0, 6895.0, 7380.0, 7385.0],
        "gex_usd_per_1pct": [-8.69e7, 6.976e7, 7.599e7, 1.427e7],
        "major_pos_vol": 7135.0,
        "major_pos_oi": 7200.0,
        "major_neg_vol": 7100.0,
        "major_neg_oi": 6900.0,
        "net_gex_vol": 1.71e12,
        "net_gex_oi": 5.15e10,
    }
    values.update(fields)
    return GexLevels(
        ts_event=ts,
        ts_recv=ts + 5_000_000,
        symbol=symbol,
        source=source,
        seq=seq,
        category=category,
        **values,
    )


async def feed(api: Api, *events: GexLevels, source: str = "gexbot") -> None:
    await api.feed({Kind.GEX: to_batch(Kind.GEX, list(events))}, source=source)
    await api.pipeline.hub.fanned_out()  # in the hot store before the test reads


async def get(api: Api, path: str, status: int = 200) -> dict[str, Any]:
    response = await api.client.get(path, headers=api.auth())
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_source_gexbot_serves_the_latest_stored_levels_in_our_shape(api: Api) -> None:
    older = levels("$SPX", "full", 1, 30, spot=7100.0)
    latest = levels("$SPX", "full", 2, 20, spot=7138.55, zero_gamma=7120.5)
    zero = levels("$SPX", "zero", 3, 10, spot=7139.0, zero_gamma=7131.0)
    await feed(api, older, latest, zero)
    # our engine's own history under the same symbol, newer, must not be taken for gexbot's
    await feed(api, levels("$SPX", "full", 1, 5, source="gex", spot=1.0), source="gex")

    body = await get(api, "/api/v1/gex/SPX?source=gexbot")
    canonical = await get(api, "/api/v1/gex/$SPX?source=gexbot")
    age = body.pop("age_s")
    assert 19 < age < 60 and canonical.pop("age_s") == pytest.approx(age, abs=1)
    assert body == canonical
    assert body.keys() >= SHARED
    assert body["source"] == "gexbot" and body["symbol"] == "$SPX" and body["view"] == "chain"
    assert (body["category"], body["basis"]) == ("full", "oi")
    assert body["spot"] == 7138.55 and body["zero_gamma"] == 7120.5
    assert (body["call_wall"], body["put_wall"]) == (7200.0, 6900.0)
    assert body["total_gex_usd_per_1pct"] == 5.15e10
    assert body["strikes"] == {
        "strike": latest.strikes,
        "net_gex_usd_per_1pct": latest.gex_usd_per_1pct,
    }
    assert body["as_of_ns"] == latest.ts_event
    assert (body["major_pos_vol"], body["major_neg_vol"]) == (7135.0, 7100.0)

    by_volume = await get(api, "/api/v1/gex/SPX?source=gexbot&basis=volume")
    assert (by_volume["call_wall"], by_volume["put_wall"]) == (7135.0, 7100.0)
    assert by_volume["total_gex_usd_per_1pct"] == 1.71e12
    assert by_volume["strikes"] is None  # gexbot's volume ladder is not stored

    zero_body = await get(api, "/api/v1/gex/SPX?source=gexbot&category=zero")
    assert zero_body["zero_gamma"] == 7131.0 and zero_body["as_of_ns"] == zero.ts_event


async def test_a_category_with_only_majors_answers_them(api: Api) -> None:
    await feed(api, levels("SPY", "one/majors", 1, 3, spot=600.2, strikes=[], gex_usd_per_1pct=[]))
    body = await get(api, "/api/v1/gex/SPY?source=gexbot&category=one")
    assert body["view"] == "majors" and body["category"] == "one" and body["spot"] == 600.2
    assert body["strikes"] is None


async def test_futures_variants_by_gexbots_name(api: Api) -> None:
    await feed(api, levels("/ES", "zero", 1, 3, spot=7180.25))
    body = await get(api, "/api/v1/gex/ES_SPX?source=gexbot&category=zero")
    assert body["symbol"] == "/ES" and body["spot"] == 7180.25


async def test_missing_levels_and_bad_parameters_are_clear(api: Api) -> None:
    missing = await get(api, "/api/v1/gex/QQQ?source=gexbot", 404)
    message = missing["error"]["message"]
    assert "no gexbot levels for 'QQQ' (full)" in message and "GEXBOT_TICKERS" in message
    bad = await get(api, "/api/v1/gex/SPX?source=cboe", 422)
    assert "source" in bad["error"]["message"]
    # source=tickpipe is the default and still our own computation
    ours = await get(api, "/api/v1/gex/SPY", 404)
    assert ours["error"]["message"] == "no option chain for 'SPY' yet"


async def our_spy_gex(api: Api, settings: Settings) -> None:
    sim = Simulator(
        settings.model_copy(
            update={
                "simulator_start_ns": SystemClock().now_ns() - 60 * NS_PER_SECOND,
                "simulator_bad_share": 0,
            }
        ),
        SystemClock(),
    )
    for _ in range(10):
        await api.feed(sim.step(3000, NS_PER_SECOND), source="simulator")
    api.pipeline.gex.recompute("SPY")


async def test_compare_puts_both_side_by_side_with_their_differences(
    api: Api, settings: Settings
) -> None:
    await our_spy_gex(api, settings)
    theirs = levels(
        "SPY",
        "full",
        1,
        2,
        spot=601.25,
        zero_gamma=598.5,
        major_pos_oi=605.0,
        major_neg_oi=590.0,
        net_gex_oi=2.5e9,
        strikes=[590.0, 605.0],
        gex_usd_per_1pct=[-1e9, 3.5e9],
    )
    await feed(api, theirs)
    ours = await get(api, "/api/v1/gex/SPY")
    body = await get(api, "/api/v1/gex/SPY/compare")
    assert (body["symbol"], body["category"], body["basis"]) == ("SPY", "full", "oi")

    ladder = ours["strikes"]
    net = ladder["net_gex_usd_per_1pct"]
    our_side = body["tickpipe"]
    for key in ("spot", "zero_gamma", "call_wall", "put_wall", "total_gex_usd_per_1pct"):
        assert our_side[key] == ours[key]
    assert our_side["major_pos"] == ladder["strike"][net.index(max(net))]
    assert our_side["major_neg"] == ladder["strike"][net.index(min(net))]

    their_side = body["gexbot"]
    assert (their_side["spot"], their_side["zero_gamma"]) == (601.25, 598.5)
    assert (their_side["call_wall"], their_side["put_wall"]) == (605.0, 590.0)
    assert (their_side["major_pos"], their_side["major_neg"]) == (605.0, 590.0)
    assert their_side["total_gex_usd_per_1pct"] == 2.5e9

    difference = body["difference"]
    for key in ("spot", "zero_gamma", "call_wall", "put_wall", "major_pos", "major_neg"):
        assert difference[key] == pytest.approx(their_side[key] - our_side[key], abs=1e-6)
        assert body["difference_pct"][key] == pytest.approx(
            difference[key] / our_side["spot"] * 100, abs=1e-6
        )
    assert difference["as_of_s"] == pytest.approx(
        (theirs.ts_event - ours["as_of_ns"]) / NS_PER_SECOND
    )
    assert body["total_gex_ratio"] == pytest.approx(
        2.5e9 / ours["total_gex_usd_per_1pct"], rel=1e-5
    )


async def test_compare_names_the_missing_side(api: Api, settings: Settings) -> None:
    await feed(api, levels("$SPX", "full", 1, 2))
    no_ours = await get(api, "/api/v1/gex/SPX/compare", 404)
    assert no_ours["error"]["message"].startswith("no tickpipe GEX for '$SPX' yet")
    await our_spy_gex(api, settings)
    no_theirs = await get(api, "/api/v1/gex/SPY/compare?category=zero", 404)
    assert no_theirs["error"]["message"].startswith("no gexbot levels for 'SPY' (zero)")


async def test_openapi_documents_the_source_parameter_and_compare(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    gex = spec["paths"]["/api/v1/gex/{symbol}"]["get"]
    assert [p["name"] for p in gex["parameters"]] == ["symbol", "category", "basis", "source"]
    compare = spec["paths"]["/api/v1/gex/{symbol}/compare"]["get"]
    assert [p["name"] for p in compare["parameters"]] == ["symbol", "category", "basis"]
