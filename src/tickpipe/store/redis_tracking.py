"""One RESP3 connection that reads with ``CLIENT TRACKING`` on: Redis says when a key it
read has changed.

Redis remembers the keys this connection read; the first change to one of them (an XADD,
a DEL, an eviction, a FLUSHDB) makes Redis push ``invalidate [key]`` on this same
connection (``invalidate null`` for a flush) behind every reply it had already queued, so
a reader that applies the pushes in arrival order keeps no stale copy longer than a push
takes to arrive. The key is then untracked until it is read again. Tracking is not a
pub/sub subscription (``CLIENT LIST`` shows ``flags=t sub=0``).

redis-py's asyncio client reads a connection only while a command awaits its reply, and
has no hook for pushes that arrive between commands; this protocol parses every frame as
it arrives (``data_received``), hands invalidations to ``on_invalidate`` at once and
answers callers in order. It sends commands as arrays of bulk strings and reads every
RESP3 reply type; URLs are read by redis-py's ``parse_url`` (``redis://``, ``rediss://``,
``unix://``, password, user and db). Needs Redis 6.2 or later.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable, Mapping
from typing import Any, cast

from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ResponseError

Invalidated = Callable[[list[bytes] | None], None]
"""called with the changed keys, or None when every key may have changed (a flush, or the
connection is gone)"""


class ReplyError(ResponseError):
    """An error reply (``-ERR ...``); a ``RedisError``, so callers treat it as any other."""


class _Incomplete(Exception):
    """The buffer ends inside a frame: wait for more bytes."""


class _Push(list[Any]):
    """An out-of-band frame (``>``): never the reply to a command."""


def pack(args: tuple[bytes | str | int, ...]) -> bytes:
    """A command as RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


_BLOBS = frozenset(b"$=!")
_AGGREGATES = frozenset(b"*~>%|")
_SCALARS: dict[int, Callable[[bytes], Any]] = {
    ord("+"): bytes,
    ord("-"): lambda line: ReplyError(line.decode(errors="replace")),
    ord(":"): int,
    ord("("): int,
    ord(","): float,
    ord("#"): lambda line: line == b"t",
    ord("_"): lambda line: None,
}


def parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2/RESP3 value starting at ``pos``: (value, position after it). Raises
    ``_Incomplete`` when the buffer ends inside it, ``ValueError`` on a malformed one."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    tag = buf[pos]
    head = bytes(buf[pos + 1 : end])
    pos = end + 2
    if tag in _BLOBS:
        return _blob(buf, pos, tag, int(head))
    if tag in _AGGREGATES:
        return _aggregate(buf, pos, tag, int(head))
    scalar = _SCALARS.get(tag)
    if scalar is None:
        raise ValueError(f"unknown RESP type byte {tag!r}")
    return scalar(head), pos


def _blob(buf: bytearray, pos: int, tag: int, size: int) -> tuple[Any, int]:
    if size < 0:
        return None, pos  # RESP2 null bulk string
    stop = pos + size
    if len(buf) < stop + 2:
        raise _Incomplete
    data = bytes(buf[pos:stop])
    if tag == ord("!"):
        return ReplyError(data.decode(errors="replace")), stop + 2
    return (data[4:] if tag == ord("=") else data), stop + 2  # '=': "txt:" + text


def _aggregate(buf: bytearray, pos: int, tag: int, count: int) -> tuple[Any, int]:
    if count < 0:
        return None, pos  # RESP2 null array
    items = []
    for _ in range(count * 2 if tag in b"%|" else count):
        item, pos = parse(buf, pos)
        items.append(item)
    if tag == ord("|"):
        return parse(buf, pos)  # attributes annotate the reply after them: dropped
    if tag == ord(">"):
        return _Push(items), pos
    if tag == ord("%"):
        return dict(zip(items[::2], items[1::2], strict=True)), pos
    return items, pos


class _Protocol(asyncio.Protocol):
    def __init__(self, on_invalidate: Invalidated) -> None:
        self.on_invalidate = on_invalidate
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.buffer = bytearray()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        pos = 0
        try:
            while pos < len(self.buffer):
                value, pos = parse(self.buffer, pos)
                self._dispatch(value)
        except _Incomplete:
            pass
        except (ValueError, TypeError) as exc:
            self._fail(ConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        del self.buffer[:pos]

    def _dispatch(self, value: Any) -> None:
        if isinstance(value, _Push):
            if value and value[0] == b"invalidate":
                self.on_invalidate(value[1])
            return
        if not self.pending:
            raise ValueError("a reply nobody asked for")
        waiter = self.pending.popleft()
        if waiter.done():  # its caller gave up (and closed this connection)
            return
        if isinstance(value, ReplyError):
            waiter.set_exception(value)
        else:
            waiter.set_result(value)

    def _fail(self, error: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(error)

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionError(f"tracking connection to Redis lost ({exc or 'closed'})")
        while self.pending:
            waiter = self.pending.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)
            self.on_invalidate(None)


class TrackingConnection:
    """A connection whose reads Redis tracks; ``on_invalidate`` hears of every change to a
    key read through it, and of the connection's end (``None``: forget everything)."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(
        cls, url: str, on_invalidate: Invalidated, name: str, timeout_s: float
    ) -> TrackingConnection:
        """Connect, authenticate, select the db and turn tracking on, within ``timeout_s``."""
        params = parse_url(url)
        loop = asyncio.get_running_loop()
        protocol = _Protocol(on_invalidate)
        async with asyncio.timeout(timeout_s):
            if "path" in params:
                await loop.create_unix_connection(lambda: protocol, params["path"])
            else:
                tls = ssl.create_default_context() if _uses_tls(params) else None
                host, port = params.get("host", "localhost"), params.get("port", 6379)
                await loop.create_connection(lambda: protocol, host, port, ssl=tls)
        connection = cls(protocol)
        try:
            hello: list[str | int] = ["HELLO", 3, "SETNAME", name]
            if params.get("password"):
                hello += ["AUTH", params.get("username") or "default", params["password"]]
            await connection.call(*hello, timeout_s=timeout_s)
            if params.get("db"):
                await connection.call("SELECT", params["db"], timeout_s=timeout_s)
            await connection.call("CLIENT", "TRACKING", "ON", timeout_s=timeout_s)
        except BaseException:
            connection.close()
            raise
        return connection

    async def call(self, *args: bytes | str | int, timeout_s: float) -> Any:
        """Send one command and wait for its reply. A reply later than ``timeout_s`` closes
        the connection: it would otherwise answer the next caller."""
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionError("tracking connection to Redis is closed")
        waiter = asyncio.get_running_loop().create_future()
        self._protocol.pending.append(waiter)
        transport.write(pack(args))
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        except TimeoutError:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._protocol.lost.done()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._protocol.lost)

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.abort()  # replies still in flight are of no use


def _uses_tls(params: Mapping[str, object]) -> bool:
    connection_class = params.get("connection_class")
    return isinstance(connection_class, type) and issubclass(connection_class, SSLConnection)
