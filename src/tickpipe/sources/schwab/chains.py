"""Option chains for the GEX engine: a poller source (name ``schwab-chains``).

Every ``SCHWAB_CHAIN_INTERVAL_S`` it asks ``GET /marketdata/v1/chains?symbol=$SPX
&contractType=ALL&strategy=SINGLE&includeUnderlyingQuote=true&fromDate=<today>
&toDate=<today + TICKPIPE_GEX_FULL_MAX_DAYS>`` for each of ``SCHWAB_CHAIN_SYMBOLS``, through
the token bucket every Schwab call shares, and emits every contract as an OptionQuote (see
``chainparse``). Schwab's gateway refuses oversized bodies (an unfiltered $SPX chain) with
``502 {"fault":{"faultstring":"Body buffer overflow","detail":{"errorcode":
"protocol.http.TooBigBody"}}}``: the poller then asks again with ``strikeCount`` 200, 100,
50, 25, 10 and keeps the narrowest that worked for that symbol. A 429 skips the symbol this
round while the bucket waits; a symbol Schwab does not know is shown on /status and skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

import httpx

from tickpipe.clock import Clock
from tickpipe.config import Settings
from tickpipe.errors import ParseError, TransportError
from tickpipe.sources.base import SourceContext
from tickpipe.sources.registry import default_policy
from tickpipe.sources.schwab.auth import TIMEOUT, TokenManager
from tickpipe.sources.schwab.chainparse import ChainParser
from tickpipe.sources.schwab.decoded import NEW_YORK
from tickpipe.sources.schwab.ratelimit import TokenBucket
from tickpipe.sources.schwab.rest import RateLimited, SchwabRest
from tickpipe.sources.schwab.streamer import iso_ns

SOURCE = "schwab-chains"
PATH = "/marketdata/v1/chains"
STRIKE_COUNTS = (200, 100, 50, 25, 10)
"""narrower and narrower requests after a TooBigBody 502"""


class ChainPoller:
    name = SOURCE

    def __init__(
        self, settings: Settings, clock: Clock, tokens: TokenManager, limiter: TokenBucket
    ) -> None:
        base = default_policy(settings)
        interval = settings.schwab_chain_interval_s
        # the watchdog must outlast a round: the interval, plus requests paced by the bucket
        rounds = len(settings.schwab_chain_symbols) * 60.0 / settings.schwab_requests_per_minute
        idle = max(base.idle_timeout_s or 0.0, 3 * interval + rounds + 30.0)
        self.policy = dataclasses.replace(base, idle_timeout_s=idle)
        self._settings = settings
        self._clock = clock
        self._tokens = tokens
        self._limiter = limiter
        self.symbols = list(settings.schwab_chain_symbols)
        self.parser = ChainParser(equity_size_multiplier=settings.schwab_equity_size_multiplier)
        self.strike_count: dict[str, int | None] = {}
        self._status: dict[str, dict[str, Any]] = {}

    async def run(self, ctx: SourceContext) -> None:
        self.parser.resume(ctx.sequences)
        ctx.phase("polling")
        loop = asyncio.get_running_loop()
        interval = self._settings.schwab_chain_interval_s
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            rest = SchwabRest(http, self._settings.schwab_api_base_url, self._tokens, self._limiter)
            due = loop.time()
            while True:
                for symbol in self.symbols:
                    await self._poll(rest, symbol, ctx)
                self._tokens.warn_if_expiring()
                ctx.info(chains=self._status, **self._tokens.facts())
                ctx.alive()
                due = max(due + interval, loop.time())
                await asyncio.sleep(due - loop.time())

    def _params(self, symbol: str) -> dict[str, Any]:
        today = dt.datetime.fromtimestamp(self._clock.now_ns() / 1e9, NEW_YORK).date()
        until = today + dt.timedelta(days=self._settings.gex_full_max_days)
        params: dict[str, Any] = {
            "symbol": symbol,
            "contractType": "ALL",
            "strategy": "SINGLE",
            "includeUnderlyingQuote": "true",
            "fromDate": today.isoformat(),
            "toDate": until.isoformat(),
        }
        count = self.strike_count.get(symbol)
        if count is not None:
            params["strikeCount"] = count
        return params

    async def _poll(self, rest: SchwabRest, symbol: str, ctx: SourceContext) -> None:
        status = self._status.setdefault(symbol, {})
        while True:
            try:
                response = await rest.get(PATH, self._params(symbol))
            except RateLimited as exc:
                ctx.count("http_429")
                status["last_error"] = str(exc)
                ctx.alive()
                return
            if response.status_code == 502 and _too_big(response):
                narrower = _narrower(self.strike_count.get(symbol))
                ctx.count("chain_too_big")
                if narrower is None:
                    status["last_error"] = "chain too big even at strikeCount=10"
                    return
                self.strike_count[symbol] = narrower
                status["strike_count"] = narrower
                continue
            break
        ctx.alive()
        if response.status_code in (400, 404):
            ctx.count("chain_refused")
            status["last_error"] = f"HTTP {response.status_code}: {response.text[:200]}"
            return
        if response.status_code != 200:
            raise TransportError(
                f"GET {PATH}?symbol={symbol} answered HTTP {response.status_code}", source=SOURCE
            )
        recv_ns = self._clock.now_ns()
        try:
            result = self.parser.parse(response.content, recv_ns, symbol)
        except ParseError as exc:
            await ctx.reject(response.content, str(exc), symbol=symbol)
            return
        for bad in result.rejects:
            await ctx.reject(bad.raw, bad.reason, kind=bad.kind, symbol=bad.symbol)
        status.update(
            contracts=result.contracts,
            truncated=result.truncated,
            underlying_price=result.underlying_price,
            polled_at=iso_ns(recv_ns),
            last_error=None,
        )
        if result.truncated:
            ctx.count("chain_truncated")
        if result.batches:
            await ctx.emit(result.batches)


def _too_big(response: httpx.Response) -> bool:
    text = response.text
    return "TooBigBody" in text or "buffer overflow" in text.lower()


def _narrower(current: int | None) -> int | None:
    for count in STRIKE_COUNTS:
        if current is None or count < current:
            return count
    return None
