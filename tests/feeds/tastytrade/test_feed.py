"""The tastytrade source against the local fake: handshake, data into the stores, keepalives."""

from __future__ import annotations

import datetime as dt
import time

import orjson

from tickpipe.events import Kind
from tickpipe.sources.base import SourceStatus

from ...fakes.dxlink import FakeTastytrade
from .conftest import Start, now_ms


async def test_the_whole_handshake_in_order(fake: FakeTastytrade, start: Start) -> None:
    run = await start(fake, tastytrade_symbols=["SPY", "$SPX"])
    await fake.until(lambda: bool(fake.connections) and len(fake.connections[0].subscriptions) == 6)
    conn = fake.connections[0]
    kinds = [m["type"] for m in conn.received if m["type"] != "KEEPALIVE"]
    assert kinds == ["SETUP", "AUTH", "CHANNEL_REQUEST", "FEED_SETUP", "FEED_SUBSCRIPTION"]
    setup, auth, channel, feed_setup, subscription = [
        m for m in conn.received if m["type"] != "KEEPALIVE"
    ]
    assert setup["keepaliveTimeout"] == setup["acceptKeepaliveTimeout"] == 60
    assert auth["token"] in fake.quote_tokens  # the token /api-quote-tokens issued
    assert channel["channel"] % 2 == 1 and channel["service"] == "FEED"
    assert feed_setup["acceptDataFormat"] == "COMPACT"
    assert subscription["reset"] is True
    assert conn.subscriptions == {
        (t, s) for t in ("Quote", "Trade", "TimeAndSale") for s in ("SPY", "SPX")
    }
    # REST: the refresh-token grant first, with the User-Agent tastytrade requires
    (first, *rest) = fake.rest_calls
    assert first[:2] == ("POST", "/oauth/token") and first[2]["user-agent"].startswith("tickpipe/")
    assert ("GET", "/api-quote-tokens") in [call[:2] for call in rest]
    await run.eventually(lambda: run.status()["phase"] == "subscribed")
    details = run.status()["details"]
    assert details["dxlink_state"] == "subscribed"
    assert details["dxlink_channel"] == channel["channel"]
    assert details["dxlink_subscriptions"] == 6
    assert details["dxlink_url"] == fake.ws_url and details["dxlink_reconnects"] == 0


async def test_every_event_type_reaches_the_hot_store_and_the_lake(start: Start) -> None:
    expiry = dt.date.today() + dt.timedelta(days=30)
    # the server answers FEED_SETUP with its own field order
    order = {
        "Quote": ["askSize", "askPrice", "eventSymbol", "bidSize", "bidPrice", "bidTime", "askTime"],
        "TimeAndSale": ["price", "eventFlags", "size", "time", "index", "eventSymbol", "aggressorSide"],
        "Greeks": ["gamma", "eventSymbol", "delta", "volatility", "index", "eventFlags"],
        "Summary": ["openInterest", "eventSymbol"],
        "Trade": ["dayVolume", "eventSymbol", "price", "size"],
    }  # fmt: skip
    async with FakeTastytrade(event_fields=order, chains={"SPY": [(expiry, 600.0)]}) as fake:
        t = now_ms()
        call, put = f".SPY{expiry:%y%m%d}C600", f".SPY{expiry:%y%m%d}P600"
        fake.publish(
            "Quote",
            "SPY",
            bidPrice=600.01,
            askPrice=600.03,
            bidSize=300,
            askSize=200,
            bidTime=t,
            askTime=t,
        )
        fake.trade("SPY", 600.02, 100, t - 2, aggressorSide="BUY")
        fake.trade("SPY", 600.03, 50, t - 1, aggressorSide="SELL")
        fake.publish("Trade", "SPY", price=600.03, size=50, dayVolume=1.25e7)
        for symbol, bid in ((call, 5.1), (put, 4.9)):
            fake.publish("Quote", symbol, bidPrice=bid, askPrice=bid + 0.2, bidSize=10, askSize=12)
            fake.publish("Summary", symbol, openInterest=1500 if symbol == call else 900)
            fake.publish("Greeks", symbol, index=1, volatility=0.18, delta=0.5, gamma=0.02)
        fake.publish("Trade", call, price=5.15, size=1, dayVolume=321)
        run = await start(fake, tastytrade_chain_symbols=["SPY"])
        watch = run.watch
        await watch.until(
            lambda: (
                len(watch.rows[Kind.TRADE]) == 2
                and bool(watch.rows[Kind.QUOTE])
                and {r["symbol"] for r in watch.rows[Kind.OPTION]}
                == {f"SPY   {expiry:%y%m%d}C00600000", f"SPY   {expiry:%y%m%d}P00600000"}
            )
        )
        quote = (await run.get("/api/v1/ticks/realtime?symbols=SPY&types=quote"))["data"][0]
        assert (quote["bid"], quote["ask"], quote["bid_size"], quote["ask_size"]) == (
            600.01, 600.03, 300.0, 200.0,
        )  # fmt: skip
        assert quote["ts_event"] == t * 1_000_000 and quote["source"] == "tastytrade"
        trades = (await run.get("/api/v1/ticks/realtime?symbols=SPY&types=trade"))["data"]
        assert [(r["price"], r["size"], r["aggressor"]) for r in trades] == [
            (600.02, 100.0, "B"),
            (600.03, 50.0, "S"),
        ]
        assert run.feed.decoder.last_trades["SPY"].day_volume == 1.25e7
        options = {r["right"]: r for r in watch.rows[Kind.OPTION]}
        assert options["C"]["open_interest"] == 1500.0 and options["P"]["open_interest"] == 900.0
        assert (options["C"]["bid"], options["C"]["last"], options["C"]["volume"]) == (
            5.1,
            5.15,
            321.0,
        )
        assert (options["C"]["iv"], options["C"]["gamma"], options["C"]["underlying"]) == (
            0.18,
            0.02,
            "SPY",
        )

        lake_trades = (await run.lake("trade")).to_pylist()
        assert [(r["price"], r["seq"]) for r in lake_trades] == [(600.02, 1), (600.03, 2)]
        lake_quote = (await run.lake("quote")).to_pylist()[0]
        assert (lake_quote["bid"], lake_quote["ask"]) == (600.01, 600.03)
        lake_options = (await run.lake("option")).to_pylist()
        assert {r["open_interest"] for r in lake_options} == {1500.0, 900.0}

        # a mid-session switch to FULL data on the same channel is decoded too
        fake.full_format()
        fake.publish("Quote", "SPY", bidPrice=600.05, askPrice=600.07, bidSize=1, askSize=2)
        await watch.until(lambda: watch.rows[Kind.QUOTE][-1]["bid"] == 600.05)


async def test_gex_answers_from_tastytrade_data(start: Start) -> None:
    expiry = dt.date.today() + dt.timedelta(days=21)
    strikes = [590.0, 595.0, 600.0, 605.0, 610.0]
    # open interest: calls heaviest at 605, puts at 595 - those are the walls
    call_oi = {590.0: 100, 595.0: 200, 600.0: 500, 605.0: 5000, 610.0: 300}
    put_oi = {590.0: 400, 595.0: 6000, 600.0: 700, 605.0: 100, 610.0: 50}
    async with FakeTastytrade(chains={"SPY": [(expiry, k) for k in strikes]}) as fake:
        fake.publish("Quote", "SPY", bidPrice=599.99, askPrice=600.01, bidSize=1, askSize=1)
        for k in strikes:
            for right, oi in (("C", call_oi[k]), ("P", put_oi[k])):
                symbol = f".SPY{expiry:%y%m%d}{right}{k:.0f}"
                fake.publish("Quote", symbol, bidPrice=2.0, askPrice=2.2, bidSize=1, askSize=1)
                fake.publish("Summary", symbol, openInterest=oi)
                fake.publish("Greeks", symbol, index=1, volatility=0.2, delta=0.5, gamma=0.01)
        run = await start(fake, tastytrade_symbols=[], tastytrade_chain_symbols=["SPY"])
        await run.watch.until(lambda: len({r["symbol"] for r in run.watch.rows[Kind.OPTION]}) == 10)
        await run.pipeline.hub.fanned_out()
        run.pipeline.gex.recompute("SPY")
        body = await run.get("/api/v1/gex/SPY")
    assert body["spot"] == 600.0 and body["contracts"] == 10
    assert (body["call_wall"], body["put_wall"]) == (605.0, 595.0)


async def test_a_nan_size_is_missing_and_the_quote_keeps_its_prices(
    fake: FakeTastytrade, start: Start
) -> None:
    run = await start(fake)
    await fake.until(lambda: bool(fake.connections) and bool(fake.connections[0].subscriptions))
    fake.publish("Quote", "SPY", bidPrice=600.0, askPrice=600.2, bidSize="NaN", askSize=3.0)
    fake.publish("Quote", "SPY", bidPrice="NaN", askPrice=600.3, bidSize=1.0, askSize=3.0)
    await run.watch.until(lambda: len(run.watch.rows[Kind.QUOTE]) == 2)
    first, second = run.watch.rows[Kind.QUOTE]
    assert (first["bid"], first["ask"], first["bid_size"], first["ask_size"]) == (
        600.0, 600.2, None, 3.0,
    )  # fmt: skip
    assert (second["bid"], second["ask"]) == (None, 600.3)  # that side is absent
    assert run.pipeline.hub.quarantined == 0


async def test_a_short_server_keepalive_timeout_is_honoured(start: Start) -> None:
    async with FakeTastytrade(keepalive_timeout_s=0.6) as fake:
        run = await start(fake)
        await fake.until(
            lambda: bool(fake.connections) and fake.connections[0].keepalives >= 15, 10
        )
        conn = fake.connections[0]
        assert conn.closed_by_server is None and len(fake.connections) == 1
        assert max(conn.client_gaps) < 0.6  # never let the server's timeout run out
        assert run.state.restarts == 0
        assert run.status()["details"]["dxlink_keepalive_interval_s"] <= 0.2


async def test_a_silent_server_is_cut_off_and_reconnected(start: Start) -> None:
    async with FakeTastytrade() as fake:
        run = await start(fake, tastytrade_keepalive_timeout_s=0.5)
        await fake.until(
            lambda: len(fake.connections) == 1 and bool(fake.connections[0].subscriptions)
        )
        fake.silent = True
        started = time.monotonic()
        await fake.until(lambda: len(fake.connections) == 2)
        fake.silent = False
        assert time.monotonic() - started < 3
        await fake.until(lambda: bool(fake.connections[1].subscriptions))
        assert "silent" in (run.state.last_error or "")
        assert run.status()["details"]["dxlink_reconnects"] == 1


async def test_a_dropped_connection_comes_back_within_10s_with_everything(start: Start) -> None:
    async with FakeTastytrade() as fake:
        t = now_ms()
        fake.trade("SPY", 600.0, 10, t - 3)
        fake.trade("SPY", 600.1, 20, t - 2)
        run = await start(fake, tastytrade_symbols=["SPY", "QQQ"])
        watch = run.watch
        await watch.until(lambda: len(watch.rows[Kind.TRADE]) == 2)
        before = fake.connections[0].subscriptions
        dropped = time.monotonic()
        await fake.drop()
        await fake.until(
            lambda: len(fake.connections) == 2 and fake.connections[1].subscriptions == before, 10
        )
        assert time.monotonic() - dropped < 10
        # the tape snapshot comes again on the new connection: only new prints are trades
        fake.trade("SPY", 600.2, 30, t - 1)
        await watch.until(lambda: len(watch.rows[Kind.TRADE]) == 3)
        await fake.until(lambda: fake.connections[1].subscription_messages >= 1)
        trades = (await run.lake("trade")).to_pylist()
        assert [(r["price"], r["seq"]) for r in trades] == [(600.0, 1), (600.1, 2), (600.2, 3)]
        gaps = (await run.lake("gaps")).to_pylist()
        outage = [g for g in gaps if g["gap"] == "outage" and g["symbol"] == "SPY"]
        assert outage and outage[0]["source"] == "tastytrade"
        assert outage[0]["end_ns"] > outage[0]["start_ns"]
        assert run.status()["details"]["dxlink_reconnects"] == 1
        assert run.feed.decoder.tape.stats.duplicates == 2


async def test_bad_frames_are_quarantined_and_the_stream_goes_on(
    fake: FakeTastytrade, start: Start
) -> None:
    run = await start(fake)
    await fake.until(lambda: bool(fake.connections) and bool(fake.connections[0].subscriptions))
    await fake.send_raw("this is not json")
    await fake.send_raw('{"type":"FEED_DATA","channel":3,"data":["Quote",["SPY",1.0]]}')
    await fake.send_raw('{"type":"FEED_DATA","channel":3,"data":["Profile",["SPY","x"]]}')
    fake.publish("Quote", "SPY", bidPrice=1.0, askPrice=1.1, bidSize=1, askSize=1)
    await run.watch.until(lambda: bool(run.watch.rows[Kind.QUOTE]))
    await run.eventually(lambda: run.pipeline.hub.quarantined >= 2)
    rows = (await run.lake("quarantine")).to_pylist()
    payloads = {r["payload"]: r for r in rows}
    assert payloads["this is not json"]["rule"] == "parse_error"
    broken = payloads['{"type":"FEED_DATA","channel":3,"data":["Quote",["SPY",1.0]]}']
    assert "not whole events" in broken["reason"] and broken["source"] == "tastytrade"
    assert run.status()["counters"]["unknown_event_type"] == 1
    assert len(fake.connections) == 1


async def test_server_errors_are_logged_counted_and_shown(
    fake: FakeTastytrade, start: Start
) -> None:
    run = await start(fake)
    await fake.until(lambda: bool(fake.connections) and bool(fake.connections[0].subscriptions))
    await fake.error("BAD_ACTION", "Unknown event type: Foo")
    fake.publish("Quote", "SPY", bidPrice=1.0, askPrice=1.1, bidSize=1, askSize=1)
    await run.watch.until(lambda: bool(run.watch.rows[Kind.QUOTE]))
    status = run.status()
    assert status["counters"]["server_errors"] == 1
    (error,) = status["details"]["dxlink_errors"]
    assert (error["error"], error["message"]) == ("BAD_ACTION", "Unknown event type: Foo")
    assert status["status"] == SourceStatus.RUNNING


async def test_large_subscriptions_go_in_batches(start: Start) -> None:
    expiry = dt.date.today() + dt.timedelta(days=10)
    strikes = [500.0 + k for k in range(50)]
    async with FakeTastytrade(
        max_subscription_items=100, chains={"SPY": [(expiry, k) for k in strikes]}
    ) as fake:
        await start(fake, tastytrade_chain_symbols=["SPY"], tastytrade_subscription_batch=80)
        await fake.until(
            lambda: bool(fake.connections) and len(fake.connections[0].subscriptions) == 403
        )
        assert fake.connections[0].subscription_messages == 6  # 403 items, 80 a message


async def test_a_message_too_long_is_retried_in_smaller_batches(start: Start) -> None:
    expiry = dt.date.today() + dt.timedelta(days=10)
    strikes = [500.0 + k for k in range(25)]
    async with FakeTastytrade(
        max_subscription_items=60, chains={"SPY": [(expiry, k) for k in strikes]}
    ) as fake:
        run = await start(fake, tastytrade_chain_symbols=["SPY"], tastytrade_subscription_batch=200)
        await fake.until(lambda: any(len(c.subscriptions) == 203 for c in fake.connections), 10)
        assert [c.closed_by_server for c in fake.connections[:2]] == ["1009", "1009"]
        assert "1009" in (run.state.last_error or "")


async def test_the_quote_token_is_renewed_on_the_live_connection(start: Start) -> None:
    async with FakeTastytrade(quote_token_ttl_s=1.6) as fake:
        await start(fake)
        await fake.until(
            lambda: (
                bool(fake.connections)
                and len([m for m in fake.connections[0].received if m["type"] == "AUTH"]) == 2
            ),
            10,
        )
        first, second = [m["token"] for m in fake.connections[0].received if m["type"] == "AUTH"]
        assert first != second and len(fake.connections) == 1


async def test_futures_are_looked_up_and_keep_the_name_asked_for(start: Start) -> None:
    futures = {
        "ES": [
            {"symbol": "/ESH6", "streamer-symbol": "/ESH26:XCME", "active-month": False,
             "expiration-date": "2026-03-20"},
            {"symbol": "/ESZ5", "streamer-symbol": "/ESZ25:XCME", "active-month": True,
             "expiration-date": "2025-12-19"},
        ]
    }  # fmt: skip
    async with FakeTastytrade(futures=futures) as fake:
        fake.publish(
            "Quote", "/ESZ25:XCME", bidPrice=6000.25, askPrice=6000.5, bidSize=3, askSize=4
        )
        fake.publish(
            "Quote", "/ESH26:XCME", bidPrice=6050.0, askPrice=6050.25, bidSize=1, askSize=2
        )
        run = await start(fake, tastytrade_symbols=["/ES", "/ESH26"])
        await run.watch.until(lambda: len(run.watch.rows[Kind.QUOTE]) == 2)
        quotes = {q["symbol"]: q["bid"] for q in run.watch.rows[Kind.QUOTE]}
        assert quotes == {"/ES": 6000.25, "/ESH26": 6050.0}  # the front month under /ES


async def test_an_underlying_without_a_chain_is_a_settings_error(
    fake: FakeTastytrade, start: Start
) -> None:
    run = await start(fake, tastytrade_chain_symbols=["XYZ"])
    await run.eventually(lambda: run.state.status is SourceStatus.FAILED)
    assert "TASTYTRADE_CHAIN_SYMBOLS" in (run.state.last_error or "")


async def test_the_fake_refuses_a_client_that_skips_a_step(fake: FakeTastytrade) -> None:
    """What makes the handshake test above meaningful: out of order is refused."""
    from websockets.asyncio.client import connect

    async with connect(fake.ws_url) as ws:
        await ws.send('{"type":"SETUP","channel":0,"version":"0.1-test/0","keepaliveTimeout":60}')
        await ws.send('{"type":"CHANNEL_REQUEST","channel":1,"service":"FEED","parameters":{}}')
        replies = [orjson.loads(frame) async for frame in ws]
    assert replies[-1] == {
        "type": "ERROR",
        "channel": 0,
        "error": "UNAUTHORIZED",
        "message": "CHANNEL_REQUEST before AUTHORIZED",
    }
    assert fake.connections[0].closed_by_server == "UNAUTHORIZED"


async def test_a_burst_of_frames_is_decoded_together_and_every_value_lands(
    fake: FakeTastytrade, start: Start
) -> None:
    """Frames that arrive together are decoded in one call (the decoder's fixed cost is
    paid once), with exactly the values and order of decoding them one by one."""
    run = await start(fake)
    await fake.until(lambda: bool(fake.connections) and bool(fake.connections[0].subscriptions))
    bids = [500 + i / 100 for i in range(300)]
    for bid in bids:  # 300 frames sent back to back
        fake.publish("Quote", "SPY", bidPrice=bid, askPrice=bid + 0.02, bidSize=1, askSize=2)

    def burst() -> list[dict[str, object]]:
        return [r for r in run.watch.rows[Kind.QUOTE] if float(r["bid"]) >= 500]  # type: ignore[arg-type]

    await run.watch.until(lambda: len(burst()) >= len(bids))
    assert [(r["bid"], r["ask"], r["bid_size"], r["ask_size"]) for r in burst()] == [
        (bid, bid + 0.02, 1.0, 2.0) for bid in bids
    ]
    seqs = [r["seq"] for r in burst()]
    assert seqs == list(range(int(seqs[0]), int(seqs[0]) + len(bids)))  # type: ignore[call-overload]
    assert run.status()["batches"] < len(bids)
