"""Parsing and checking query parameters; every refusal names the parameter and the fix.

Errors quote at most ``QUOTE_CHARS`` characters of what was sent (a 60 KB symbol must not
come back as a 60 KB error). Integers are read by ``parse_int`` alone (ASCII digits), so
every integer parameter is refused in the same words. Times are bounded to what int64 nanoseconds can hold, so no
value that passes here can overflow a date, a partition name or an Arrow scalar later.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
import time
from typing import Any

import orjson
from pydantic import BeforeValidator

from tickpipe.errors import QueryError
from tickpipe.events import Kind
from tickpipe.symbols import parse_symbol_list

NS = 1_000_000_000
QUOTE_CHARS = 100
MIN_TIME_NS = 0
MAX_TIME_NS = 2**63 - 1
"""1970-01-01 to 2262-04-11: the span of int64 nanoseconds since the epoch."""
MAX_SYMBOL_CHARS = 32
"""longer than any canonical symbol (an OCC option symbol has 21 characters)"""
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may cost, checked before its query runs. Streamed formats stream
    with bounded memory whatever their size; these bound the work and the bytes."""

    json_range_ns: int = 31 * 86_400 * NS
    """raw JSON history: the widest time range of one request (pages within it)"""
    json_bars: int = 200_000
    """JSON bars: intervals x symbols"""
    stream_bars: int = 20_000_000
    """bars in Arrow/Parquet/CSV: intervals x symbols"""
    stream_cells: int = 250_000_000
    """raw rows x columns in Arrow/Parquet/CSV and replay (about 20 M trades)"""


def quote(value: str) -> str:
    """``value`` for an error message: repr of at most the first ``QUOTE_CHARS`` characters."""
    if len(value) <= QUOTE_CHARS:
        return repr(value)
    return f"{value[:QUOTE_CHARS]!r}… ({len(value):,} characters)"


def parse_int(value: str, name: str, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high`` written in ASCII digits: no sign, space,
    underscore, point or another script's digits (Python's ``int`` takes ``٣`` and
    ``1_0``, pydantic ``+3``, `` 3`` and ``3.0``). A 422 ``invalid_parameter`` otherwise."""
    if value.isascii() and value.isdigit() and len(value) <= 20 and low <= int(value) <= high:
        return int(value)
    raise QueryError(
        f"{name}={quote(value)} is not allowed: {name} is a whole number from {low:,} to "
        f"{high:,}, in ASCII digits",
        code="invalid_parameter",
        status=422,
    )


def int_query(name: str, low: int, high: int) -> BeforeValidator:
    """For a FastAPI query parameter, ``Annotated[int, Query(ge=low, le=high),
    int_query("limit", low, high)]``: read by ``parse_int`` (so refused in its words),
    while OpenAPI still documents an integer from ``low`` to ``high``."""

    def check(value: Any) -> Any:
        return parse_int(value, name, low, high) if isinstance(value, str) else value

    return BeforeValidator(check)


_RELATIVE = re.compile(r"^(now|today)(?:([+-])(\d{1,9})([smhd]))?$")
_UNIT_NS = {"s": NS, "m": 60 * NS, "h": 3600 * NS, "d": 86_400 * NS}


def parse_time(value: str, name: str) -> int:
    """ISO-8601 (``2026-11-26T14:30:00Z``, offsets allowed, naive means UTC), a date
    (``2026-11-26``, midnight UTC), integer nanoseconds since the Unix epoch, or relative:
    ``now``, ``today`` (midnight UTC), either with an offset (``now-15m``, ``today-1d``;
    units s, m, h, d). Between 1970-01-01 and 2262-04-11 (what int64 nanoseconds hold)."""
    text = value.strip()
    relative = _RELATIVE.match(text.lower())
    if relative:
        now = time.time_ns()
        ns = now - now % _UNIT_NS["d"] if relative[1] == "today" else now
        if relative[2]:
            offset = int(relative[3]) * _UNIT_NS[relative[4]]
            ns += offset if relative[2] == "+" else -offset
    elif text.lstrip("-").isdigit():
        if len(text) > 20:
            _out_of_range(name, value)
        ns = int(text)
    else:
        try:
            if len(text) == 10:
                day = dt.date.fromisoformat(text)
                stamp = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            else:
                stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=dt.UTC)
            delta = stamp - _EPOCH
        except (ValueError, OverflowError):
            raise QueryError(
                f"{name}={quote(value)} is not a time: use ISO-8601 (2026-11-26T14:30:00Z), "
                "a date (2026-11-26), integer nanoseconds, or now / today with an offset "
                "(now-15m)",
                code="bad_time",
            ) from None
        ns = (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000
    if not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        _out_of_range(name, value)
    return ns


def _out_of_range(name: str, value: str) -> None:
    raise QueryError(
        f"{name}={quote(value)} is out of range: times run from 1970-01-01 to 2262-04-11 "
        f"(0 to {MAX_TIME_NS} ns)",
        code="bad_time",
    )


def parse_range(
    start: str, end: str, *, max_ns: int | None = None, what: str = ""
) -> tuple[int, int]:
    start_ns, end_ns = parse_time(start, "start_time"), parse_time(end, "end_time")
    if start_ns >= end_ns:
        raise QueryError("start_time must be before end_time", code="bad_range")
    if max_ns is not None and end_ns - start_ns > max_ns:
        days = max_ns / (86_400 * NS)
        raise QueryError(
            f"time range too large{what}: at most {days:g} days; page through it or use "
            "format=arrow|parquet|csv, which stream",
            code="range_too_large",
        )
    return start_ns, end_ns


def parse_types(value: str | None, default: tuple[Kind, ...], name: str = "types") -> list[Kind]:
    """Absent means ``default``; present but empty is refused, like every empty list."""
    if value is None:
        return list(default)
    parts = [p.strip().lower() for p in value.split(",") if p.strip()]
    if not parts:
        raise QueryError(
            f"{name} is empty: leave it out for {','.join(k.value for k in default)}, or name "
            f"some of {', '.join(k.value for k in Kind)}",
            code="bad_type",
        )
    kinds = []
    for part in parts:
        try:
            kinds.append(Kind(part))
        except ValueError:
            raise QueryError(
                f"unknown type {quote(part)}; use {', '.join(k.value for k in Kind)}",
                code="bad_type",
            ) from None
    return list(dict.fromkeys(kinds))


def parse_symbols(value: str) -> list[str]:
    """Comma-separated canonical symbols (at most 100); an empty list is refused."""
    for part in value.split(","):
        if len(part.strip()) > MAX_SYMBOL_CHARS:
            raise QueryError(
                f"not a canonical symbol: {quote(part.strip())}", code="bad_symbol"
            ) from None
    if not value.strip(" ,"):
        raise QueryError(
            "symbols is empty: name at least one (e.g. symbols=SPY)", code="bad_symbol"
        )
    return parse_symbol_list(value)


def parse_optional_symbols(value: str | None) -> list[str] | None:
    """Absent means every symbol; present but empty is refused (``symbols=`` is a mistake,
    not a wildcard)."""
    return None if value is None else parse_symbols(value)


Cursor = tuple[int, str, str, str, int]
"""(ts_event, type, symbol, source, seq) of the last row returned."""


def encode_cursor(row: Cursor) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(row))).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        if len(text) > 2048:
            raise ValueError("too long")
        raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        ts, kind, symbol, source, seq = raw
        cursor = int(ts), str(kind), str(symbol), str(source), int(seq)
        if not (MIN_TIME_NS <= cursor[0] <= MAX_TIME_NS and -(2**63) <= cursor[4] < 2**63):
            raise ValueError("out of range")
        return cursor
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise QueryError("cursor is not one this server returned", code="bad_cursor") from None
