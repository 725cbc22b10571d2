"""The live WebSocket stream: authenticated, filtered, and a slow reader is told and dropped."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets

from tickpipe.api.routes import stream as stream_route
from tickpipe.client import TickClient
from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.events import Kind, Quote, Trade, to_batch

from .conftest import Api


def ws_url(api: Api, query: str) -> str:
    return api.base_url.replace("http://", "ws://") + "/api/v1/stream?" + query


async def wait_subscribers(api: Api, n: int) -> None:
    async with asyncio.timeout(5):
        while len(api.pipeline.bus.subscribers) < n:
            await asyncio.sleep(0.005)  # the server registers the subscriber on its own task


async def test_events_arrive_as_they_are_accepted(served: Api) -> None:
    api = served
    headers = {"Authorization": f"Bearer {api.stream}"}
    async with websockets.connect(
        ws_url(api, "symbols=SPY&types=trade"), additional_headers=headers
    ) as ws:
        hello = orjson.loads(await ws.recv())
        assert hello == {"type": "subscribed", "symbols": ["SPY"], "types": ["trade"]}
        t0 = SystemClock().now_ns() - NS_PER_SECOND
        await api.feed(
            {
                Kind.TRADE: to_batch(
                    Kind.TRADE,
                    [
                        Trade(t0, t0, "SPY", 600.25, 7, "feed", 1),
                        Trade(t0, t0, "QQQ", 500.0, 1, "feed", 1),
                    ],
                ),
                Kind.QUOTE: to_batch(
                    Kind.QUOTE, [Quote(t0, t0, "SPY", 600.0, 1, 600.5, 1, "feed", 1)]
                ),
            }
        )
        events = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert [(e["type"], e["symbol"], e["price"], e["size"]) for e in events] == [
            ("trade", "SPY", 600.25, 7.0)
        ]
        assert events[0]["time"].endswith("Z")


@pytest.mark.parametrize(
    ("query", "token_kind", "code"),
    [
        ("symbols=SPY", None, "unauthorized"),
        ("symbols=SPY", "read", "forbidden"),
        ("symbols=bad!", "stream", "bad_symbol"),
    ],
)
async def test_refusals_are_explained_then_closed(
    served: Api, query: str, token_kind: str | None, code: str
) -> None:
    token = {"read": served.read, "stream": served.stream}.get(token_kind or "")
    url = ws_url(served, query + (f"&token={token}" if token else ""))
    async with websockets.connect(url) as ws:
        message = orjson.loads(await ws.recv())
        assert message["error"]["code"] == code
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_slow_client_is_told_and_dropped(
    served: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_route, "QUEUE_BATCHES", 2)
    async with websockets.connect(ws_url(served, f"symbols=SPY&token={served.stream}")) as ws:
        await ws.recv()
        await wait_subscribers(served, 1)
        (sub,) = served.pipeline.bus.subscribers
        t0 = SystemClock().now_ns()
        batch = to_batch(Kind.TRADE, [Trade(t0, t0, "SPY", 1.0, 1, "feed", 1)])
        for _ in range(5):  # faster than any client could read: the queue overflows
            sub.offer(Kind.TRADE, batch)
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert message["error"]["code"] == "slow_consumer"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    async with asyncio.timeout(5):
        while served.pipeline.bus.subscribers:
            await asyncio.sleep(0.005)


async def test_python_client_streams_events(served: Api) -> None:
    client = TickClient(served.base_url, served.stream)
    t0 = SystemClock().now_ns() - NS_PER_SECOND

    async def first_event() -> dict[str, object]:
        async for event in client.stream("SPY", types="trade"):
            return event
        raise AssertionError("stream ended")

    task = asyncio.create_task(first_event())
    await wait_subscribers(served, 1)
    await served.feed(
        {Kind.TRADE: to_batch(Kind.TRADE, [Trade(t0, t0, "SPY", 601.0, 2, "feed", 1)])}
    )
    event = await asyncio.wait_for(task, 5)
    assert (event["symbol"], event["price"], event["type"]) == ("SPY", 601.0, "trade")
    client.close()
