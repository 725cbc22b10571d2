"""Parsing and checking query parameters; every refusal names the parameter and the fix."""

from __future__ import annotations

import base64
import datetime as dt

import orjson

from tickpipe.errors import QueryError
from tickpipe.events import Kind
from tickpipe.symbols import parse_symbol_list

NS = 1_000_000_000


def parse_time(value: str, name: str) -> int:
    """ISO-8601 (``2026-11-26T14:30:00Z``, offsets allowed, naive means UTC), a date
    (``2026-11-26``, midnight UTC), or integer nanoseconds since the Unix epoch."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            stamp = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        else:
            stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=dt.UTC)
    except ValueError:
        raise QueryError(
            f"{name}={value!r} is not a time: use ISO-8601 (2026-11-26T14:30:00Z), "
            "a date (2026-11-26) or integer nanoseconds",
            code="bad_time",
        ) from None
    delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000


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


def parse_types(value: str | None, default: tuple[Kind, ...]) -> list[Kind]:
    if not value:
        return list(default)
    kinds = []
    for part in value.split(","):
        part = part.strip().lower()
        try:
            kinds.append(Kind(part))
        except ValueError:
            raise QueryError(
                f"unknown type {part!r}; use {', '.join(k.value for k in Kind)}", code="bad_type"
            ) from None
    return list(dict.fromkeys(kinds))


def parse_symbols(value: str) -> list[str]:
    return parse_symbol_list(value)


Cursor = tuple[int, str, str, str, int]
"""(ts_event, type, symbol, source, seq) of the last row returned."""


def encode_cursor(row: Cursor) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(row))).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        ts, kind, symbol, source, seq = raw
        return int(ts), str(kind), str(symbol), str(source), int(seq)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise QueryError("cursor is not one this server returned", code="bad_cursor") from None
