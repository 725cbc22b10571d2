"""History answers are admitted by a budget (issue 20): past it a request waits a moment,
then gets a 429 (its key's own limit) or a 503 (the server's), both with Retry-After,
never a 500; every answer gives its place back however it ends; a reader that takes
nothing is cut off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import duckdb
import httpx
import pytest

from tickpipe.api import admission as admission_module
from tickpipe.api import streaming
from tickpipe.api.admission import Admission
from tickpipe.api.streaming import REVOKED_LINE, BoundedStream, End
from tickpipe.clock import NS_PER_SECOND, SystemClock
from tickpipe.events import Kind, Trade, to_batch
from tickpipe.store.keystore import ApiKey

from .conftest import Api
from .serving import app_with, open_get, serving

HOUR = 3600 * NS_PER_SECOND


async def two_trades_an_hour_apart(api: Api) -> int:
    t0 = SystemClock().now_ns() - 2 * HOUR
    trades = [
        Trade(t0, t0, "SPY", 600.0, 1, "feed", 1),
        Trade(t0 + HOUR, t0, "SPY", 600, 1, "feed", 2),
    ]
    await api.feed({Kind.TRADE: to_batch(Kind.TRADE, trades)})
    return t0


async def wait_until_open(budget: Admission, n: int) -> None:
    async with asyncio.timeout(5):
        while budget.open != n:
            await asyncio.sleep(0.01)  # the server notices a client leaving on its own task


async def test_past_the_budget_an_answer_waits_then_gets_429_or_503(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission_module, "ADMIT_WAIT_S", 0.3)
    t0 = await two_trades_an_hour_apart(api)
    app = app_with(api.ctx, streams_max=2, streams_per_key=1)
    budget: Admission = app.state.admission
    a, b, c = (api.ctx.keys.create(name, ["read"], 1000)[0] for name in "abc")
    replay = f"/api/v1/replay?symbols=SPY&start_time={t0}&end_time={t0 + 2 * HOUR}&speed=1"
    page = f"/api/v1/ticks/historical?symbols=SPY&start_time={t0}&end_time={t0 + 2 * HOUR}"
    async with serving(app) as port:
        held_a = await open_get(port, replay, a)  # paced: the second trade is an hour away
        assert held_a.status == 200
        first = await held_a.reader.readuntil(b"}\n")
        assert b'"type":"trade"' in first

        own = await open_get(port, page, a)
        assert own.status == 429 and own.headers["retry-after"] == "2"
        assert (await own.body_json())["error"]["code"] == "too_many_streams"

        held_b = await open_get(port, replay, b)
        assert held_b.status == 200
        busy = await open_get(port, page, c)
        assert busy.status == 503 and busy.headers["retry-after"] == "2"
        body = await busy.body_json()
        assert body["error"]["code"] == "server_busy"
        assert "TICKPIPE_STREAMS_MAX=2" in body["error"]["message"]

        await held_a.close()  # the client leaves: its place is given back
        await wait_until_open(budget, 1)
        served = await open_get(port, page, c)
        assert served.status == 200
        for opened in (held_b, own, busy, served):
            await opened.close()
        await wait_until_open(budget, 0)
    assert budget.refused == 2


async def test_a_burst_of_short_answers_waits_its_turn(api: Api) -> None:
    t0 = await two_trades_an_hour_apart(api)
    app = app_with(api.ctx, streams_max=1, streams_per_key=1, json_builds_max=1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        params = {"symbols": "SPY", "start_time": t0, "end_time": t0 + 2 * HOUR}
        answers = await asyncio.gather(
            *(
                client.get("/api/v1/ticks/historical", params=params, headers=api.auth())
                for _ in range(6)
            )
        )
    assert [r.status_code for r in answers] == [200] * 6
    assert all(len(r.json()["data"]) == 2 for r in answers)
    assert app.state.admission.open == 0


async def test_the_query_engine_out_of_memory_is_a_503_not_a_500(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's memory limit is shared by every query of the process: another answer's
    peak can leave none for this one, which is the server being busy."""
    t0 = await two_trades_an_hour_apart(api)

    def full(*args: object, **kwargs: object) -> None:
        raise duckdb.OutOfMemoryException("Out of Memory Error: failed to pin block")

    monkeypatch.setattr(api.ctx.query, "count", full)
    monkeypatch.setattr(api.ctx.query, "bars", full)
    monkeypatch.setattr(api.ctx.query, "events", full)
    window = f"symbols=SPY&start_time={t0}&end_time={t0 + 2 * HOUR}"
    for path in (
        f"/api/v1/ticks/historical?{window}",
        f"/api/v1/ticks/historical?{window}&format=csv",
        f"/api/v1/ticks/historical?{window}&interval=1m",
        f"/api/v1/replay?{window}",
    ):
        response = await api.client.get(path, headers=api.auth())
        assert response.status_code == 503, (path, response.text)
        assert response.json()["error"]["code"] == "server_busy"
        assert response.headers["retry-after"] == "2"


KEY = ApiKey("k", "k", "", frozenset({"read"}), 10.0, 0, None)


async def _chunks(size: int = 100_000) -> AsyncIterator[bytes]:
    while True:
        yield b"x" * size


async def test_a_reader_that_takes_nothing_is_cut_and_gives_its_place_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streaming, "STALL_S", 0.2)
    budget = Admission(1, 1, 1)
    never = asyncio.Event()
    sent: list[dict[str, object]] = []

    async def full_socket(message: dict[str, object]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            await never.wait()  # the client's socket is full: nothing more goes out

    async def receive() -> dict[str, object]:
        await never.wait()
        raise AssertionError

    response = BoundedStream(
        _chunks(), media_type="text/csv", ticket=await budget.admit(KEY), revoked=never.wait
    )
    await asyncio.wait_for(response({"type": "http"}, receive, full_socket), 5)  # type: ignore[arg-type]
    assert response.ended is End.STALLED
    assert budget.open == 0
    assert len(sent) == 2  # the head and one piece: the stream was cut, not completed
    assert all(m.get("more_body", True) for m in sent)


@pytest.mark.parametrize("farewell", [None, REVOKED_LINE])
async def test_a_revoked_stream_ends_with_its_farewell_or_is_cut(farewell: bytes | None) -> None:
    budget = Admission(1, 1, 1)
    revoked = asyncio.Event()
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
        if len(sent) == 3:
            revoked.set()  # revoked while the body streams
        await asyncio.sleep(0)

    async def receive() -> dict[str, object]:
        await asyncio.Event().wait()
        raise AssertionError

    response = BoundedStream(
        _chunks(1000),
        media_type="application/x-ndjson",
        ticket=await budget.admit(KEY),
        revoked=revoked.wait,
        farewell=farewell,
    )
    await asyncio.wait_for(response({"type": "http"}, receive, send), 5)  # type: ignore[arg-type]
    assert budget.open == 0
    assert response.ended is End.REVOKED
    if farewell is None:
        assert all(m.get("more_body", True) for m in sent)  # cut: no partial file looks whole
    else:
        assert [m["body"] for m in sent[-2:]] == [farewell, b""]  # said why, then completed
        assert sent[-1]["more_body"] is False
