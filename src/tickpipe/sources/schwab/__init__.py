"""Schwab Trader API feed: the streamer (source ``schwab``) and option chains for GEX
(source ``schwab-chains``), sharing one token manager and one REST rate limit.

``auth`` (OAuth2 with PKCE, refresh, the token lifecycle), ``tokenstore`` (the token file and
``.env``), ``fields`` (streamer field numbers as tables), ``parse`` / ``chainparse`` (pure
decoders), ``subscriptions`` (which service each symbol goes to), ``streamer``, ``chains``,
``ratelimit``, ``rest``, ``cli`` (``tickpipe schwab oauth|rotate|stream``).
"""

from __future__ import annotations

import dataclasses

from tickpipe.clock import Clock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.sources.base import Source
from tickpipe.sources.schwab.auth import Credentials, TokenManager
from tickpipe.sources.schwab.ratelimit import TokenBucket
from tickpipe.sources.schwab.subscriptions import Plan, plan_subscriptions
from tickpipe.sources.schwab.tokenstore import TokenFile

TOKEN_FILE = "schwab_tokens.json"


@dataclasses.dataclass(frozen=True)
class Feed:
    """What both Schwab sources (and the CLI) share."""

    tokens: TokenManager
    limiter: TokenBucket
    plan: Plan


def token_file(settings: Settings) -> TokenFile:
    return TokenFile(settings.data_dir / TOKEN_FILE)


def credentials(settings: Settings) -> Credentials:
    """The app key and secret, or a ConfigError naming the one missing."""
    key, secret = settings.schwab_app_key, settings.schwab_app_secret
    for name, value in (("SCHWAB_APP_KEY", key), ("SCHWAB_APP_SECRET", secret)):
        if value is None or not value.get_secret_value().strip():
            raise ConfigError(
                f"the Schwab feed needs {name}: copy it from your app at developer.schwab.com "
                "into .env"
            )
    assert key is not None and secret is not None
    return Credentials(
        settings.schwab_api_base_url,
        key.get_secret_value().strip(),
        secret.get_secret_value().strip(),
    )


def token_manager(
    settings: Settings, clock: Clock, limiter: TokenBucket, *, need_refresh_token: bool = True
) -> TokenManager:
    """The process's token lifecycle; ConfigError names a missing credential."""
    creds = credentials(settings)
    store = token_file(settings)
    refresh = settings.schwab_refresh_token
    fallback = refresh.get_secret_value().strip() if refresh is not None else ""
    if need_refresh_token and not fallback and store.load() is None:
        raise ConfigError(
            "the Schwab feed needs SCHWAB_REFRESH_TOKEN: run `tickpipe schwab oauth` "
            "(scripts/schwab_oauth_helper.py) once to log in and save it"
        )
    return TokenManager(
        creds,
        store,
        clock,
        env_file=settings.schwab_env_file,
        fallback_refresh_token=fallback or None,
        limiter=limiter,
    )


def feed(settings: Settings, clock: Clock) -> Feed:
    """Check the settings and build the shared parts; ConfigError names what is wrong."""
    limiter = TokenBucket(settings.schwab_requests_per_minute)
    tokens = token_manager(settings, clock, limiter)
    plan = plan_subscriptions(settings.schwab_symbols, settings.schwab_book_symbols)
    if not plan.keys and not settings.schwab_chain_symbols:
        raise ConfigError(
            "the Schwab feed needs symbols: set SCHWAB_SYMBOLS (streamed), "
            "SCHWAB_BOOK_SYMBOLS (level 2) or SCHWAB_CHAIN_SYMBOLS (option chains for GEX)"
        )
    return Feed(tokens, limiter, plan)


def build(settings: Settings, clock: Clock) -> list[Source]:
    from tickpipe.sources.schwab.chains import ChainPoller
    from tickpipe.sources.schwab.streamer import SchwabStreamer

    shared = feed(settings, clock)
    sources: list[Source] = []
    if shared.plan.keys:
        sources.append(SchwabStreamer(settings, clock, shared.tokens, shared.limiter, shared.plan))
    if settings.schwab_chain_symbols:
        sources.append(ChainPoller(settings, clock, shared.tokens, shared.limiter))
    return sources
