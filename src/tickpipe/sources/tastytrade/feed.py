"""The tastytrade source: REST session and quote token, then one DXLink connection per attempt.

``run`` authenticates (cached tokens survive attempts), resolves what to subscribe (chains
and futures from REST, cached for an hour), connects to the ``dxlink-url`` the token came
with, and streams until the connection fails; the supervisor reconnects with backoff, and
every subscription is sent again on the new connection. Decoder state (seq counters,
TimeAndSale high-water marks, option book) lives in the source, so a snapshot re-sent
after a reconnect does not duplicate trades; the tape marks also ride in the source's
checkpoint, so a process restart does not either.

/api/v1/status shows, under the source's ``details``: ``dxlink_state``, ``dxlink_url``,
``dxlink_channel``, ``dxlink_subscriptions``, ``dxlink_last_keepalive_{sent,received}_ns``,
``dxlink_reconnects``, ``dxlink_errors`` (the server's last ERROR messages) and
``options_waiting`` (contracts without a two-sided quote or open interest yet).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError, TransportError, first_cause
from tickpipe.events import Kind
from tickpipe.sources import backlog
from tickpipe.sources.base import SourceContext
from tickpipe.sources.registry import default_policy
from tickpipe.sources.tastytrade import plan
from tickpipe.sources.tastytrade.decoder import SOURCE, Decoder
from tickpipe.sources.tastytrade.dxlink import ACTION_TIMEOUT_S, AuthRefused, Link
from tickpipe.sources.tastytrade.parse import REQUESTED_FIELDS
from tickpipe.sources.tastytrade.session import USER_AGENT, QuoteToken, Session
from tickpipe.sources.tastytrade.symbols import to_canonical

log = logging.getLogger(__name__)

AGGREGATION_S = 0.1
"""tastytrade's own platform asks for 0.1 s; TimeAndSale prints are never conflated"""
PLAN_TTL_S = 3600.0
STATUS_EVERY_S = 1.0
MAX_FRAME_BYTES = 64 * 1024 * 1024
"""a chain snapshot is large but arrives in many frames; a bigger one is a broken server"""
REFUSALS_BEFORE_STOP = 2
"""a fresh quote token refused this many times in a row is a credentials problem"""


class TastytradeFeed:
    name = SOURCE

    def __init__(self, settings: Settings, clock: Clock) -> None:
        defaults = default_policy(settings)
        keepalive = settings.tastytrade_keepalive_timeout_s
        self.policy = dataclasses.replace(
            defaults, idle_timeout_s=max(defaults.idle_timeout_s or 0.0, 2 * keepalive)
        )
        secret, refresh = settings.tastytrade_client_secret, settings.tastytrade_refresh_token
        assert secret is not None and refresh is not None  # build() checked
        self._clock = clock
        self._session = Session(settings.tastytrade_api_base_url, secret, refresh, clock)
        self._symbols, self._chains = plan.from_settings(
            settings.tastytrade_symbols, settings.tastytrade_chain_symbols
        )
        self._max_days = settings.tastytrade_chain_max_days
        self._keepalive = keepalive
        self._batch = settings.tastytrade_subscription_batch
        self.decoder = Decoder(SOURCE)
        self._plan: list[dict[str, str]] | None = None
        self._plan_at = 0.0
        self.connections = 0
        self._refusals = 0

    async def run(self, ctx: SourceContext) -> None:
        self.decoder.resume(ctx.sequences, ctx.checkpoint)
        self.decoder.new_connection()
        ctx.phase("authenticating")
        async with self._session.client() as http:
            quote = await self._session.quote_token(http)
            ctx.alive()
            ctx.info(dxlink_url=quote.url, dxlink_level=quote.level, dxlink_state="token")
            ctx.phase("resolving symbols")
            items = await self._subscriptions(http, ctx)
            ctx.phase("connecting")
            try:
                async with websockets.connect(
                    quote.url,
                    ping_interval=None,  # DXLink wants its own KEEPALIVE messages
                    max_size=MAX_FRAME_BYTES,
                    open_timeout=ACTION_TIMEOUT_S,
                    close_timeout=2,
                    user_agent_header=USER_AGENT,
                ) as ws:
                    await self._stream(ws, http, ctx, quote, items)
            except ConnectionClosed as exc:
                raise self._closed(exc) from exc
            except (OSError, InvalidURI, InvalidHandshake, TimeoutError) as exc:
                text = str(exc) or type(exc).__name__
                raise TransportError(f"DXLink connect to {quote.url} failed: {text}") from exc

    async def _stream(
        self,
        ws: ClientConnection,
        http: httpx.AsyncClient,
        ctx: SourceContext,
        quote: QuoteToken,
        items: list[dict[str, str]],
    ) -> None:
        link = Link(
            ws,
            ctx,
            self._clock,
            keepalive_timeout_s=self._keepalive,
            on_feed=lambda message, raw: self._on_feed(ctx, message, raw),
            on_config=lambda message: self._on_config(ctx, message),
            whole=self.decoder.fields.whole,
        )
        self.connections += 1
        ctx.info(dxlink_reconnects=self.connections - 1, dxlink_state="connected")
        ctx.phase("authorizing")
        try:
            await link.handshake(quote.token)
        except AuthRefused:
            self._session.forget_quote_token()
            self._refusals += 1
            if self._refusals >= REFUSALS_BEFORE_STOP:
                raise ConfigError(
                    "DXLink refused freshly issued quote tokens: the account behind "
                    "TASTYTRADE_REFRESH_TOKEN needs market data access"
                ) from None
            raise
        self._refusals = 0
        ctx.phase("subscribing")
        await link.open_feed(REQUESTED_FIELDS, AGGREGATION_S)
        await link.subscribe(items, self._batch)
        ctx.info(dxlink_state="subscribed", dxlink_subscriptions=len(items))
        ctx.phase("subscribed")
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(link.keepalive())
                tasks.create_task(link.watch_silence())
                tasks.create_task(self._renew(http, link))
                tasks.create_task(self._report(ctx))
                tasks.create_task(backlog.watch(ctx, ws))
                await link.read_forever()
        except BaseExceptionGroup as group:  # the leaf, so a close code reaches _closed
            raise first_cause(group) from None

    async def _on_feed(self, ctx: SourceContext, message: dict[str, Any], raw: str | bytes) -> None:
        out = self.decoder.feed_data(message.get("data"), self._clock.now_ns())
        for counter, n in out.counts.items():
            ctx.count(counter, n)
        if out.problems:
            await ctx.reject(raw, "; ".join(out.problems)[:2000])
        for row in out.cancels:
            await ctx.reject(
                orjson.dumps(row, default=str),
                f"TimeAndSale CANCEL of a {row.get('symbol')} print at {row.get('price')}",
                kind=Kind.TRADE,
                symbol=str(row.get("symbol") or ""),
                rule="trade_cancel",
            )
        if out.batches or out.tape_moved:
            checkpoint = self.decoder.checkpoint() if out.tape_moved else None
            await ctx.emit(out.batches, checkpoint=checkpoint)

    def _on_config(self, ctx: SourceContext, message: dict[str, Any]) -> None:
        self.decoder.fields.configure(message)
        ctx.info(
            dxlink_data_format=message.get("dataFormat"),
            dxlink_aggregation_s=message.get("aggregationPeriod"),
            dxlink_event_fields=dict(self.decoder.fields.confirmed),
        )

    async def _renew(self, http: httpx.AsyncClient, link: Link) -> None:
        """Fetch the next quote token before this one expires and AUTH with it."""
        while True:
            current = self._session.quote
            due = current.refresh_at_ns if current is not None else self._clock.now_ns()
            await asyncio.sleep(max((due - self._clock.now_ns()) / NS_PER_SECOND, 1.0))
            fresh = await self._session.quote_token(http)
            if current is None or fresh.token != current.token:
                await link.reauthorize(fresh.token)
                log.info("DXLink quote token renewed on the live connection")

    async def _report(self, ctx: SourceContext) -> None:
        while True:
            ctx.info(
                options=self.decoder.options.size,
                options_waiting=self.decoder.options.waiting,
                last_trades=len(self.decoder.last_trades),
                tape_snapshots=self.decoder.tape.stats.snapshots,
                tape_duplicates_dropped=self.decoder.tape.stats.duplicates,
                tape_removed=self.decoder.tape.stats.removed,
            )
            await asyncio.sleep(STATUS_EVERY_S)

    async def _subscriptions(
        self, http: httpx.AsyncClient, ctx: SourceContext
    ) -> list[dict[str, str]]:
        """Every (type, symbol) to subscribe, underlyings first; REST answers are cached."""
        age = self._clock.monotonic() - self._plan_at
        if self._plan is not None and age < PLAN_TTL_S:
            return self._plan
        underlying: list[str] = []
        options: list[str] = []
        for item in [*self._symbols, *self._chains]:
            dx = item.dx if item.dx is not None else await self._future(http, item)
            ctx.alive()
            (options if item.option else underlying).append(dx)
        for chain in self._chains:
            assert chain.dx is not None
            contracts = await self._session.option_chain(http, chain.dx, self._max_days)
            ctx.alive()
            if not contracts:
                raise ConfigError(
                    f"TASTYTRADE_CHAIN_SYMBOLS: tastytrade lists no {chain.canonical} options "
                    f"expiring within TASTYTRADE_CHAIN_MAX_DAYS={self._max_days}"
                )
            options += [c.streamer_symbol for c in contracts]
        self._plan = plan.items(plan.UNDERLYING_TYPES, list(dict.fromkeys(underlying)))
        self._plan += plan.items(plan.OPTION_TYPES, list(dict.fromkeys(options)))
        self._plan_at = self._clock.monotonic()
        ctx.info(chain_contracts=len(set(options)))
        return self._plan

    async def _future(self, http: httpx.AsyncClient, item: plan.Wanted) -> str:
        """The streamer symbol of ``/ESZ25`` (that contract) or ``/ES`` (the active month)."""
        futures = await self._session.futures(http, item.product_code)
        candidates: list[tuple[str, dict[str, Any]]] = []
        for future in futures:
            symbol = future.get("streamer-symbol")
            if isinstance(symbol, str) and symbol:
                candidates.append((symbol, future))
        chosen = None
        if item.is_root:
            active = [s for s, f in candidates if f.get("active-month")]
            dated = sorted(candidates, key=lambda c: str(c[1].get("expiration-date", "9999")))
            chosen = active[0] if active else dated[0][0] if dated else None
        else:
            for symbol, _ in candidates:
                try:
                    if to_canonical(symbol).canonical == item.canonical:
                        chosen = symbol
                except ValueError:
                    continue
        if chosen is None:
            raise ConfigError(
                f"TASTYTRADE_SYMBOLS: tastytrade lists no future {item.canonical} "
                f"(product code {item.product_code})"
            )
        if to_canonical(chosen).canonical != item.canonical:
            self.decoder.alias(chosen, item.canonical)
        return chosen

    def _closed(self, exc: ConnectionClosed) -> TransportError:
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code == 1009:
            self._batch = max(1, self._batch // 2)
            return TransportError(
                "DXLink closed the connection: subscription message too long (1009); "
                f"next attempt sends {self._batch} per message (TASTYTRADE_SUBSCRIPTION_BATCH)"
            )
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        return TransportError(f"DXLink connection closed ({code} {reason})".strip())
