"""The exception tree. Library errors are wrapped with ``raise ... from exc``.

TickpipeError
├── ConfigError          bad settings or credentials: refuse to start, say what to fix
├── FeedError            a source failed (carries source, symbol, raw payload)
│   ├── ParseError       one frame could not be parsed: quarantined, connection stays up
│   └── TransportError   the connection failed: the supervisor reconnects
├── StorageError         journal, lake, hot store or key database failed
│   └── DiskFullError    a write found no space left: nothing changed; free space, retry
├── KeyStoreError        an API-key operation was refused (duplicate, unknown, bad scope)
└── QueryError           a query is invalid (maps to HTTP 400)
    └── SymbolError      not a canonical symbol (feeds and queries alike; also a ValueError)
"""

from __future__ import annotations

import asyncio


class TickpipeError(Exception):
    """Base of every error tickpipe raises on purpose."""


class ConfigError(TickpipeError):
    """Settings are wrong; the message says which and how to fix it."""


class FeedError(TickpipeError):
    def __init__(
        self, message: str, *, source: str = "", symbol: str = "", raw: str | bytes | None = None
    ) -> None:
        super().__init__(message)
        self.source = source
        self.symbol = symbol
        self.raw = raw


class ParseError(FeedError):
    """A frame from a feed could not be turned into events."""


class TransportError(FeedError):
    """The connection to a feed failed or went silent."""


class StorageError(TickpipeError):
    """The journal, lake or hot store could not do its job."""


class DiskFullError(StorageError):
    """A write found the disk full and changed nothing; the message names the file."""


class KeyStoreError(TickpipeError):
    """An API-key operation was refused; the message says why."""


class QueryError(TickpipeError):
    """A query's parameters are invalid; ``code`` is the stable machine-readable reason."""

    def __init__(self, message: str, *, code: str = "invalid_query", status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class SymbolError(QueryError, ValueError):
    """A symbol is not in canonical form; adapters catch it as ValueError, the API as 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="bad_symbol")


def first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that decides what happens to a source whose task group failed: a
    ConfigError first (it must stop the source, not be retried), else the first leaf that is
    not a cancellation."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, ConfigError):
            return exc
    for exc in leaves:
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return TransportError("every task of the connection was cancelled")
