"""The data routes return exactly what the pipeline accepted: across the hot store, the
journal and the lake, with no loss, no duplicate, and bars that match an independent count."""

from __future__ import annotations

import asyncio

import orjson
import polars as pl
import pyarrow as pa
import pytest

from tickpipe.client import TickClient, TickClientError
from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.config import Settings
from tickpipe.events import SCHEMAS, Kind, Quote, Trade, to_batch
from tickpipe.sources.simulator import Simulator

from .conftest import Api

MINUTE = 60 * NS_PER_SECOND


async def feed_simulator(
    api: Api, settings: Settings, steps: int, flush_at: int
) -> dict[Kind, pa.Table]:
    """Feed ``steps`` simulated seconds; the first ``flush_at`` end up in the lake, the rest
    stay in the journal. Returns what was accepted, per kind."""
    start = (SystemClock().now_ns() - 3600 * NS_PER_SECOND) // MINUTE * MINUTE
    sim = Simulator(settings.model_copy(update={"simulator_start_ns": start}), SystemClock())
    accepted: dict[Kind, list[pa.RecordBatch]] = {}
    for step in range(steps):
        result = api.pipeline.quality.process("simulator", sim.step(1500, NS_PER_SECOND))
        await api.pipeline.hub.accept(result)
        for kind, grouped in result.accepted.items():
            accepted.setdefault(kind, []).append(grouped.batch)
        if step == flush_at:
            await api.pipeline.flush_once(force=True)
    return {k: pa.Table.from_batches(v) for k, v in accepted.items()}


KEYS = [
    ("ts_event", "ascending"),
    ("symbol", "ascending"),
    ("source", "ascending"),
    ("seq", "ascending"),
]


async def test_realtime_returns_the_latest_events_with_type_and_time(api: Api) -> None:
    t0 = SystemClock().now_ns() - NS_PER_SECOND
    trades = [Trade(t0 + i, t0 + i + 5, "SPY", 600 + i / 100, 10, "feed", i + 1) for i in range(20)]
    quotes = [Quote(t0 + i, t0 + i, "QQQ", 520.0, 1, 520.01, 2, "feed", i + 1) for i in range(5)]
    await api.feed(
        {Kind.TRADE: to_batch(Kind.TRADE, trades), Kind.QUOTE: to_batch(Kind.QUOTE, quotes)}
    )
    response = await api.client.get(
        "/api/v1/ticks/realtime?symbols=SPY,QQQ&limit=3", headers=api.auth()
    )
    assert response.status_code == 200
    data = response.json()["data"]
    spy = [r for r in data if r["symbol"] == "SPY"]
    assert [r["seq"] for r in spy] == [18, 19, 20] and {r["type"] for r in spy} == {"trade"}
    assert spy[-1]["ts_event"] == t0 + 19 and spy[-1]["price"] == 600.19
    assert spy[-1]["time"].endswith("Z") and spy[-1]["time"][:4] == "2026"
    assert [r["seq"] for r in data if r["symbol"] == "QQQ"] == [3, 4, 5]
    only_quotes = await api.client.get(
        "/api/v1/ticks/realtime?symbols=SPY,QQQ&types=quote", headers=api.auth()
    )
    assert {r["type"] for r in only_quotes.json()["data"]} == {"quote"}
    latest = await api.client.get("/api/v1/quotes/latest?symbols=QQQ,SPY", headers=api.auth())
    assert [(q["symbol"], q["seq"]) for q in latest.json()["data"]] == [("QQQ", 5)]


async def test_historical_json_pages_equal_the_accepted_stream(
    api: Api, settings: Settings
) -> None:
    accepted = await feed_simulator(api, settings, steps=12, flush_at=5)
    lake_files = list(settings.lake_dir.rglob("*.parquet"))
    assert lake_files and list(settings.journal_dir.rglob("*.open")), (
        "data must straddle lake and journal"
    )
    trades = accepted[Kind.TRADE]
    start, end = trades.column("ts_event")[0].as_py(), SystemClock().now_ns()
    rows: list[dict[str, object]] = []
    cursor = None
    pages = 0
    while True:
        params = {
            "symbols": "SPY,QQQ,/ES,/NQ,$VIX",
            "start_time": start,
            "end_time": end,
            "types": "trade,quote",
            "limit": 1000,
        }
        if cursor:
            params["cursor"] = cursor
        body = (
            await api.client.get("/api/v1/ticks/historical", params=params, headers=api.auth())
        ).json()
        rows += body["data"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages > 5
    for kind in (Kind.TRADE, Kind.QUOTE):
        got = [r for r in rows if r["type"] == kind.value]
        expected = accepted[kind].filter(
            pa.compute.greater_equal(accepted[kind].column("ts_event"), start)
        )
        expected_rows = expected.sort_by(KEYS).to_pylist()
        fields = SCHEMAS[kind].names
        assert [{f: r[f] for f in fields} for r in got] == expected_rows


async def test_arrow_download_and_bars_match_an_independent_computation(
    api: Api, settings: Settings
) -> None:
    accepted = await feed_simulator(api, settings, steps=150, flush_at=70)
    trades = accepted[Kind.TRADE]
    start = trades.column("ts_event")[0].as_py() // MINUTE * MINUTE
    end = start + 10 * MINUTE
    client = TickClient(api.base_url or "http://unused", api.read)
    client._http = _asgi_sync_bridge(api)  # type: ignore[assignment]
    frame = await asyncio.to_thread(client.historical, "SPY", start, end)
    expected = pl.from_arrow(trades).filter(pl.col("symbol") == "SPY")  # type: ignore[union-attr]
    assert frame.sort(["ts_event", "seq"]).equals(expected.sort(["ts_event", "seq"]))

    bars = await asyncio.to_thread(client.bars, ["SPY", "QQQ"], start, end, "1m")
    by_hand = (
        pl.from_arrow(trades)  # type: ignore[union-attr]
        .filter(pl.col("symbol").is_in(["SPY", "QQQ"]))
        .sort(["ts_event", "seq"])
        .group_by(
            "symbol",
            (pl.col("ts_event") - pl.col("ts_event") % MINUTE).alias("time"),
            maintain_order=True,
        )
        .agg(
            open=pl.col("price").first(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            close=pl.col("price").last(),
            volume=pl.col("size").sum(),
            trades=pl.len().cast(pl.Int64),
            vwap=(pl.col("price") * pl.col("size")).sum() / pl.col("size").sum(),
        )
        .sort(["symbol", "time"])
    )
    assert bars.select(by_hand.columns).drop("vwap").equals(by_hand.drop("vwap"))
    assert (bars["vwap"] - by_hand["vwap"]).abs().max() < 1e-9


async def test_bars_fill_prev_carries_the_close_over_empty_minutes(api: Api) -> None:
    t0 = (SystemClock().now_ns() - 3600 * NS_PER_SECOND) // MINUTE * MINUTE
    trades = [
        Trade(t0 + 5, t0 + 5, "SPY", 600.0, 10, "feed", 1),
        Trade(t0 + 6, t0 + 6, "SPY", 601.0, 5, "feed", 2),
        Trade(t0 + 3 * MINUTE + 1, t0 + 3 * MINUTE + 1, "SPY", 602.0, 1, "feed", 3),
    ]
    await api.feed({Kind.TRADE: to_batch(Kind.TRADE, trades)})
    params = {"symbols": "SPY", "start_time": t0, "end_time": t0 + 4 * MINUTE, "interval": "1m"}
    plain = (
        await api.client.get("/api/v1/ticks/historical", params=params, headers=api.auth())
    ).json()["data"]
    assert [b["time_ns"] for b in plain] == [t0, t0 + 3 * MINUTE]
    first = dict(plain[0])
    assert first.pop("time").endswith(":00.000000000Z") and first.pop("vwap") == pytest.approx(
        600 + 1 / 3
    )
    assert first == {
        "symbol": "SPY",
        "time_ns": t0,
        "open": 600.0,
        "high": 601.0,
        "low": 600.0,
        "close": 601.0,
        "volume": 15.0,
        "trades": 2,
    }
    filled = (
        await api.client.get(
            "/api/v1/ticks/historical", params=params | {"fill": "prev"}, headers=api.auth()
        )
    ).json()["data"]
    assert [(b["time_ns"] - t0) // MINUTE for b in filled] == [0, 1, 2, 3]
    assert [(b["open"], b["close"], b["volume"], b["trades"]) for b in filled[1:3]] == [
        (601.0, 601.0, 0.0, 0)
    ] * 2


async def test_asof_quote_attaches_the_prevailing_bid_and_ask(api: Api) -> None:
    t0 = SystemClock().now_ns() - 600 * NS_PER_SECOND
    quotes = [
        Quote(t0 + 10, t0 + 10, "SPY", 599.99, 3, 600.01, 4, "feed", 1),
        Quote(t0 + 30, t0 + 30, "SPY", 600.04, 5, 600.06, 6, "feed", 2),
    ]
    trades = [
        Trade(t0 + 5, t0 + 5, "SPY", 600.0, 1, "feed", 1),
        Trade(t0 + 20, t0 + 20, "SPY", 600.01, 1, "feed", 2),
        Trade(t0 + 30, t0 + 30, "SPY", 600.06, 1, "feed", 3),
    ]
    await api.feed(
        {Kind.QUOTE: to_batch(Kind.QUOTE, quotes), Kind.TRADE: to_batch(Kind.TRADE, trades)}
    )
    params = {"symbols": "SPY", "start_time": t0, "end_time": t0 + 100, "asof": "quote"}
    data = (
        await api.client.get("/api/v1/ticks/historical", params=params, headers=api.auth())
    ).json()["data"]
    assert [(r["seq"], r["bid"], r["ask"]) for r in data] == [
        (1, None, None),
        (2, 599.99, 600.01),
        (3, 600.04, 600.06),
    ]


async def test_csv_and_parquet_downloads(api: Api) -> None:
    t0 = SystemClock().now_ns() - NS_PER_SECOND
    await api.feed({Kind.TRADE: to_batch(Kind.TRADE, [Trade(t0, t0, "SPY", 600.5, 3, "feed", 1)])})
    params = {"symbols": "SPY", "start_time": t0, "end_time": t0 + 1}
    csv = await api.client.get(
        "/api/v1/ticks/historical", params=params | {"format": "csv"}, headers=api.auth()
    )
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[1].startswith(f"{t0},")
    parquet = await api.client.get(
        "/api/v1/ticks/historical", params=params | {"format": "parquet"}, headers=api.auth()
    )
    import io

    import pyarrow.parquet as pq

    assert pq.read_table(io.BytesIO(parquet.content)).column("price").to_pylist() == [600.5]


async def test_quality_routes_show_quarantine_and_gaps(api: Api) -> None:
    t0 = SystemClock().now_ns() - 120 * NS_PER_SECOND
    quotes = [
        Quote(t0, t0, "SPY", 600.0, 1, 600.01, 1, "feed", 1),
        Quote(t0 + 1, t0 + 1, "SPY", 600.5, 1, 600.01, 1, "feed", 2),
        Quote(t0 + 90 * NS_PER_SECOND, t0, "SPY", 600.0, 1, 600.01, 1, "feed", 3),
    ]
    await api.feed({Kind.QUOTE: to_batch(Kind.QUOTE, quotes)})
    bad = (
        await api.client.get("/api/v1/quality/quarantine?symbols=SPY", headers=api.auth())
    ).json()["data"]
    assert [(r["rule"], r["seq"], r["reason"]) for r in bad] == [
        ("crossed", 2, "bid 600.5 > ask 600.01")
    ]
    gaps = (await api.client.get("/api/v1/quality/gaps", headers=api.auth())).json()["data"]
    assert [(g["gap"], g["symbol"], g["seconds"]) for g in gaps] == [
        ("time", "SPY", pytest.approx(90, abs=0.01))
    ]
    none = await api.client.get("/api/v1/quality/gaps?symbols=QQQ", headers=api.auth())
    assert none.json() == {"data": []}


async def test_replay_streams_events_in_time_order(api: Api) -> None:
    t0 = SystemClock().now_ns() - NS_PER_SECOND
    trades = [Trade(t0 + 2 * i, t0, "SPY", 600.0, 1, "feed", i + 1) for i in range(5)]
    quotes = [Quote(t0 + 2 * i + 1, t0, "SPY", 599.0, 1, 601.0, 1, "feed", i + 1) for i in range(5)]
    await api.feed(
        {Kind.TRADE: to_batch(Kind.TRADE, trades), Kind.QUOTE: to_batch(Kind.QUOTE, quotes)}
    )
    params = {"symbols": "SPY", "start_time": t0, "end_time": t0 + 100, "speed": 0}
    response = await api.client.get("/api/v1/replay", params=params, headers=api.auth())
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    assert [(e["type"], e["ts_event"] - t0) for e in lines] == [
        ("trade" if i % 2 == 0 else "quote", i) for i in range(10)
    ]
    paced = await api.client.get("/api/v1/replay", params=params | {"speed": 1}, headers=api.auth())
    assert len(paced.text.splitlines()) == 10


async def test_client_raises_the_servers_error(api: Api) -> None:
    client = TickClient("http://unused", "tp_00000000_bad")
    client._http = _asgi_sync_bridge(api, token="tp_00000000_bad")  # type: ignore[assignment]
    with pytest.raises(TickClientError) as info:
        await asyncio.to_thread(client.realtime, "SPY")
    assert info.value.status == 401 and info.value.code == "unauthorized"


def _asgi_sync_bridge(api: Api, token: str | None = None) -> object:
    """A sync httpx.Client whose requests run on the test's event loop through ASGI."""
    import httpx

    loop = asyncio.get_running_loop()

    class Bridge(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            async def call() -> httpx.Response:
                response = await api.client.send(
                    api.client.build_request(
                        request.method,
                        str(request.url.copy_with(scheme="http", host="test")),
                        headers=request.headers,
                        content=request.content,
                    )
                )
                await response.aread()
                return response

            response = asyncio.run_coroutine_threadsafe(call(), loop).result(30)
            return httpx.Response(
                response.status_code, headers=response.headers, content=response.content
            )

    return httpx.Client(
        transport=Bridge(),
        base_url="http://test",
        headers={"Authorization": f"Bearer {token or api.read}"},
    )
