"""The streamer source in a real pipeline against the fake Schwab: what the fake sends
reaches the hot store, the bus and the lake; drops, denials and notices end as the user
needs them to."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from tickpipe.events import Kind
from tickpipe.pipeline import Pipeline
from tickpipe.sources.base import SourceStatus

from ...fakes.schwab import APP_SECRET, REFRESH_TOKEN, FakeSchwab, ms_now
from .conftest import schwab_settings
from .harness import OPTION, in_hot, lake, open_market, running, state, streaming, until

MS = 1_000_000


async def latest(pipeline: Pipeline, kind: Kind, symbol: str, n: int = 1) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (await pipeline.hot.latest(kind, symbol, n)).to_pylist()
    return rows


def picked(row: dict[str, Any], *names: str) -> tuple[Any, ...]:
    return tuple(row[n] for n in names)


async def drain(pubsub: Any) -> list[dict[str, Any]]:
    """Every event published so far (a pause of half a second ends the stream)."""
    events: list[dict[str, Any]] = []
    while (message := await pubsub.get_message(timeout=0.5)) is not None:
        if message["type"] == "message":
            channel = message["channel"].decode()
            events += [dict(e, channel=channel) for e in orjson.loads(message["data"])]
    return events


@pytest.mark.redis
async def test_every_service_reaches_the_hot_store_the_bus_and_the_lake_as_sent(
    fake: FakeSchwab, tmp_path: Path, redis_url: str
) -> None:
    settings = schwab_settings(
        fake,
        tmp_path,
        redis_url=redis_url,
        schwab_symbols=["SPY", "/ES", OPTION],
        schwab_book_symbols=["AAPL"],
    )
    market = await open_market(fake)
    listener = aioredis.Redis.from_url(redis_url)
    await listener.flushdb()
    pubsub = listener.pubsub()
    await pubsub.subscribe(settings.tick_channel, settings.level2_channel, settings.option_channel)
    try:
        async with running(settings) as pipeline:
            await streaming(pipeline)
            await until(lambda: in_hot(pipeline, Kind.OPTION, OPTION))
            now = ms_now()
            minute = now // 60_000 * 60_000
            await fake.update("LEVELONE_EQUITIES", "SPY", {"1": 600.12, "34": now})  # bid only
            await fake.update(
                "LEVELONE_EQUITIES", "SPY", {"3": 600.16, "8": 1_000_250, "35": now + 1}
            )
            await fake.book(
                "NASDAQ_BOOK", "AAPL", [(230.1, 500, 3), (230.05, 200, 1)], [(230.12, 300, 2)], now
            )
            await fake.bar(
                "CHART_EQUITY",
                "SPY",
                {
                    "1": 400,
                    "2": 600.0,
                    "3": 600.3,
                    "4": 599.9,
                    "5": 600.15,
                    "6": 12345,
                    "7": minute,
                    "8": minute // 86_400_000,
                },
            )
            await fake.bar(
                "CHART_FUTURES",
                "/ES",
                {"1": minute, "2": 6000.0, "3": 6002.0, "4": 5999.75, "5": 6001.25, "6": 789},
            )
            for kind, symbol in [
                (Kind.TRADE, "SPY"),
                (Kind.BOOK, "AAPL"),
                (Kind.BAR, "SPY"),
                (Kind.BAR, "/ES"),
            ]:
                await until(lambda kind=kind, symbol=symbol: in_hot(pipeline, kind, symbol))
            [quote] = await latest(pipeline, Kind.QUOTE, "SPY")
            # the delta carried the bid only: ask and sizes come from the snapshot
            assert picked(quote, "bid", "bid_size", "ask", "ask_size", "ts_event") == (
                600.12,
                300,
                600.2,
                400,
                now * MS,
            )
            assert quote["source"] == "schwab"
            [trade] = await latest(pipeline, Kind.TRADE, "SPY")
            assert picked(trade, "price", "size", "ts_event", "exchange") == (
                600.16,
                250,
                (now + 1) * MS,
                "ARCX",
            )
            [es] = await latest(pipeline, Kind.QUOTE, "/ES")
            spec = market["/ES"]
            assert picked(es, "bid", "bid_size", "ask", "ask_size") == (
                spec["1"],
                spec["4"],
                spec["2"],
                spec["5"],
            )
            [option] = await latest(pipeline, Kind.OPTION, OPTION)
            assert picked(option, "underlying", "strike", "right", "bid", "ask", "last") == (
                "$SPX",
                6000,
                "C",
                31.2,
                31.9,
                31.5,
            )
            assert picked(option, "volume", "open_interest", "delta", "gamma") == (
                120,
                4500,
                0.52,
                0.0012,
            )
            assert option["iv"] == pytest.approx(0.1825)
            book = await latest(pipeline, Kind.BOOK, "AAPL", 10)
            assert [picked(r, "side", "level", "price", "size", "orders") for r in book] == [
                ("B", 0, 230.1, 500, 3),
                ("B", 1, 230.05, 200, 1),
                ("A", 0, 230.12, 300, 2),
            ]
            [bar] = await latest(pipeline, Kind.BAR, "SPY")
            assert picked(bar, "ts_event", "open", "high", "low", "close", "volume") == (
                minute * MS,
                600.0,
                600.3,
                599.9,
                600.15,
                12345,
            )
            status = pipeline.status()
        bus = await drain(pubsub)
    finally:
        await pubsub.aclose()
        await listener.aclose()

    on_bus = {(e["channel"], e["type"], e["symbol"]) for e in bus}
    assert {
        ("ticks", "quote", "SPY"),
        ("ticks", "trade", "SPY"),
        ("ticks", "quote", "/ES"),
        ("level2", "book", "AAPL"),
        ("options", "option", OPTION),
        ("ticks", "bars", "/ES"),
    } <= on_bus
    bus_trade = next(e for e in bus if e["type"] == "trade")
    assert picked(bus_trade, "price", "size", "source") == (600.16, 250, "schwab")

    data = tmp_path / "data"
    quotes = [picked(r, "bid", "ask") for r in lake(data, "quote") if r["symbol"] == "SPY"]
    assert quotes == [(600.1, 600.2), (600.12, 600.2)]
    assert [picked(r, "price", "size") for r in lake(data, "trade")] == [(600.16, 250)]
    assert [r["price"] for r in lake(data, "book")] == [230.1, 230.05, 230.12]
    assert sorted(r["close"] for r in lake(data, "bars")) == [600.15, 6001.25]
    assert [r["symbol"] for r in lake(data, "option")] == [OPTION]

    [source] = [s for s in status["sources"] if s["name"] == "schwab"]
    details = source["details"]
    assert details["subscriptions"] == {
        "LEVELONE_EQUITIES": 1,
        "CHART_EQUITY": 1,
        "LEVELONE_FUTURES": 1,
        "CHART_FUTURES": 1,
        "LEVELONE_OPTIONS": 1,
        "NASDAQ_BOOK": 1,
    }
    assert details["server"] == "fake-1" and details["entitlement"] == "NP"
    assert details["login_time"] and details["last_heartbeat"] and details["reconnects"] == 0
    assert details["access_token_expires_at"] and "refresh_token_warning" in details
    text = orjson.dumps(status).decode()
    for secret in [REFRESH_TOKEN, APP_SECRET, *fake.access_tokens]:
        assert secret not in text


async def test_a_dropped_connection_is_back_within_10s_with_every_subscription_and_a_gap(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    settings = schwab_settings(
        fake, tmp_path, schwab_symbols=["SPY", "/ES", OPTION], schwab_book_symbols=["AAPL"]
    )
    await open_market(fake)
    async with running(settings) as pipeline:
        source = await streaming(pipeline)
        await until(lambda: in_hot(pipeline, Kind.QUOTE, "SPY"))
        before = {s: set(k) for s, k in fake.conns[0].subscriptions.items()}
        assert sum(len(k) for k in before.values()) == 6
        trades, quotes = source.by_kind.get("trade", 0), source.by_kind["quote"]
        dropped = time.monotonic()
        assert await fake.drop() == 1
        # while we are away the market trades: the resubscription snapshot carries it
        moved = {"1": 600.3, "2": 600.4, "3": 600.35, "8": 1_000_900, "34": ms_now()}
        assert await fake.update("LEVELONE_EQUITIES", "SPY", moved) == 0

        def resubscribed() -> bool:
            live = [c for c in fake.conns if c.logged_in]
            return fake.logins == 2 and len(live) == 1 and live[0].subscriptions == before

        await until(resubscribed, timeout=10)
        assert time.monotonic() - dropped < 10

        async def spy_quote_is(bid: float) -> bool:
            rows = await latest(pipeline, Kind.QUOTE, "SPY")
            return bool(rows) and rows[0]["bid"] == bid

        await until(lambda: spy_quote_is(600.3))  # the moved snapshot's quote
        [quote] = await latest(pipeline, Kind.QUOTE, "SPY")
        assert quote["ask"] == 600.4
        await fake.update("LEVELONE_EQUITIES", "SPY", {"3": 600.36, "8": 1_001_000, "35": ms_now()})
        await until(lambda: in_hot(pipeline, Kind.TRADE, "SPY"))
        [trade] = await latest(pipeline, Kind.TRADE, "SPY")
        # the first trade since the snapshot: none was invented from the snapshot itself
        assert picked(trade, "price", "size") == (600.36, 100)
        assert source.by_kind.get("trade", 0) == trades + 1
        assert source.by_kind["quote"] == quotes + 1  # /ES re-sent unchanged: no new quote
        assert source.details["reconnects"] == 1 and source.restarts == 1
        assert "closed" in (source.last_error or "")
    gaps = [g for g in lake(tmp_path / "data", "gaps") if g["gap"] == "outage"]
    assert {(g["kind"], g["symbol"]) for g in gaps} >= {
        ("quote", "SPY"),
        ("quote", "/ES"),
        ("option", OPTION),
    }
    assert all(g["source"] == "schwab" and 0 < g["seconds"] < 10 for g in gaps)


async def test_a_denied_login_stops_the_source_with_a_sentence_and_no_retry_storm(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    fake.deny_login = True
    async with running(schwab_settings(fake, tmp_path, schwab_symbols=["SPY"])) as pipeline:
        await until(lambda: state(pipeline).status is SourceStatus.FAILED)
        error = state(pipeline).last_error or ""
        assert "denied the streamer login" in error and "tickpipe schwab oauth" in error
        assert "\n" not in error
        # one retry with a freshly refreshed token, then the source waits for the user
        assert fake.login_requests == 2 and fake.logins == 0


async def test_an_expired_refresh_token_stops_the_source_with_a_sentence(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    fake.refresh_tokens.clear()
    settings = schwab_settings(
        fake, tmp_path, schwab_symbols=["SPY"], schwab_chain_symbols=["$SPX"]
    )
    async with running(settings) as pipeline:
        for name in ("schwab", "schwab-chains"):
            await until(lambda name=name: state(pipeline, name).status is SourceStatus.FAILED)  # type: ignore[misc]
            error = state(pipeline, name).last_error or ""
            assert "SCHWAB_REFRESH_TOKEN" in error and "tickpipe schwab oauth" in error
        assert fake.login_requests == 0 and len(fake.token_requests) <= 2


async def test_malformed_frames_and_unknown_services_are_quarantined_and_the_stream_goes_on(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    await open_market(fake)
    async with running(schwab_settings(fake, tmp_path, schwab_symbols=["SPY"])) as pipeline:
        source = await streaming(pipeline)
        await until(lambda: in_hot(pipeline, Kind.QUOTE, "SPY"))
        broken = '{"data":[{"service":"LEVELONE_EQUITIES","content":[{"key":"SPY","1":'
        unknown = (
            '{"data":[{"service":"TIMESALE_EQUITY","timestamp":1,"content":[{"key":"SPY","1":2}]}]}'
        )
        extra = '{"data":[{"service":"LEVELONE_EQUITIES","timestamp":1,"content":[{"key":"SPY","77":1}]}]}'
        for frame in (broken, unknown, extra):
            await fake.send_raw(frame)
        await fake.update("LEVELONE_EQUITIES", "SPY", {"1": 600.11, "34": ms_now()})
        await until(lambda: source.by_kind.get("quote", 0) == 2)
        assert source.rejected == 2 and source.counters["unknown_fields"] == 1
        assert source.status is SourceStatus.RUNNING and source.restarts == 0
    quarantined = {r["payload"]: r for r in lake(tmp_path / "data", "quarantine")}
    # a frame that is not JSON is kept whole; an unknown service, as the entry it sent
    entry = orjson.dumps(orjson.loads(unknown)["data"][0]).decode()
    assert set(quarantined) == {broken, entry}
    assert quarantined[broken]["rule"] == "parse_error"
    assert "not JSON" in quarantined[broken]["reason"]
    assert "TIMESALE_EQUITY" in quarantined[entry]["reason"]


async def test_the_symbol_limit_shows_on_status_and_the_rest_streams(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    fake.symbol_limit = 1
    await open_market(fake)
    async with running(
        schwab_settings(fake, tmp_path, schwab_symbols=["SPY", "QQQ", "/ES"])
    ) as pipeline:
        source = await streaming(pipeline)
        await until(lambda: in_hot(pipeline, Kind.QUOTE, "/ES"))
        assert source.details["subscriptions"] == {"LEVELONE_FUTURES": 1}
        errors = source.details["subscription_errors"]
        assert len(errors) == 3 and all("code 19 REACHED_SYMBOL_LIMIT" in e for e in errors)
        assert errors[0].startswith("LEVELONE_EQUITIES SUBS of 2 keys")
        assert source.counters["subscription_errors"] == 3 and source.status is SourceStatus.RUNNING


async def test_another_client_taking_over_three_times_stops_the_source(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    await open_market(fake)
    async with running(schwab_settings(fake, tmp_path, schwab_symbols=["SPY"])) as pipeline:
        for logins in (1, 2, 3):

            def logged_in(n: int = logins) -> bool:
                return fake.logins == n and any(c.logged_in and c.subscriptions for c in fake.conns)

            await until(logged_in)
            await fake.notify_code(12, "Close connection: max connections reached")
        await until(lambda: state(pipeline).status is SourceStatus.FAILED)
        assert "another streamer connection" in (state(pipeline).last_error or "")
        assert state(pipeline).counters["code_12"] == 3


async def test_stop_streaming_reconnects_and_is_shown(fake: FakeSchwab, tmp_path: Path) -> None:
    await open_market(fake)
    async with running(schwab_settings(fake, tmp_path, schwab_symbols=["SPY"])) as pipeline:
        source = await streaming(pipeline)
        await fake.notify_code(30, "Stop streaming due to empty subscription")
        await until(lambda: fake.logins == 2 and source.phase == "streaming")
        assert "STOP_STREAMING" in source.details["last_stream_error"]
        assert source.status is not SourceStatus.FAILED
