"""The gexbot poller: a REST source with its own pacing, under the source contract.

One task per ticker polls that ticker's categories in turn and emits what changed as one
delivery, ordered by gexbot's timestamp. A (ticker, category) is asked again one second
after its last answer came back, and every request takes a token from the bucket all
requests share (``GEXBOT_REQUESTS_PER_SECOND``). What each answer causes:

- 200: decoded; an unchanged timestamp is skipped (``ctx.alive()`` only); a body that does
  not decode or makes no sense is quarantined with its raw text and polling goes on.
- 429: every request pauses for ``Retry-After`` (else 1, 2, 4... s up to 60 s).
- 400, 401, 403, 404: ``ConfigError`` naming the setting to fix (gexbot answers 400 for a
  missing key); the source stops without retrying.
- 5xx, timeouts, connection errors: ``TransportError``: the supervisor's backoff retries
  the whole poller (the pauses and last timestamps survive the restart).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from typing import Any

import httpx

from tickpipe import __version__
from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError, TransportError
from tickpipe.events import Kind
from tickpipe.logsafe import redact
from tickpipe.sources.base import SourceContext
from tickpipe.sources.gexbot.endpoints import (
    V1_DEFAULT_BASE_URL,
    V2_DEFAULT_BASE_URL,
    Endpoint,
    View,
    parse_categories,
    parse_tickers,
)
from tickpipe.sources.gexbot.parse import SOURCE, Levels, Row, decode, levels_batch
from tickpipe.sources.gexbot.ratelimit import (
    HEARTBEAT_S,
    PACING_MARGIN,
    AnsweredWindow,
    TokenBucket,
    retry_after_seconds,
)
from tickpipe.sources.gexbot.replies import KEY_FILTER, error_text, refusal
from tickpipe.sources.registry import default_policy

log = logging.getLogger(__name__)

USER_AGENT = f"tickpipe/{__version__} (gexbot source)"
PAIR_INTERVAL_S = 1.0
"""gexbot: "one request per second per ticker per metric"""
NO_HEADER_BACKOFF_CAP_S = 60.0
"""a 429 without Retry-After pauses 1, 2, 4... seconds, at most this"""


@dataclasses.dataclass
class Pair:
    """One (ticker, category) and what /status shows about it."""

    ticker: str
    symbol: str
    endpoint: Endpoint
    next_at: float = float("-inf")
    """loop time before which this pair is not asked again (one request a second)"""
    last_ts_ns: int = 0
    """gexbot's timestamp of the last answer emitted"""
    last_poll_ns: int | None = None
    requests: int = 0
    updates: int = 0
    unchanged: int = 0
    http_429: int = 0
    errors: int = 0
    rejected: int = 0
    last_status: int | None = None
    server_remaining: str | None = None

    @property
    def key(self) -> str:
        return f"{self.ticker}/{self.endpoint.label}"

    def status(self, now: float) -> dict[str, Any]:
        last = self.last_ts_ns or None
        return {
            "symbol": self.symbol,
            "last_update": _iso(last) if last else None,
            "last_update_ns": last,
            "last_poll_ns": self.last_poll_ns,
            "requests": self.requests,
            "updates": self.updates,
            "unchanged": self.unchanged,
            "http_429": self.http_429,
            "errors": self.errors,
            "rejected": self.rejected,
            "last_status": self.last_status,
            "budget_remaining": 1 if now >= self.next_at else 0,
            "next_request_in_s": round(max(self.next_at - now, 0.0), 3),
            "server_rate_remaining": self.server_remaining,
        }


class GexbotSource:
    """Polls gexbot's classic endpoints; see the module docstring for the policy."""

    name = SOURCE

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = settings.gexbot_api_key
        if key is None or not key.get_secret_value().strip():
            raise ConfigError("GEXBOT_ENABLED=true needs GEXBOT_API_KEY (your gexbot API key)")
        self._key = key.get_secret_value().strip()
        self._clock = clock
        self._style = settings.gexbot_api_style
        base = settings.gexbot_api_base_url.rstrip("/")
        if self._style == "v1" and base == V2_DEFAULT_BASE_URL:
            base = V1_DEFAULT_BASE_URL
        self.base_url = base
        self._unit = settings.gexbot_gex_unit_usd
        self._timeout = settings.gexbot_timeout_s
        self._transport = transport
        self.requests_per_second = settings.gexbot_requests_per_second
        tickers = parse_tickers(settings.gexbot_tickers)
        self.endpoints = parse_categories(settings.gexbot_categories)
        self.pairs: dict[tuple[str, str], Pair] = {
            (ticker, e.label): Pair(ticker, symbol, e)
            for ticker, symbol in tickers.items()
            for e in self.endpoints
        }
        self.tickers = list(tickers)
        self.bucket = TokenBucket(self.requests_per_second / PACING_MARGIN)
        per_window = max(int(self.requests_per_second), 1)
        self.window = AnsweredWindow(
            per_window, per_window / self.requests_per_second * PACING_MARGIN
        )
        self._seq: dict[str, int] = {}
        self._spot: dict[str, float] = {}
        self._unknown: set[str] = set()
        self._throttled_in_a_row = 0
        self._emit_lock = asyncio.Lock()
        # the watchdog must outlast a whole round of every pair and a slow answer; deliberate
        # waits (pacing, Retry-After) report liveness themselves
        cycle = max(
            len(self.pairs) / self.requests_per_second, len(self.endpoints) * PAIR_INTERVAL_S
        )
        policy = default_policy(settings)
        idle = max(policy.idle_timeout_s or 0.0, 3 * cycle * PACING_MARGIN + 2 * self._timeout)
        self.policy = dataclasses.replace(policy, idle_timeout_s=idle)

    async def run(self, ctx: SourceContext) -> None:
        self._resume(ctx)
        ctx.phase("connecting")
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        params: dict[str, str] = {}
        if self._style == "v2":
            headers["Authorization"] = f"Bearer {self._key}"
        else:
            params["key"] = self._key
            logging.getLogger("httpx").addFilter(KEY_FILTER)
        async with httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            params=params,
            timeout=self._timeout,
            transport=self._transport,
            follow_redirects=False,
        ) as client:
            ctx.phase("polling")
            self._publish(ctx)
            async with asyncio.TaskGroup() as group:  # the supervisor unwraps a failure
                for ticker in self.tickers:
                    group.create_task(self._poll_ticker(client, ctx, ticker))

    def _resume(self, ctx: SourceContext) -> None:
        """Continue each symbol's seq, and skip answers already stored by the last run."""
        for (kind, symbol), (seq, _) in ctx.sequences.items():
            if kind is Kind.GEX:
                self._seq[symbol] = max(self._seq.get(symbol, 0), seq)
        saved = (ctx.checkpoint or {}).get("last_ts_ns", {})
        if isinstance(saved, dict):
            for pair in self.pairs.values():
                value = saved.get(pair.key)
                if isinstance(value, int):
                    pair.last_ts_ns = max(pair.last_ts_ns, value)

    async def _poll_ticker(
        self, client: httpx.AsyncClient, ctx: SourceContext, ticker: str
    ) -> None:
        while True:
            fresh: list[tuple[Pair, Levels]] = []
            for endpoint in self.endpoints:
                pair = self.pairs[(ticker, endpoint.label)]
                if endpoint.view is View.MAXCHANGE and ticker not in self._spot:
                    continue  # nothing to pin its levels to until a chain or majors answered
                levels = await self._poll(client, ctx, pair)
                if levels is None:
                    continue
                fresh.append((pair, levels))
                if endpoint.view is not View.MAXCHANGE:
                    self._spot[ticker] = levels.spot
            if fresh:
                await self._emit(ctx, fresh)
            self._publish(ctx)

    async def _poll(
        self, client: httpx.AsyncClient, ctx: SourceContext, pair: Pair
    ) -> Levels | None:
        loop = asyncio.get_running_loop()
        while (wait := pair.next_at - loop.time()) > 0:
            ctx.alive()  # a deliberate wait, not a dead feed
            await asyncio.sleep(min(wait, HEARTBEAT_S))
        await self.bucket.acquire(ctx.alive)
        pair.requests += 1
        pair.last_poll_ns = self._clock.now_ns()
        try:
            async with self.window.slot(ctx.alive):
                response = await client.get(pair.endpoint.path(pair.ticker))
        except httpx.TimeoutException as exc:
            pair.errors += 1
            raise TransportError(
                f"gexbot did not answer {pair.key} within {self._timeout:g}s",
                source=SOURCE,
                symbol=pair.symbol,
            ) from exc
        except httpx.HTTPError as exc:
            pair.errors += 1
            raise TransportError(
                f"gexbot request for {pair.key} failed: {type(exc).__name__}: {redact(str(exc))}",
                source=SOURCE,
                symbol=pair.symbol,
            ) from exc
        # the next one waits a full interval after this answer came back: however late this
        # request left or how fast it travelled, the server sees them that far apart
        pair.next_at = loop.time() + PAIR_INTERVAL_S * PACING_MARGIN
        status = pair.last_status = response.status_code
        pair.server_remaining = response.headers.get(
            "RateLimit-Remaining", response.headers.get("X-RateLimit-Remaining")
        )
        if status == 200:
            self._throttled_in_a_row = 0
            ctx.alive()
            return await self._decoded(ctx, pair, response.content)
        if status == 429:
            self._throttled(ctx, pair, response)
            return None
        if status in (400, 401, 403, 404):
            pair.errors += 1
            raise ConfigError(refusal(pair.key, status, error_text(response)))
        pair.errors += 1
        detail = error_text(response)
        raise TransportError(
            f"gexbot answered HTTP {status} for {pair.key}" + (f": {detail}" if detail else ""),
            source=SOURCE,
            symbol=pair.symbol,
        )

    async def _decoded(self, ctx: SourceContext, pair: Pair, body: bytes) -> Levels | None:
        try:
            levels = decode(
                body,
                pair.endpoint.view,
                ticker=pair.ticker,
                unit_usd=self._unit,
                spot=self._spot.get(pair.ticker),
            )
        except Exception as exc:  # ParseError, or a parser bug: never lose the body
            pair.rejected += 1
            await ctx.reject(body, f"{pair.key}: {exc}", kind=Kind.GEX, symbol=pair.symbol)
            return None
        for name in levels.unknown:
            if name not in self._unknown:
                self._unknown.add(name)
                ctx.count("unknown_fields")
                log.info("gexbot: %s carries an unknown field %r (ignored)", pair.key, name)
        if levels.ts_ns <= pair.last_ts_ns:
            pair.unchanged += 1
            return None
        return levels

    def _throttled(self, ctx: SourceContext, pair: Pair, response: httpx.Response) -> None:
        pair.http_429 += 1
        ctx.count("http_429")
        ctx.alive()
        self._throttled_in_a_row += 1
        delay = retry_after_seconds(response.headers.get("Retry-After"))
        if delay is None:
            delay = min(NO_HEADER_BACKOFF_CAP_S, 2.0 ** (self._throttled_in_a_row - 1))
        self.bucket.pause(delay)
        pair.next_at = max(pair.next_at, asyncio.get_running_loop().time() + delay)
        log.warning("gexbot: HTTP 429 for %s; every request waits %.1fs", pair.key, delay)

    async def _emit(self, ctx: SourceContext, fresh: list[tuple[Pair, Levels]]) -> None:
        """One delivery per ticker round, in gexbot's time order; seq counts per symbol
        across categories (the quality rules key on (source, kind, symbol))."""
        async with self._emit_lock:
            fresh.sort(key=lambda item: item[1].ts_ns)
            now = self._clock.now_ns()
            rows = []
            for pair, levels in fresh:
                seq = self._seq[pair.symbol] = self._seq.get(pair.symbol, 0) + 1
                rows.append(
                    Row(pair.symbol, pair.endpoint.label, seq, now, levels, pair.endpoint.view)
                )
                pair.last_ts_ns = levels.ts_ns
                pair.updates += 1
            checkpoint = {
                "last_ts_ns": {p.key: p.last_ts_ns for p in self.pairs.values() if p.last_ts_ns}
            }
            await ctx.emit({Kind.GEX: levels_batch(rows)}, checkpoint=checkpoint)

    def _publish(self, ctx: SourceContext) -> None:
        now = asyncio.get_running_loop().time()
        paused = self.bucket.paused_until - now
        ctx.info(
            api=self._style,
            base_url=self.base_url,
            rate={
                "limit_per_s": self.requests_per_second,
                "budget_remaining": self.bucket.available(),
                "paused_for_s": round(max(paused, 0.0), 3),
            },
            pairs={pair.key: pair.status(now) for pair in self.pairs.values()},
        )


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / NS_PER_SECOND, dt.UTC).isoformat().replace("+00:00", "Z")
