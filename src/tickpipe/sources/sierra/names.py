"""Sierra Chart symbol spellings to tickpipe's canonical symbols, and per-symbol tick sizes.

Sierra names a chart data file after its symbol as the data service spells it: ``ESZ25-CME``,
``ESZ5_FUT_CME``, ``NQH26.CME``, ``AAPL``. Futures contracts become ``/ESZ25`` (a root of 1–4
characters, a month code and a one- or two-digit year); equity-like names stay as they are.
Anything else needs an explicit mapping, written ``SIERRA_NAME=/SYMBOL``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

from tickpipe.errors import ConfigError
from tickpipe.symbols import is_canonical

_CONTRACT = re.compile(r"^[A-Z0-9]{1,4}?[FGHJKMNQUVXZ]\d{1,2}$")
_SUFFIX = re.compile(r"[-_@]")


def canonical_symbol(name: str) -> str | None:
    """``ESZ25-CME`` -> ``/ESZ25``; ``AAPL`` -> ``AAPL``; None when it cannot be told."""
    text = name.strip().upper()
    if text.startswith("/") and is_canonical(text):
        return text
    base = _SUFFIX.split(text, maxsplit=1)[0]
    if "." in base and _CONTRACT.match(base.split(".", 1)[0]):
        base = base.split(".", 1)[0]  # NQH26.CME
    if _CONTRACT.match(base):
        candidate = "/" + base
        return candidate if is_canonical(candidate) else None
    return base if is_canonical(base) else None


def parse_mapping(entry: str) -> tuple[str, str]:
    """One ``SIERRA_SYMBOLS`` / ``SIERRA_DTC_SYMBOLS`` entry: (Sierra name, canonical symbol).

    ``ESZ25-CME`` maps by the rules above; ``ESZ25-CME=/ESZ25`` says it explicitly."""
    name, sep, symbol = entry.partition("=")
    name = name.strip()
    if sep:
        symbol = symbol.strip().upper()
        if not is_canonical(symbol):
            raise ConfigError(
                f"{entry!r}: {symbol!r} is not a tickpipe symbol (futures /ESZ25, stocks SPY)"
            )
        return name, symbol
    found = canonical_symbol(name)
    if found is None:
        raise ConfigError(
            f"cannot tell the tickpipe symbol of Sierra Chart symbol {name!r}: "
            f"write it as {name}=/SYMBOL"
        )
    return name, found


def symbol_of_file(path: Path) -> str | None:
    """The canonical symbol a chart data file's name implies (``ESZ25-CME.scid`` -> ``/ESZ25``;
    a market-depth file ``ESZ25-CME.2025-11-26.depth`` -> ``/ESZ25``)."""
    stem = path.name
    for suffix in (".scid", ".depth"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"[._ ]\d{4}-\d{2}-\d{2}$", "", stem)
    return canonical_symbol(stem)


def _root(symbol: str) -> str:
    """``/ESZ25`` -> ``ES``: the product a tick size usually belongs to."""
    bare = symbol.lstrip("/")
    match = re.match(r"^([A-Z0-9]{1,4}?)[FGHJKMNQUVXZ]\d{1,2}$", bare)
    return match.group(1) if match else bare


def tick_size_for(symbol: str, table: Mapping[str, float], *, name: str = "") -> float | None:
    """A symbol's tick size from ``SIERRA_TICK_SIZES``: keyed by the contract (``/ESZ25`` or
    ``ESZ25``), the Sierra name (``ESZ25-CME``) or the product root (``ES``)."""
    keys = {k.strip().upper().lstrip("/"): v for k, v in table.items()}
    for key in (symbol.lstrip("/"), name.upper(), _root(symbol)):
        if key and key in keys:
            return keys[key]
    return None


def check_tick_size(value: float, what: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what}: tick size must be a positive number, got {value!r}")
    return value
