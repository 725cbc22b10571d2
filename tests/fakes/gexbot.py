"""A local gexbot: its classic REST API on 127.0.0.1, over real HTTP (Starlette + uvicorn).

It speaks what the fact sheet documents and what live probes saw:

- ``/v2/{ticker}/classic/{full|zero|one}[/majors|/maxchange]`` with ``Authorization:
  Bearer <key>`` and a required ``User-Agent``; the legacy style without ``/v2`` and with
  ``?key=``. A missing key answers 400 (as gexbot does live), a wrong one 401, a missing
  User-Agent 400, an unknown ticker 404; every error body is ``{"error": "..."}``.
- One request per second per key, ticker and category (``pair_limit_per_s``), and
  optionally a limit over all of them (``total_limit_per_s``); beyond them, 429 with
  ``Retry-After``.
- Bodies in gexbot's shapes (classic chain, majors, maxchange) for any ticker, with a
  timestamp that advances every ``update_period_s`` (``freeze()`` stops it: unchanged
  answers); ``pin`` serves an exact body; ``script`` queues raw answers (malformed
  bodies, 5xx, 429s) served before anything else for that (ticker, category).

Every request is recorded in ``hits`` (arrival time, path, status), every JSON answer
in ``served``, so tests assert on what the server saw and sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tickpipe.cli import _Server

from .threaded import serve_in_thread

KEY = "gexbot_custom_test-0123456789"
CATEGORIES = ("full", "zero", "one")
ALIASES = {"gex_full": "full", "gex_zero": "zero", "gex_one": "one"}
VIEWS = ("majors", "maxchange")
SPOTS = {"SPX": 7138.55, "NDX": 21034.2, "SPY": 600.0, "QQQ": 520.4, "ES_SPX": 7180.25}
KNOWN = frozenset({*SPOTS, "IWM", "AAPL", "NVDA", "TSLA", "RUT", "VIX", "NQ_NDX", "SPXW"})
SCALE = {"full": 1.0, "zero": 0.4, "one": 0.25}


@dataclasses.dataclass(frozen=True)
class Hit:
    at: float
    """time.monotonic() when the request arrived"""
    path: str
    ticker: str
    label: str
    status: int
    style: str


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status, headers, media_type="application/json")


def chain_body(ticker: str, category: str, ts: int) -> dict[str, Any]:
    """A classic chain in gexbot's shape: calls above spot positive, puts below negative,
    zero gamma near spot, majors at the ladder's extremes, sums over the ladder."""
    base = SPOTS.get(ticker, 100.0)
    spot = round(base * (1 + 0.002 * math.sin(ts / 60)), 2)
    step = 5.0 if base > 1000 else 1.0
    lo, hi = round(spot * 0.94 / step) * step, round(spot * 1.06 / step) * step
    n = int((hi - lo) / step) + 1
    amp = 500.0 * SCALE[category]
    rows = []
    for i in range(n):
        strike = lo + i * step
        x = (strike - spot) / spot * 40
        oi = round(amp * math.tanh(x) * math.exp(-x * x / 10) + 3.0 * math.sin(strike), 2)
        vol = round(0.7 * oi + 2.0 * math.cos(strike), 2)
        priors = [round(oi * (1 - 0.01 * k), 2) for k in range(1, 6)]
        rows.append([strike, vol, oi, priors])
    pos_oi = max(rows, key=lambda r: r[2])[0]
    neg_oi = min(rows, key=lambda r: r[2])[0]
    pos_vol = max(rows, key=lambda r: r[1])[0]
    neg_vol = min(rows, key=lambda r: r[1])[0]
    return {
        "timestamp": ts,
        "ticker": ticker,
        "min_dte": 0 if category != "one" else 1,
        "sec_min_dte": 1 if category != "one" else 2,
        "spot": spot,
        "zero_gamma": round(spot * 0.998, 2),
        "major_pos_vol": pos_vol,
        "major_pos_oi": pos_oi,
        "major_neg_vol": neg_vol,
        "major_neg_oi": neg_oi,
        "strikes": rows,
        "sum_gex_vol": round(sum(r[1] for r in rows), 3),
        "sum_gex_oi": round(sum(r[2] for r in rows), 3),
        "delta_risk_reversal": 0.118,
        "max_priors": [[pos_oi, round(amp * (k + 1), 3)] for k in range(6)],
    }


def majors_body(ticker: str, category: str, ts: int) -> dict[str, Any]:
    chain = chain_body(ticker, category, ts)
    return {
        "timestamp": ts,
        "ticker": ticker,
        "spot": chain["spot"],
        "mpos_vol": chain["major_pos_vol"] + 0.37,  # majors need not be strikes
        "mpos_oi": chain["major_pos_oi"],
        "mneg_vol": chain["major_neg_vol"],
        "mneg_oi": chain["major_neg_oi"],
        "zero_gamma": chain["zero_gamma"],
        "net_gex_vol": chain["sum_gex_vol"],
        "net_gex_oi": chain["sum_gex_oi"],
    }


def maxchange_body(ticker: str, category: str, ts: int) -> dict[str, Any]:
    chain = chain_body(ticker, category, ts)
    windows = ("current", "one", "five", "ten", "fifteen", "thirty")
    pairs = chain["max_priors"]
    return {"timestamp": ts, "ticker": ticker, **{w: pairs[i] for i, w in enumerate(windows)}}


class FakeGexbot:
    def __init__(
        self,
        *,
        key: str = KEY,
        pair_limit_per_s: float = 1.0,
        total_limit_per_s: float | None = None,
        retry_after: str | None = "1",
        update_period_s: float = 1.0,
    ) -> None:
        self.key = key
        self.pair_limit_per_s = pair_limit_per_s
        self.total_limit_per_s = total_limit_per_s
        self.retry_after = retry_after
        self.update_period_s = update_period_s
        self.hits: list[Hit] = []
        self.served: list[tuple[str, str, dict[str, Any]]] = []
        """(ticker, category label, body) of every 200 JSON answer"""
        self._scripts: dict[tuple[str, str], collections.deque[Answer]] = {}
        self._pinned: dict[tuple[str, str], dict[str, Any]] = {}
        self._last: dict[tuple[str, str], float] = {}
        self._recent: collections.deque[float] = collections.deque()
        self._frozen_ts: int | None = None
        self.port = 0
        self._server: _Server | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._handle)])

    # ---- what tests control -------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    @property
    def base_url_v1(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def timestamp(self) -> int:
        if self._frozen_ts is not None:
            return self._frozen_ts
        period = self.update_period_s
        return int(time.time() // period * period)

    def freeze(self, ts: int | None = None) -> int:
        """Stop the clock: every later answer carries this timestamp."""
        self._frozen_ts = self.timestamp() if ts is None else ts
        return self._frozen_ts

    def pin(self, ticker: str, label: str, body: dict[str, Any]) -> None:
        """Serve exactly ``body`` for (ticker, category) until pinned again."""
        self._pinned[(ticker, label)] = body

    def script(self, ticker: str, label: str, *answers: Answer) -> None:
        """Serve these raw answers, in order, before anything else for (ticker, category)."""
        self._scripts.setdefault((ticker, label), collections.deque()).extend(answers)

    def count(self, status: int | None = None, label: str | None = None) -> int:
        return sum(
            1
            for h in self.hits
            if (status is None or h.status == status) and (label is None or h.label == label)
        )

    # ---- HTTP -----------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        style = "v2" if path.startswith("/v2/") else "v1"
        parts = path.removeprefix("/v2").strip("/").split("/")
        ticker = parts[0].upper() if parts else ""
        category = ALIASES.get(parts[2], parts[2]) if len(parts) >= 3 else ""
        view = parts[3] if len(parts) == 4 else ""
        label = category if not view else f"{category}/{view}"
        response = self._answer(request, style, parts, ticker, category, view, label)
        self.hits.append(Hit(time.monotonic(), path, ticker, label, response.status_code, style))
        return response

    def _answer(
        self,
        request: Request,
        style: str,
        parts: list[str],
        ticker: str,
        category: str,
        view: str,
        label: str,
    ) -> Response:
        if style == "v2":
            if not request.headers.get("user-agent"):
                return _json(400, {"error": "User-Agent header is required"})
            auth = request.headers.get("authorization")
            if auth is None:
                return _json(400, {"error": "Missing authorization"})
            if auth != f"Bearer {self.key}":
                return _json(401, {"error": "Invalid API key"})
        else:
            given = request.query_params.get("key")
            if given is None:
                return _json(400, {"error": "Missing key"})
            if given != self.key:
                return _json(401, {"error": "Invalid API key"})
        if len(parts) not in (3, 4) or parts[1] != "classic":
            return _json(404, {"error": "Not found"})
        if ticker not in KNOWN:
            return _json(404, {"error": f"Unknown ticker {ticker}"})
        if category not in CATEGORIES or (view and view not in VIEWS):
            return _json(400, {"error": f"Invalid category {label}"})
        limited = self._rate_limited(ticker, label)
        if limited is not None:
            return limited
        queue = self._scripts.get((ticker, label))
        if queue:
            scripted = queue.popleft()
            return Response(scripted.body, scripted.status, scripted.headers)
        body = self._pinned.get((ticker, label))
        if body is None:
            ts = self.timestamp()
            make = {"": chain_body, "majors": majors_body, "maxchange": maxchange_body}[view]
            body = make(ticker, category, ts)
        self.served.append((ticker, label, body))
        return _json(200, body)

    def _rate_limited(self, ticker: str, label: str) -> Response | None:
        now = time.monotonic()
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
        last = self._last.get((ticker, label))
        if last is not None and now - last < 1 / self.pair_limit_per_s:
            return _json(429, {"error": "Too many requests"}, headers)
        if self.total_limit_per_s is not None:
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.total_limit_per_s:
                return _json(429, {"error": "Too many requests"}, headers)
            self._recent.append(now)
        self._last[(ticker, label)] = now
        return None

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_config=None, lifespan="off", access_log=False, log_level="warning"
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)

    async def __aenter__(self) -> FakeGexbot:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[FakeGexbot]:
        """Serve from a thread of its own (for tests that block, e.g. on a pipeline process)."""
        with serve_in_thread(self.start, self.stop, "fake-gexbot"):
            yield self


@contextlib.asynccontextmanager
async def running(**options: Any) -> AsyncIterator[FakeGexbot]:
    async with FakeGexbot(**options) as fake:
        yield fake
