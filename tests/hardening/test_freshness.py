"""Freshness (from issue 11): ``quotes/latest`` and ``ticks/realtime`` carry each symbol's
age, and a symbol older than ``stale_after_s`` (or with no data) is marked stale."""

from __future__ import annotations

from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.events import Kind, Quote, Trade, to_batch

from .conftest import Api


async def test_quotes_and_realtime_say_how_old_each_symbol_is(api: Api) -> None:
    now = SystemClock().now_ns()
    stale_after = api.ctx.settings.stale_after_s
    old = now - int((stale_after + 30) * NS_PER_SECOND)
    quotes = [
        Quote(now - NS_PER_SECOND, now, "SPY", 600.0, 1, 600.01, 1, "feed", 1),
        Quote(old, now, "QQQ", 500.0, 1, 500.01, 1, "feed", 1),
    ]
    trades = [Trade(now - 2 * NS_PER_SECOND, now, "SPY", 600.0, 1, "feed", 1)]
    await api.feed(
        {Kind.QUOTE: to_batch(Kind.QUOTE, quotes), Kind.TRADE: to_batch(Kind.TRADE, trades)}
    )

    body = (
        await api.client.get("/api/v1/quotes/latest?symbols=SPY,QQQ,IWM", headers=api.auth())
    ).json()
    by_symbol = {q["symbol"]: q for q in body["data"]}
    assert 0.9 < by_symbol["SPY"]["age_s"] < 5 and by_symbol["SPY"]["stale"] is False
    assert by_symbol["QQQ"]["age_s"] > stale_after and by_symbol["QQQ"]["stale"] is True
    fresh = body["freshness"]
    assert fresh["SPY"]["last_ts_event"] == now - NS_PER_SECOND and not fresh["SPY"]["stale"]
    assert fresh["IWM"] == {"last_ts_event": None, "age_s": None, "stale": True}

    for _ in range(2):  # the second answer comes from the encoded cache: ages still move
        body = (
            await api.client.get("/api/v1/ticks/realtime?symbols=SPY,QQQ", headers=api.auth())
        ).json()
        spy, qqq = body["freshness"]["SPY"], body["freshness"]["QQQ"]
        assert spy["last_ts_event"] == now - NS_PER_SECOND  # the newest of its trades and quotes
        assert 0.9 < spy["age_s"] < 5 and spy["stale"] is False
        assert qqq["last_ts_event"] == old and qqq["stale"] is True
