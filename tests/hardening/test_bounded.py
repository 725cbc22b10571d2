"""Every response is bounded (issue 12, findings 1 and 5): a request is priced before its
query runs, in every format, and refused with a 400 that names the limit and how to split
it; ``fill=prev`` never invents bars past the last trade (so never past now)."""

from __future__ import annotations

import dataclasses

import pytest

from tickpipe.api.params import Limits
from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.events import Kind, Quote, Trade, to_batch

from .conftest import Api

MINUTE = 60 * NS_PER_SECOND
DAY = 86_400 * NS_PER_SECOND


async def feed_trades(
    api: Api, start_ns: int, n: int, step_ns: int, symbol: str = "SPY", seq0: int = 1
) -> None:
    trades = [
        Trade(
            start_ns + i * step_ns, start_ns + i * step_ns, symbol, 600 + i % 7, 1, "feed", seq0 + i
        )
        for i in range(n)
    ]
    await api.feed({Kind.TRADE: to_batch(Kind.TRADE, trades)})


async def get(api: Api, params: dict[str, object]) -> tuple[int, dict[str, object] | bytes]:
    response = await api.client.get("/api/v1/ticks/historical", params=params, headers=api.auth())
    if response.headers["content-type"].startswith("application/json"):
        return response.status_code, response.json()
    return response.status_code, response.content


async def test_fill_prev_never_goes_past_the_last_trade_or_now(api: Api) -> None:
    now = SystemClock().now_ns()
    t0 = (now - 30 * MINUTE) // MINUTE * MINUTE
    await feed_trades(api, t0 + 5, 3, 2 * MINUTE)  # trades in minutes 0, 2 and 4
    day_start = now // DAY * DAY
    params = {
        "symbols": "SPY",
        "start_time": min(t0, day_start),
        "end_time": day_start + DAY,  # to tomorrow: everything after now is the future
        "interval": "1m",
        "fill": "prev",
    }
    status, body = await get(api, params)
    assert status == 200
    assert isinstance(body, dict)
    times = [(b["time_ns"] - t0) // MINUTE for b in body["data"]]  # type: ignore[index]
    assert times == [0, 1, 2, 3, 4]  # carried between trades, not beyond the last one
    assert max(b["time_ns"] for b in body["data"]) <= now  # type: ignore[index]


async def test_daily_bars_from_1970_to_2100_are_only_the_days_with_trades(api: Api) -> None:
    """Reported: 26,698 future bars."""
    now = SystemClock().now_ns()
    await feed_trades(api, now - 10 * MINUTE, 5, MINUTE)
    params = {
        "symbols": "SPY",
        "start_time": "1970-01-01",
        "end_time": "2100-01-01",
        "interval": "1d",
        "fill": "prev",
    }
    for fmt in ("json", "csv"):
        status, body = await get(api, params | {"format": fmt})
        assert status == 200
        if fmt == "json":
            assert isinstance(body, dict)
            assert len(body["data"]) in (1, 2)  # type: ignore[arg-type]  # 2 only across midnight
        else:
            assert isinstance(body, bytes)
            assert len(body.splitlines()) in (2, 3)


async def test_the_reported_one_second_fill_over_130_years_is_refused_before_it_runs(
    api: Api,
) -> None:
    """Reported: this request grew the server to 24 GB. With a few days of trades stored it
    is priced at (stored span / 1 s) bars and refused with the limit and the way out."""
    now = SystemClock().now_ns()
    for days_ago in (2, 1):
        await feed_trades(api, now - days_ago * DAY, 2, MINUTE, seq0=10 - days_ago * 3)
    await api.pipeline.flush_once(force=True)
    params = {
        "symbols": "SPY",
        "start_time": "1970-01-01",
        "end_time": "2100-01-01",
        "interval": "1s",
        "fill": "prev",
    }
    api.ctx.limits = dataclasses.replace(api.ctx.limits, json_bars=100_000, stream_bars=100_000)
    for fmt in ("json", "csv", "arrow", "parquet"):
        status, body = await get(api, params | {"format": fmt})
        assert status == 400, fmt
        assert isinstance(body, dict)
        error = body["error"]
        assert isinstance(error, dict) and error["code"] == "range_too_large"
        assert "100,000" in error["message"] and "coarser interval" in error["message"]


@pytest.mark.parametrize("fmt", ["csv", "arrow", "parquet"])
async def test_raw_downloads_are_priced_in_rows_times_columns(api: Api, fmt: str) -> None:
    now = SystemClock().now_ns()
    start = now - 10 * MINUTE
    await feed_trades(api, start, 500, NS_PER_SECOND)
    api.ctx.limits = Limits(stream_cells=1000)
    params = {"symbols": "SPY", "start_time": start, "end_time": now, "format": fmt}
    status, body = await get(api, params)
    assert status == 400 and isinstance(body, dict)
    message = body["error"]["message"]  # type: ignore[index]
    assert "500 rows x 11 columns" in message and "1,000" in message
    assert "Split the time range into windows of about" in message
    api.ctx.limits = Limits(stream_cells=500 * 11)
    status, _ = await get(api, params)
    assert status == 200


async def test_as_of_downloads_and_replay_are_priced_too(api: Api) -> None:
    now = SystemClock().now_ns()
    start = now - 10 * MINUTE
    await feed_trades(api, start, 100, NS_PER_SECOND)
    quotes = [
        Quote(start + i, start + i, "SPY", 599.0, 1, 601.0, 1, "feed", i + 1) for i in range(50)
    ]
    await api.feed({Kind.QUOTE: to_batch(Kind.QUOTE, quotes)})
    api.ctx.limits = Limits(stream_cells=100)
    window = {"symbols": "SPY", "start_time": start, "end_time": now}
    status, body = await get(api, window | {"format": "arrow", "asof": "quote"})
    assert status == 400 and "100 rows x 15 columns" in body["error"]["message"]  # type: ignore[index]
    replay = await api.client.get(
        "/api/v1/replay", params=window | {"speed": 0}, headers=api.auth()
    )
    assert replay.status_code == 400 and replay.json()["error"]["code"] == "range_too_large"


async def test_json_bars_are_priced_over_the_stored_span(api: Api) -> None:
    now = SystemClock().now_ns()
    await feed_trades(api, now - 2 * DAY, 3, MINUTE)
    await feed_trades(api, now - 3600 * NS_PER_SECOND, 3, MINUTE, symbol="QQQ")
    params = {"symbols": "SPY,QQQ", "start_time": "2020-01-01", "end_time": "2100-01-01"}
    status, body = await get(api, params | {"interval": "1s"})
    assert status == 400 and isinstance(body, dict)
    assert "format=arrow|parquet|csv" in body["error"]["message"]  # type: ignore[index]
    status, body = await get(api, params | {"interval": "1m"})  # ~3 days x 2 symbols
    assert status == 200
