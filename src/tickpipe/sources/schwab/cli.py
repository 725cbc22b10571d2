"""``tickpipe schwab oauth | rotate | stream`` (and the scripts/ wrappers of the seed).

- ``oauth``: prints the consent URL, takes the redirected URL (caught on a loopback https
  ``SCHWAB_CALLBACK_URL``, or pasted), exchanges the code, saves the tokens to
  ``data/schwab_tokens.json`` and the refresh token to ``.env``.
- ``rotate``: refreshes the access token every ``--access-interval-minutes`` and warns once
  the browser login is ``--refresh-interval-days`` old (Schwab's refresh token cannot be
  renewed without the browser: it dies 7 days after the login).
- ``stream``: the Schwab sources alone (no HTTP API) into the hot store, the bus (Redis
  pub/sub with ``TICKPIPE_REDIS_URL``) and the lake; ``--dry-run`` checks everything short
  of opening the websocket and exits non-zero with a sentence when something is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

REDIRECT_WAIT_S = 600.0


def register(commands: argparse._SubParsersAction, imports: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``tickpipe schwab ...``."""
    schwab = commands.add_parser("schwab", help="Schwab feed: log in, keep tokens fresh, stream")
    sub = schwab.add_subparsers(dest="schwab_command", required=True)
    env_help = "the .env holding SCHWAB_* settings and receiving the refresh token (default .env)"

    oauth = sub.add_parser("oauth", help="log in with the browser; saves the refresh token")
    oauth.add_argument("--env-file", type=Path, help=env_help)
    oauth.add_argument(
        "--no-listen", action="store_true", help="do not listen on the callback: paste the URL"
    )
    oauth.set_defaults(func=_cmd_oauth)

    rotate = sub.add_parser("rotate", help="keep data/schwab_tokens.json and .env fresh")
    rotate.add_argument(
        "--access-interval-minutes",
        type=float,
        default=25.0,
        help="refresh the access token this often (default 25; Schwab's lasts 30 minutes)",
    )
    rotate.add_argument(
        "--refresh-interval-days",
        type=float,
        default=6.0,
        help="warn (log error) once the browser login is this old; Schwab ends it at 7 days",
    )
    rotate.add_argument("--once", action="store_true", help="refresh once and exit")
    rotate.add_argument("--env-file", type=Path, help=env_help)
    rotate.set_defaults(func=_cmd_rotate)

    stream = sub.add_parser("stream", help="run the Schwab sources alone (bus and lake, no API)")
    stream.add_argument(
        "--dry-run", action="store_true", help="check settings, Redis and a token refresh; exit"
    )
    stream.add_argument("--env-file", type=Path, help=env_help)
    stream.set_defaults(func=_cmd_stream)


def _settings(args: argparse.Namespace) -> Any:
    from tickpipe.config import load_settings
    from tickpipe.logsafe import configure_logging

    overrides: dict[str, Any] = {}
    if args.env_file is not None:
        overrides = {"_env_file": args.env_file, "schwab_env_file": args.env_file}
    settings = load_settings(**overrides)
    configure_logging(settings.log_level)
    return settings


def _feed_errors(run: Callable[[], int]) -> int:
    """A Schwab endpoint that cannot be reached is a sentence and exit code 1, not a trace."""
    from tickpipe.errors import FeedError

    try:
        return run()
    except FeedError as exc:
        print(f"tickpipe: {exc}", file=sys.stderr)
        return 1


# ---- oauth ---------------------------------------------------------------------------


async def login_flow(settings: Any, read_redirect: Callable[[str], str]) -> Any:
    """PKCE login: ``read_redirect(consent_url)`` returns the URL the browser was sent to."""
    from tickpipe.clock import SystemClock
    from tickpipe.sources.schwab import token_manager
    from tickpipe.sources.schwab.auth import authorize_url, code_from_redirect, pkce_pair
    from tickpipe.sources.schwab.ratelimit import TokenBucket

    limiter = TokenBucket(settings.schwab_requests_per_minute)
    tokens = token_manager(settings, SystemClock(), limiter, need_refresh_token=False)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    callback = settings.schwab_callback_url
    url = authorize_url(
        settings.schwab_api_base_url, tokens.creds.app_key, callback, state, challenge
    )
    redirected = await asyncio.to_thread(read_redirect, url)
    code = code_from_redirect(redirected, state)
    return await tokens.login(code, verifier, callback)


def interactive_redirect(callback: str, listen: bool) -> Callable[[str], str]:
    """Print the consent URL; wait for the callback request or a pasted URL."""
    from tickpipe.errors import ConfigError
    from tickpipe.sources.schwab.callback import CallbackCatcher, is_loopback_https

    def read(url: str) -> str:
        found: queue.Queue[str] = queue.Queue()
        state = parse_qs(urlsplit(url).query).get("state", [""])[0]
        catcher = (
            CallbackCatcher(callback, found, state=state, say=_say_foreign_callback)
            if listen and is_loopback_https(callback)
            else None
        )
        listening = catcher is not None and catcher.start()
        print("1. Open this address in a browser and log in to Schwab:\n")
        print(f"   {url}\n")
        print(f"2. Accept the terms and choose the accounts; Schwab then sends you to {callback}.")
        if listening:
            print("   tickpipe is listening there: accept the browser's certificate warning,")
            print("   or paste the whole address from the address bar here and press Enter.")
        else:
            print("   Paste the whole address from the browser's address bar here and press Enter")
        print("   (the code in it expires after about 30 seconds).\n")

        def stdin() -> None:
            for line in sys.stdin:
                if line.strip():
                    found.put(line.strip())
                    return

        threading.Thread(target=stdin, name="oauth-paste", daemon=True).start()
        try:
            return found.get(timeout=REDIRECT_WAIT_S)
        except queue.Empty:
            raise ConfigError("no redirect within 10 minutes: run the helper again") from None
        finally:
            if catcher is not None:
                catcher.stop()

    return read


def _say_foreign_callback() -> None:
    print(
        "\n   The browser came back from another login attempt (an older Schwab link, or "
        "another\n   run of this helper), so it was ignored. Open the link above in the "
        "browser again,\n   or run `tickpipe schwab oauth` again.\n",
        flush=True,
    )


def _cmd_oauth(args: argparse.Namespace) -> int:
    settings = _settings(args)

    def run() -> int:
        reader = interactive_redirect(settings.schwab_callback_url, not args.no_listen)
        tokens = asyncio.run(login_flow(settings, reader))
        print(
            f"Logged in. Tokens saved to {settings.data_dir / 'schwab_tokens.json'} (mode 0600) "
            f"and SCHWAB_REFRESH_TOKEN to {settings.schwab_env_file}."
        )
        print(
            f"The refresh token lasts until {_iso(tokens.refresh_expires_at)} (7 days): run this "
            "again before then. Keep `tickpipe schwab rotate` or the pipeline running meanwhile."
        )
        return 0

    return _feed_errors(run)


# ---- rotate --------------------------------------------------------------------------


async def rotate(settings: Any, access_minutes: float, refresh_days: float, once: bool) -> None:
    from tickpipe.clock import SystemClock
    from tickpipe.errors import TransportError
    from tickpipe.sources.schwab import token_manager
    from tickpipe.sources.schwab.ratelimit import TokenBucket

    clock = SystemClock()
    tokens = token_manager(settings, clock, TokenBucket(settings.schwab_requests_per_minute))
    while True:
        try:
            current = await tokens.refresh()
        except TransportError as exc:
            if once:
                raise
            log.warning("token refresh failed (%s); trying again in a minute", exc)
            await asyncio.sleep(60)
            continue
        facts = tokens.facts()
        log.info(
            "access token refreshed, valid until %s; refresh token expires %s",
            facts["access_token_expires_at"],
            facts.get("refresh_token_expires_at") or "(login time unknown)",
        )
        if current.login_at is not None:
            age_days = (clock.now_ns() / 1e9 - current.login_at) / 86_400
            if age_days >= refresh_days:
                log.error(
                    "the Schwab login is %.1f days old (refresh tokens die at 7): run "
                    "`tickpipe schwab oauth` now",
                    age_days,
                )
        tokens.warn_if_expiring()
        if once:
            return
        await asyncio.sleep(access_minutes * 60)


def _cmd_rotate(args: argparse.Namespace) -> int:
    settings = _settings(args)

    def run() -> int:
        with _interrupt_quietly():
            asyncio.run(
                rotate(
                    settings, args.access_interval_minutes, args.refresh_interval_days, args.once
                )
            )
        return 0

    return _feed_errors(run)


# ---- stream --------------------------------------------------------------------------


async def dry_run(settings: Any, say: Callable[[str], None] = print) -> None:
    """Everything ``stream`` needs, short of the websocket; raises with a sentence."""
    import httpx
    import redis.asyncio as aioredis

    from tickpipe.clock import SystemClock
    from tickpipe.errors import ConfigError
    from tickpipe.sources.schwab import credentials, feed
    from tickpipe.sources.schwab.auth import TIMEOUT
    from tickpipe.sources.schwab.rest import SchwabRest

    credentials(settings)
    say("ok  credentials: SCHWAB_APP_KEY and SCHWAB_APP_SECRET are set")
    shared = feed(settings, SystemClock())
    streamed = ", ".join(f"{s} {len(k)}" for s, k in shared.plan.keys.items()) or "none"
    say(f"ok  symbols: {streamed}; chains: {', '.join(settings.schwab_chain_symbols) or 'none'}")
    if settings.redis_url:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            await client.ping()
        except (aioredis.RedisError, OSError) as exc:
            raise ConfigError(f"cannot reach Redis at TICKPIPE_REDIS_URL: {exc}") from exc
        finally:
            await client.aclose()
        say("ok  Redis answers at TICKPIPE_REDIS_URL (the trading bus)")
    else:
        say("--  Redis: TICKPIPE_REDIS_URL not set; the bus stays in process")
    await shared.tokens.refresh()
    facts = shared.tokens.facts()
    say(
        f"ok  token refresh: access token valid until {facts['access_token_expires_at']}, "
        f"refresh token expires {facts.get('refresh_token_expires_at') or '(login time unknown)'}"
    )
    if facts.get("refresh_token_warning"):
        say(f"!!  {facts['refresh_token_warning']}")
    if shared.plan.keys:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            rest = SchwabRest(http, settings.schwab_api_base_url, shared.tokens, shared.limiter)
            info = await rest.streamer_info()
        say(f"ok  streamer: {info.url} (not opened: dry run)")


async def stream(settings: Any, stop: asyncio.Event | None = None) -> None:
    from tickpipe.clock import SystemClock
    from tickpipe.pipeline import Pipeline
    from tickpipe.sources.schwab import build

    clock = SystemClock()
    pipeline = Pipeline(settings, clock, sources=build(settings, clock))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("streaming from Schwab (Ctrl-C stops and flushes the journal to the lake)")
    await pipeline.run(stop)


def _cmd_stream(args: argparse.Namespace) -> int:
    settings = _settings(args)

    def run() -> int:
        if args.dry_run:
            asyncio.run(dry_run(settings))
            print("dry run passed: the settings are ready to stream")
            return 0
        asyncio.run(stream(settings))
        return 0

    return _feed_errors(run)


class _interrupt_quietly:
    """Ctrl-C ends a long-running helper without a traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is KeyboardInterrupt


def _iso(epoch_s: float | None) -> str:
    import datetime as dt

    if epoch_s is None:
        return "(unknown)"
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
