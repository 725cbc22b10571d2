"""The DTC client against a local DTC server, in both encodings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tickpipe.clock import FakeClock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError, TransportError
from tickpipe.events import Kind, TradeFlag
from tickpipe.sources.sierra import build
from tickpipe.sources.sierra.dtc import DtcClient

from ...fakes.dtc import FakeDtcServer
from .fakectx import FakeContext

ENCODINGS = ["binary", "json"]
RECV_NS = 1_764_169_200 * 10**9
T = 1_764_169_000  # Unix seconds of the updates below


def make_settings(server: FakeDtcServer, **extra: Any) -> Settings:
    values: dict[str, Any] = dict(
        sierra_dtc_host="127.0.0.1",
        sierra_dtc_port=server.port,
        sierra_dtc_encoding=server.encoding,
        sierra_dtc_symbols="ESZ25-CME,NQZ25-CME",
        sierra_dtc_heartbeat_s=0.1,
    )
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def client(
    server: FakeDtcServer, ctx: FakeContext, **extra: Any
) -> AsyncIterator[asyncio.Task[None]]:
    ctx.clock = FakeClock(RECV_NS)
    (source,) = build(make_settings(server, **extra), ctx.clock)
    task = asyncio.create_task(source.run(ctx))
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises((asyncio.CancelledError, TransportError)):
            await task


def subscribed(server: FakeDtcServer) -> Any:
    return lambda: len(server.subscribed) == 2


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_logon_subscribe_and_every_trade_variant(encoding: str) -> None:
    async with FakeDtcServer(encoding) as server:  # type: ignore[arg-type]
        ctx = FakeContext(name="sierra-dtc")
        async with client(server, ctx):
            await server.wait_for(subscribed(server))
            es = server.subscribed["ESZ25-CME"]
            await server.push(
                {"Type": 107, "SymbolID": es, "AtBidOrAsk": 2, "Price": 6000.25, "Volume": 3.0, "DateTime": T + 0.125},
                {"Type": 112, "SymbolID": es, "AtBidOrAsk": 1, "Price": 6000.0, "Volume": 2.0, "DateTime": T},
                {"Type": 137, "SymbolID": es, "AtBidOrAsk": 2, "UnbundledTradeIndicator": 1, "Price": 6000.5, "Volume": 4, "DateTime": T + 0.25},
                {"Type": 146, "SymbolID": es, "AtBidOrAsk": 2, "UnbundledTradeIndicator": 2, "Price": 6000.5, "Volume": 1, "DateTime": T * 10**6 + 250_001},
                {"Type": 142, "SymbolID": es, "AtBidOrAsk": 0, "Price": 6000.75, "Volume": 5},
                {"Type": 147, "SymbolID": es, "AtBidOrAsk": 1, "Price": 6001.0, "Volume": 6.0, "DateTime": T * 10**6 + 500_000},
            )  # fmt: skip
            await ctx.wait_for(lambda: len(ctx.rows(Kind.TRADE)) == 6)
        trades = ctx.rows(Kind.TRADE)
        assert [(t["price"], t["size"]) for t in trades] == [
            (6000.25, 3), (6000.0, 2), (6000.5, 4), (6000.5, 1), (6000.75, 5), (6001.0, 6)
        ]  # fmt: skip
        assert [t["aggressor"] for t in trades] == ["B", "S", "B", "B", None, "S"]
        assert [t["flags"] for t in trades] == [
            None,
            None,
            TradeFlag.FIRST_SUB_TRADE,
            TradeFlag.LAST_SUB_TRADE,
            0,
            0,
        ]
        assert [t["ts_event"] for t in trades] == [
            T * 10**9 + 125_000_000,
            T * 10**9,
            T * 10**9 + 250_000_000,
            T * 10**9 + 250_001_000,
            RECV_NS,  # no timestamp on the wire: the receive time
            T * 10**9 + 500_000_000,
        ]
        assert {t["symbol"] for t in trades} == {"/ESZ25"} and [t["seq"] for t in trades] == [
            1,
            2,
            3,
            4,
            5,
            6,
        ]
        logon = next(msg for msg in server.received if msg["Type"] == 1)
        assert logon["ProtocolVersion"] == 8 and logon["HeartbeatIntervalInSeconds"] == 1
        request = next(msg for msg in server.received if msg["Type"] == 101)
        assert request["RequestAction"] == 1 and request["Symbol"] == "ESZ25-CME"
        assert ctx.phases[-1] == "subscribed"


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_snapshot_and_every_bid_ask_variant_keep_both_sides(encoding: str) -> None:
    unset = 1.7976931348623157e308
    snapshot = {
        "BidPrice": 6000.0,
        "BidQuantity": 10.0,
        "AskPrice": 6000.25,
        "AskQuantity": 12.0,
        "BidAskDateTime": T + 0.5,
        "SessionHighPrice": 6010.0,
        "TradingStatus": 2,
    }
    async with FakeDtcServer(encoding, snapshots={"ESZ25-CME": snapshot}) as server:  # type: ignore[arg-type]
        ctx = FakeContext(name="sierra-dtc")
        async with client(server, ctx):
            await ctx.wait_for(lambda: len(ctx.rows(Kind.QUOTE)) == 1)
            es = server.subscribed["ESZ25-CME"]
            await server.push(
                {"Type": 108, "SymbolID": es, "BidPrice": 6000.25, "BidQuantity": 3.0, "AskPrice": unset, "AskQuantity": 0.0, "DateTime": T + 1},
                {"Type": 117, "SymbolID": es, "BidPrice": 3.4028234663852886e38, "BidQuantity": 0.0, "AskPrice": 6000.5, "AskQuantity": 7.0, "DateTime": T + 2},
                {"Type": 144, "SymbolID": es, "BidPrice": 6000.5, "BidQuantity": 1.0, "AskPrice": 6000.75, "AskQuantity": 2.0, "DateTime": (T + 3) * 10**6 + 7},
                {"Type": 143, "SymbolID": es, "BidPrice": 6000.25, "BidQuantity": 4, "AskPrice": 6000.5, "AskQuantity": 5},
                {"Type": 148, "SymbolID": es, "BidPrice": 6000.0, "BidQuantity": 8.0, "AskPrice": 6000.25, "AskQuantity": 9.0, "DateTime": (T + 4) * 10**6},
            )  # fmt: skip
            await ctx.wait_for(lambda: len(ctx.rows(Kind.QUOTE)) == 6)
        quotes = [(q["bid"], q["bid_size"], q["ask"], q["ask_size"]) for q in ctx.rows(Kind.QUOTE)]
        assert quotes == [
            (6000.0, 10.0, 6000.25, 12.0),  # the snapshot
            (6000.25, 3.0, 6000.25, 12.0),  # bid only: the ask stays
            (6000.25, 3.0, 6000.5, 7.0),  # ask only (FLT_MAX bid)
            (6000.5, 1.0, 6000.75, 2.0),
            (6000.25, 4.0, 6000.5, 5.0),
            (6000.0, 8.0, 6000.25, 9.0),
        ]
        stamps = [q["ts_event"] for q in ctx.rows(Kind.QUOTE)]
        assert stamps == [
            T * 10**9 + 500_000_000, (T + 1) * 10**9, (T + 2) * 10**9, (T + 3) * 10**9 + 7000, RECV_NS, (T + 4) * 10**9,
        ]  # fmt: skip
        assert ctx.details["symbols"]["/ESZ25"]["session_high"] == 6010.0
        assert ctx.details["symbols"]["/ESZ25"]["trading_status"] == "open"


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_market_data_reject_is_shown_with_its_text_and_the_connection_stays(
    encoding: str,
) -> None:
    text = "Market data request not allowed. CME data cannot be redistributed."
    async with FakeDtcServer(encoding, rejects={"ESZ25-CME": text, "NQZ25-CME": text}) as server:  # type: ignore[arg-type]
        ctx = FakeContext(name="sierra-dtc")
        async with client(server, ctx) as task:
            await ctx.wait_for(lambda: len(ctx.details.get("rejected", {})) == 2)
            beats = ctx.counters.get("heartbeats", 0)
            await ctx.wait_for(lambda: ctx.counters.get("heartbeats", 0) > beats + 2)
            assert not task.done()
        assert ctx.details["rejected"] == {"/ESZ25": text, "/NQZ25": text}
        assert ctx.phases[-1].startswith(
            "market data refused for every symbol: /ESZ25: Market data"
        )
        assert "SIERRA_SCID_DIR" in ctx.phases[-1]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_heartbeats_both_ways_and_their_loss_ends_the_attempt(encoding: str) -> None:
    async with FakeDtcServer(encoding) as server:  # type: ignore[arg-type]
        ctx = FakeContext(name="sierra-dtc")
        (source,) = build(make_settings(server), FakeClock(RECV_NS))
        task = asyncio.create_task(source.run(ctx))
        await ctx.wait_for(lambda: ctx.alive_calls >= 3)
        await server.wait_for(lambda: sum(m["Type"] == 3 for m in server.received) >= 2)
        server.silent = True
        with pytest.raises(TransportError, match="no heartbeat from the Sierra Chart DTC server"):
            await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_refused_logon_stops_with_the_settings_to_check(encoding: str) -> None:
    async with FakeDtcServer(
        encoding, logon_result=2, logon_text="Invalid username or password"
    ) as server:  # type: ignore[arg-type]
        (source,) = build(make_settings(server, sierra_dtc_username="me"), FakeClock())
        with pytest.raises(ConfigError, match=r"Invalid username or password.*SIERRA_DTC_USERNAME"):
            await source.run(FakeContext())
        logon = next(msg for msg in server.received if msg["Type"] == 1)
        assert logon["Username"] == "me"


async def test_a_server_fixed_to_json_that_ignores_the_encoding_request_still_works() -> None:
    async with FakeDtcServer("json", encoding_request="ignored") as server:
        ctx = FakeContext(name="sierra-dtc")
        async with client(server, ctx):
            await server.wait_for(subscribed(server))


async def test_a_server_that_wants_the_encoding_request_in_json_gets_it_on_the_next_attempt() -> (
    None
):
    async with FakeDtcServer("json", encoding_request="json") as server:
        source = DtcClient(make_settings(server), FakeClock())
        with pytest.raises(TransportError, match="encoding request failed"):
            await source.run(FakeContext())
        ctx = FakeContext(name="sierra-dtc")
        task = asyncio.create_task(source.run(ctx))
        await server.wait_for(subscribed(server))
        assert ctx.details["encoding_request"] == "json"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_server_in_another_encoding_is_a_settings_error() -> None:
    async with FakeDtcServer("json", answer_encoding=0) as server:
        (source,) = build(make_settings(server), FakeClock())
        with pytest.raises(
            ConfigError, match="talks encoding binary, not json: set SIERRA_DTC_ENCODING=binary"
        ):
            await source.run(FakeContext())


async def test_a_frame_that_is_not_json_is_quarantined_and_the_stream_goes_on() -> None:
    async with FakeDtcServer("json") as server:
        ctx = FakeContext(name="sierra-dtc")
        async with client(server, ctx):
            await server.wait_for(subscribed(server))
            es = server.subscribed["ESZ25-CME"]
            trade = {
                "Type": 107,
                "SymbolID": es,
                "AtBidOrAsk": 2,
                "Price": 6000.25,
                "Volume": 1.0,
                "DateTime": T,
            }
            await server.push(raw=b'{"Type":107,"SymbolID":\0')
            await server.push(trade)
            await ctx.wait_for(lambda: len(ctx.rows(Kind.TRADE)) == 1)
        ((raw, reason, _),) = ctx.rejected
        assert raw == '{"Type":107,"SymbolID":' and "not JSON" in reason


async def test_dtc_without_symbols_is_a_settings_error() -> None:
    settings = Settings(_env_file=None, sierra_dtc_host="127.0.0.1")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="SIERRA_DTC_SYMBOLS"):
        build(settings, FakeClock())


async def test_the_dtc_client_continues_the_pipelines_sequence() -> None:
    async with FakeDtcServer("binary") as server:
        ctx = FakeContext(name="sierra-dtc", sequences={(Kind.TRADE, "/ESZ25"): (41, 0)})
        async with client(server, ctx):
            await server.wait_for(subscribed(server))
            es = server.subscribed["ESZ25-CME"]
            await server.push(
                {
                    "Type": 107,
                    "SymbolID": es,
                    "AtBidOrAsk": 1,
                    "Price": 6000.0,
                    "Volume": 1.0,
                    "DateTime": T,
                }
            )
            await ctx.wait_for(lambda: len(ctx.rows(Kind.TRADE)) == 1)
        assert ctx.rows(Kind.TRADE)[0]["seq"] == 42


async def test_a_message_for_a_symbol_never_requested_is_quarantined_not_its_neighbours() -> None:
    async with FakeDtcServer("binary") as server:
        ctx = FakeContext(name="sierra-dtc")
        async with client(server, ctx):
            await server.wait_for(subscribed(server))
            es = server.subscribed["ESZ25-CME"]
            await server.push(
                {"Type": 107, "SymbolID": 99, "AtBidOrAsk": 1, "Price": 1.0, "Volume": 1.0, "DateTime": T},
                {"Type": 107, "SymbolID": es, "AtBidOrAsk": 1, "Price": 6000.0, "Volume": 1.0, "DateTime": T},
            )  # fmt: skip
            await ctx.wait_for(lambda: len(ctx.rows(Kind.TRADE)) == 1 and len(ctx.rejected) == 1)
        assert "SymbolID 99, which we never requested" in ctx.rejected[0][1]
        assert ctx.rows(Kind.TRADE)[0]["price"] == 6000.0


async def test_a_reject_reaches_the_pipelines_status_through_the_registry(tmp_path: Any) -> None:
    from tickpipe.pipeline import Pipeline

    text = "Market data request not allowed."
    async with FakeDtcServer("json", rejects={"ESZ25-CME": text, "NQZ25-CME": text}) as server:
        settings = make_settings(server, data_dir=tmp_path / "data")
        pipeline = Pipeline(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(pipeline.run(stop))

        def dtc() -> dict[str, Any]:
            found = [s for s in pipeline.status()["sources"] if s["name"] == "sierra-dtc"]
            return found[0] if found else {}

        async with asyncio.timeout(10):
            while len(dtc().get("details", {}).get("rejected", {})) < 2:
                await asyncio.sleep(0.02)  # the status offers nothing to await
        status = dtc()
        assert status["status"] == "running"
        assert status["phase"].startswith(f"market data refused for every symbol: /ESZ25: {text}")
        assert "simulator" not in {s["name"] for s in pipeline.status()["sources"]}
        stop.set()
        await task
