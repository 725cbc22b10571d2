"""What to poll: gexbot tickers as tickpipe symbols, categories as REST paths.

gexbot spells indexes bare (``SPX``) and futures as ``<future>_<index>`` (``ES_SPX``: the
SPX levels expressed in ES prices). Inside tickpipe symbols are canonical (``$SPX``,
``/ES``; see ``tickpipe.symbols``), so SPX levels from gexbot and from tickpipe's own
engine share one symbol and can be compared and queried together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from enum import StrEnum

from tickpipe.errors import ConfigError
from tickpipe.symbols import is_canonical

INDEX_TICKERS = frozenset({"SPX", "NDX", "RUT", "VIX", "SPXW", "NDXP", "RUTW", "VIXW", "XSP"})
"""gexbot's indexes and index variants (spec enums ``ticker_index``/``ticker_variant``)"""

CATEGORIES = ("full", "zero", "one")
"""classic categories: every expiry up to 90 days, the next expiry, the one after it"""
_ALIASES = {"gex_full": "full", "gex_zero": "zero", "gex_one": "one"}

V2_DEFAULT_BASE_URL = "https://api.gex.bot/v2"
V1_DEFAULT_BASE_URL = "https://api.gexbot.com"


class View(StrEnum):
    """Which classic endpoint of a category: the chain, its majors, or its max change."""

    CHAIN = "chain"
    MAJORS = "majors"
    MAXCHANGE = "maxchange"


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    category: str
    view: View

    @property
    def label(self) -> str:
        """The ``category`` column value: ``full``, or ``full/majors`` for a sub-endpoint."""
        return self.category if self.view is View.CHAIN else f"{self.category}/{self.view}"

    def path(self, ticker: str) -> str:
        suffix = "" if self.view is View.CHAIN else f"/{self.view}"
        return f"/{ticker}/classic/{self.category}{suffix}"


def canonical_symbol(ticker: str) -> str:
    """tickpipe's symbol for a gexbot ticker: ``SPX`` -> ``$SPX``, ``ES_SPX`` -> ``/ES``,
    ``SPY`` -> ``SPY``; an already canonical ``$SPX`` or ``/ES`` is returned as is."""
    text = ticker.strip().upper()
    if text.startswith(("$", "/")):
        return text
    if text in INDEX_TICKERS:
        return "$" + text
    future, sep, _ = text.partition("_")
    if sep:
        return "/" + future
    return text


def parse_tickers(tickers: Iterable[str]) -> dict[str, str]:
    """gexbot ticker -> canonical symbol, in the order given; ConfigError names the setting."""
    out: dict[str, str] = {}
    for raw in tickers:
        ticker = raw.strip().upper()
        if not ticker:
            continue
        if ticker.startswith(("$", "/")):
            raise ConfigError(
                f"GEXBOT_TICKERS: {raw!r} is tickpipe's spelling; use gexbot's ticker "
                "(SPX, SPY, ES_SPX...)"
            )
        symbol = canonical_symbol(ticker)
        if not is_canonical(symbol):
            raise ConfigError(f"GEXBOT_TICKERS: {raw!r} is not a gexbot ticker (SPX, SPY, ES_SPX)")
        if symbol in out.values():
            raise ConfigError(f"GEXBOT_TICKERS: {raw!r} repeats the symbol {symbol}")
        out[ticker] = symbol
    if not out:
        raise ConfigError("GEXBOT_TICKERS is empty: list gexbot tickers, e.g. SPX,SPY,QQQ")
    return out


def parse_categories(entries: Iterable[str]) -> list[Endpoint]:
    """``full``, ``zero``, ``one`` (or ``gex_*``), each optionally ``/majors`` or
    ``/maxchange``. Chains and majors come first: a max-change answer has no spot of its
    own and takes the ticker's latest one."""
    out: list[Endpoint] = []
    for raw in entries:
        text = raw.strip().lower()
        if not text:
            continue
        category, _, view_text = text.partition("/")
        category = _ALIASES.get(category, category)
        try:
            view = View(view_text) if view_text else View.CHAIN
        except ValueError:
            view = None
        if category not in CATEGORIES or view is None:
            raise ConfigError(
                f"GEXBOT_CATEGORIES: {raw!r} is not one of full, zero, one "
                "(each optionally followed by /majors or /maxchange)"
            )
        endpoint = Endpoint(category, view)
        if endpoint not in out:
            out.append(endpoint)
    if not out:
        raise ConfigError("GEXBOT_CATEGORIES is empty: e.g. full,zero,one")
    if all(e.view is View.MAXCHANGE for e in out):
        raise ConfigError(
            "GEXBOT_CATEGORIES: a max-change answer carries no spot; add a chain or majors "
            "category (e.g. zero) beside it"
        )
    return sorted(out, key=lambda e: e.view is View.MAXCHANGE)
