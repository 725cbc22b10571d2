"""A refused WebSocket is logged with the status of its refusal, not as a 101 (issue 20):
it is accepted only so a browser can read the JSON reason before the close."""

from __future__ import annotations

import orjson
import pytest
import websockets

from tickpipe.api.app import create_app

from .conftest import Api
from .serving import serving


async def test_refused_websockets_are_logged_with_their_refusal_status(api: Api) -> None:
    app = create_app(api.ctx)
    access_log = app.state.observer.access_log
    async with serving(app) as port:
        base = f"ws://127.0.0.1:{port}/api/v1/stream?"
        for query in (
            "symbols=SPY",  # no key
            "symbols=SPY&token=tp_00000000_nope",  # unknown key
            f"symbols=SPY&token={api.read}",  # no stream scope
            f"symbols=bad!&token={api.stream}",  # bad parameter
            f"symbols=SPY&token={api.stream}",  # served
        ):
            async with websockets.connect(base + query) as ws:
                first = orjson.loads(await ws.recv())
                if "error" in first:
                    with pytest.raises(websockets.ConnectionClosed):
                        await ws.recv()
    access_log.flush()
    assert access_log.path is not None
    lines = [orjson.loads(line) for line in access_log.path.read_text().splitlines()]
    sessions = [(line["status"], line["key"]) for line in lines if line["method"] == "WS"]
    assert sessions == [
        (401, None),
        (401, None),
        (403, "reader"),
        (400, "streamer"),
        (101, "streamer"),
    ]
