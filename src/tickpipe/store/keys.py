"""Redis key and channel names, defined once."""

from __future__ import annotations

from tickpipe.config import Settings
from tickpipe.events import Kind

PREFIX = "tickpipe"


def stream_key(kind: Kind, symbol: str) -> str:
    """Redis Stream of recent events of one kind and symbol (entries are columnar chunks)."""
    return f"{PREFIX}:hot:{kind.value}:{symbol}"


def stream_symbols_key(kind: Kind) -> str:
    """Set of symbols that have a hot stream of this kind."""
    return f"{PREFIX}:symbols:{kind.value}"


def latest_quote_key() -> str:
    """Hash: symbol -> the latest top-of-book quote."""
    return f"{PREFIX}:quote:latest"


def status_key() -> str:
    """The ingest process's latest status JSON, for API processes to show."""
    return f"{PREFIX}:status"


def gex_key(underlying: str, category: str, basis: str) -> str:
    return f"gex:{underlying}:{category}:{basis}"


def channel_for(kind: Kind, settings: Settings) -> str:
    """Pub/sub channel of a kind: trades and quotes on the tick channel, book on level 2."""
    return {
        Kind.TRADE: settings.tick_channel,
        Kind.QUOTE: settings.tick_channel,
        Kind.BOOK: settings.level2_channel,
        Kind.OPTION: settings.option_channel,
        Kind.GEX: settings.gex_channel,
        Kind.BAR: settings.tick_channel,
    }[kind]
