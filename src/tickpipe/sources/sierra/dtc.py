"""Sierra Chart's DTC server as a live source ("sierra-dtc"): plain TCP, binary or JSON.

Sequence: connect to ``SIERRA_DTC_HOST:SIERRA_DTC_PORT``; ENCODING_REQUEST (sent in binary,
as the DTC encoding-request sequence says; a server set to one fixed encoding may not
answer, then we go on in the configured one); LOGON_REQUEST with our heartbeat interval;
LOGON_RESPONSE; one MARKET_DATA_REQUEST (SUBSCRIBE) per ``SIERRA_DTC_SYMBOLS`` entry; then
snapshots, trades and bid/ask updates in every variant DTC has. A HEARTBEAT goes out every
``SIERRA_DTC_HEARTBEAT_S``; the server's heartbeats keep the source alive, and silence for
2.5 intervals ends the attempt (the supervisor reconnects).

Exchanges often forbid redistributing their data over DTC, so Sierra answers
MARKET_DATA_REJECT for CME symbols; the reject text is shown in ``/api/v1/status`` and the
.scid tail is then the way to get those ticks. Sample frame (JSON):
``{"Type":103,"SymbolID":1,"RejectText":"Market data request not allowed."}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from tickpipe.clock import Clock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError, ParseError, TransportError, first_cause
from tickpipe.sources import backlog
from tickpipe.sources.base import SourceContext
from tickpipe.sources.registry import default_policy
from tickpipe.sources.sierra import dtc_messages as m
from tickpipe.sources.sierra.dtc_codec import (
    BinaryFramer,
    DtcDecoder,
    Facts,
    JsonFramer,
    Message,
    decode_binary,
    decode_json,
    encode_binary,
    encode_json,
)
from tickpipe.sources.sierra.names import parse_mapping

log = logging.getLogger(__name__)

SOURCE_NAME = "sierra-dtc"
ENCODING_WAIT_S = 2.0
"""how long to wait for an ENCODING_RESPONSE before assuming a fixed-encoding server"""
LOGON_WAIT_S = 10.0
BAD_FRAME = -1
"""stands in for a frame that could not be decoded, so its neighbours still are"""
SILENCE_HEARTBEATS = 2.5
"""heartbeat intervals of silence after which the connection counts as lost"""


class _Connection:
    """One TCP connection's framing and encoding."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.json = False
        self._framer: BinaryFramer | JsonFramer = BinaryFramer()
        self._pending: list[Message] = []

    def use(self, json: bool) -> None:
        self.json = json
        self._framer = JsonFramer() if json else BinaryFramer()

    async def send(self, type_: int, **fields: object) -> None:
        self.writer.write(
            encode_json(type_, **fields) if self.json else encode_binary(type_, **fields)
        )
        await self.writer.drain()

    async def receive(self, timeout: float) -> list[Message]:
        """The messages of the next read (at least one), or TimeoutError."""
        if self._pending:
            out, self._pending = self._pending, []
            return out
        async with asyncio.timeout(timeout):
            while True:
                data = await self.reader.read(65_536)
                if not data:
                    raise TransportError("the Sierra Chart DTC server closed the connection")
                if (
                    isinstance(self._framer, BinaryFramer)
                    and self.json is False
                    and data[:1] == b"{"
                ):
                    self.use(True)  # the server answered in JSON: follow it
                decode: Callable[[bytes], Message] = decode_json if self.json else decode_binary
                messages = []
                for frame in self._framer.feed(data):
                    try:
                        messages.append(decode(frame))
                    except ParseError as exc:  # one bad frame: quarantined, the stream goes on
                        messages.append({"Type": BAD_FRAME, "raw": frame, "error": str(exc)})
                if messages:
                    return messages

    def push_back(self, messages: list[Message]) -> None:
        self._pending = messages + self._pending


@dataclasses.dataclass(frozen=True)
class _Subscription:
    symbol_id: int
    name: str
    """as Sierra spells it: ESZ25-CME"""
    symbol: str


class DtcClient:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        if not settings.sierra_dtc_symbols:
            raise ConfigError(
                "SIERRA_DTC_HOST is set: list the symbols in SIERRA_DTC_SYMBOLS, e.g. ESZ25-CME"
            )
        self.name = SOURCE_NAME
        heartbeat = settings.sierra_dtc_heartbeat_s
        policy = default_policy(settings)
        idle = policy.idle_timeout_s
        self.policy = dataclasses.replace(
            policy, idle_timeout_s=None if idle is None else max(idle, 3 * heartbeat)
        )
        self._host = settings.sierra_dtc_host or ""
        self._port = settings.sierra_dtc_port
        self._json = settings.sierra_dtc_encoding == "json"
        self._user = settings.sierra_dtc_username
        secret = settings.sierra_dtc_password
        self._password = secret.get_secret_value() if secret is not None else ""
        self._heartbeat_s = heartbeat
        self._clock = clock
        self._subs = [
            _Subscription(i, name, symbol)
            for i, (name, symbol) in enumerate(map(parse_mapping, settings.sierra_dtc_symbols), 1)
        ]
        self._rejected: dict[str, str] = {}
        self._symbol_facts: dict[str, dict[str, object]] = {}
        self._json_encoding_request = False
        """whether to send the ENCODING_REQUEST itself in JSON (flipped when a JSON server
        hung up on the binary one: whether Sierra wants it binary is unconfirmed)"""

    async def run(self, ctx: SourceContext) -> None:
        self._rejected = {}
        ctx.phase("connecting")
        ctx.info(server=f"{self._host}:{self._port}", encoding="json" if self._json else "binary")
        reader, writer = await asyncio.open_connection(self._host, self._port)
        conn = _Connection(reader, writer)
        try:
            await self._negotiate(conn, ctx)
            await self._logon(conn, ctx)
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._heartbeats(conn))
                    tasks.create_task(backlog.watch(ctx, writer))
                    for sub in self._subs:
                        await conn.send(
                            m.T.MARKET_DATA_REQUEST,
                            RequestAction=1,
                            SymbolID=sub.symbol_id,
                            Symbol=sub.name,
                            Exchange="",
                        )
                    ctx.phase("subscribed")
                    await ctx.emit({})  # running, before the first tick arrives
                    await self._stream(conn, ctx)
            except BaseExceptionGroup as group:  # the cause itself, as a direct caller expects
                raise first_cause(group) from None
        finally:
            writer.close()

    async def _negotiate(self, conn: _Connection, ctx: SourceContext) -> None:
        wanted = m.Encoding.JSON if self._json else m.Encoding.BINARY
        request = dict(ProtocolVersion=m.PROTOCOL_VERSION, Encoding=wanted, ProtocolType="DTC")
        conn.use(self._json and self._json_encoding_request)
        ctx.info(encoding_request="json" if conn.json else "binary")
        await conn.send(m.T.ENCODING_REQUEST, **request)
        try:
            messages = await conn.receive(ENCODING_WAIT_S)
        except TimeoutError:
            conn.use(self._json)  # a fixed-encoding server: talk the configured one
            return
        except (TransportError, ParseError) as exc:
            if self._json:
                self._json_encoding_request = not self._json_encoding_request
            raise TransportError(f"encoding request failed: {exc}", source=self.name) from exc
        first, rest = messages[0], messages[1:]
        if first.get("Type") != m.T.ENCODING_RESPONSE:
            conn.push_back(messages)
            return
        got = first.get("Encoding")
        if got != wanted:
            names: dict[object, str] = {m.Encoding.BINARY: "binary", m.Encoding.JSON: "json"}
            fix = f"set SIERRA_DTC_ENCODING={names[got]} or " if got in names else ""
            raise ConfigError(
                f"Sierra Chart's DTC server talks encoding {names.get(got, got)}, not "
                f"{names[wanted]}: {fix}set the server's Encoding to Automatic"
            )
        conn.use(self._json)
        conn.push_back(rest)

    async def _logon(self, conn: _Connection, ctx: SourceContext) -> None:
        ctx.phase("logging on")
        await conn.send(
            m.T.LOGON_REQUEST,
            ProtocolVersion=m.PROTOCOL_VERSION,
            Username=self._user,
            Password=self._password,
            HeartbeatIntervalInSeconds=int(max(1, round(self._heartbeat_s))),
            ClientName="tickpipe",
        )
        deadline = time.monotonic() + LOGON_WAIT_S
        while True:
            try:
                messages = await conn.receive(max(0.01, deadline - time.monotonic()))
            except TimeoutError as exc:
                raise TransportError(
                    "no LOGON_RESPONSE from the DTC server", source=self.name
                ) from exc
            for i, msg in enumerate(messages):
                if msg.get("Type") == m.T.LOGON_RESPONSE:
                    conn.push_back(messages[i + 1 :])
                    self._logged_on(msg, ctx)
                    return

    def _logged_on(self, msg: Message, ctx: SourceContext) -> None:
        result = msg.get("Result")
        text = str(msg.get("ResultText") or "").strip()
        if result in (m.LogonStatus.ERROR, m.LogonStatus.ERROR_NO_RECONNECT):
            raise ConfigError(
                f"Sierra Chart's DTC server refused the logon ({text or 'no reason given'}): "
                "check SIERRA_DTC_USERNAME and SIERRA_DTC_PASSWORD"
            )
        if result == m.LogonStatus.RECONNECT_NEW_ADDRESS:
            raise TransportError(
                f"the DTC server redirects to {msg.get('ReconnectAddress')!r}", source=self.name
            )
        ctx.info(
            server_name=str(msg.get("ServerName") or ""),
            logon=text,
            market_data_supported=bool(msg.get("MarketDataSupported", 1)),
        )
        if msg.get("MarketDataSupported") == 0:
            ctx.info(warning="the server says it serves no market data")

    async def _heartbeats(self, conn: _Connection) -> None:
        while True:
            await conn.send(
                m.T.HEARTBEAT,
                NumDroppedMessages=0,
                CurrentDateTime=self._clock.now_ns() // 1_000_000_000,
            )
            await asyncio.sleep(self._heartbeat_s)

    async def _stream(self, conn: _Connection, ctx: SourceContext) -> None:
        decoder = DtcDecoder({s.symbol_id: s.symbol for s in self._subs}, ctx.sequences)
        silence = SILENCE_HEARTBEATS * self._heartbeat_s
        while True:
            try:
                messages = await conn.receive(silence)
            except TimeoutError as exc:
                raise TransportError(
                    f"no heartbeat from the Sierra Chart DTC server for {silence:g}s",
                    source=self.name,
                ) from exc
            except ParseError as exc:
                await ctx.reject(exc.raw or b"", str(exc))
                raise TransportError(f"DTC stream out of step: {exc}", source=self.name) from exc
            for bad in [msg for msg in messages if msg["Type"] == BAD_FRAME]:
                await ctx.reject(bad["raw"], bad["error"])
            messages = [msg for msg in messages if msg["Type"] != BAD_FRAME]
            facts = Facts()
            batches = decoder.decode(messages, self._clock.now_ns(), facts)
            for raw, reason in facts.errors:
                await ctx.reject(raw, reason)
            if batches:
                await ctx.emit(batches)
            else:
                ctx.alive()
            self._show(facts, ctx)

    def _show(self, facts: Facts, ctx: SourceContext) -> None:
        if facts.heartbeats:
            ctx.count("heartbeats", facts.heartbeats)
        for type_, n in facts.unknown.items():
            ctx.count(f"unhandled_type_{type_}", n)
        if facts.logoff is not None:
            reason = str(facts.logoff.get("Reason") or "no reason given")
            if facts.logoff.get("DoNotReconnect"):
                raise ConfigError(
                    f"Sierra Chart's DTC server logged us off and asks us not to reconnect: {reason}"
                )
            raise TransportError(f"the DTC server logged us off: {reason}", source=self.name)
        if not facts.changed:
            return
        if facts.feed_status is not None:
            ctx.info(feed_status=facts.feed_status)
        if facts.symbols:
            for symbol, shown in facts.symbols.items():
                self._symbol_facts.setdefault(symbol, {}).update(shown)
            ctx.info(symbols={k: dict(v) for k, v in self._symbol_facts.items()})
        if facts.rejected:
            self._rejected.update(facts.rejected)
            ctx.count("market_data_rejects", len(facts.rejected))
            ctx.info(rejected=dict(self._rejected))
            listed = "; ".join(f"{k}: {v}" for k, v in sorted(self._rejected.items()))
            everything = len(self._rejected) >= len(self._subs)
            ctx.phase(
                (
                    "market data refused for every symbol: "
                    if everything
                    else "market data refused for "
                )
                + listed
                + (
                    " (exchanges often forbid DTC redistribution: follow the .scid files with SIERRA_SCID_DIR)"
                    if everything
                    else ""
                )
            )
            log.warning("Sierra Chart DTC refused market data: %s", listed)
