"""Credentials and tokens: clear sentences for bad settings, caches, refreshes, refusals."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from tickpipe.clock import FakeClock
from tickpipe.config import Settings
from tickpipe.errors import ConfigError
from tickpipe.events import Kind
from tickpipe.sources.base import SourceStatus
from tickpipe.sources.tastytrade import build
from tickpipe.sources.tastytrade.session import Session

from ...fakes.dxlink import FakeTastytrade
from .conftest import Start


def oauth_calls(fake: FakeTastytrade) -> int:
    return sum(1 for method, path, _ in fake.rest_calls if path == "/oauth/token")


@pytest.mark.parametrize(
    ("secret", "refresh", "named"),
    [
        (None, "r", "TASTYTRADE_CLIENT_SECRET"),
        ("s", None, "TASTYTRADE_REFRESH_TOKEN"),
        ("", " ", "TASTYTRADE_CLIENT_SECRET and TASTYTRADE_REFRESH_TOKEN"),
    ],
)
def test_missing_credentials_stop_the_build_naming_them(
    settings: Settings, secret: str | None, refresh: str | None, named: str
) -> None:
    configured = settings.model_copy(
        update={
            "tastytrade_enabled": True,
            "tastytrade_symbols": ["SPY"],
            "tastytrade_client_secret": None if secret is None else SecretStr(secret),
            "tastytrade_refresh_token": None if refresh is None else SecretStr(refresh),
        }
    )
    with pytest.raises(ConfigError, match=f"TASTYTRADE_ENABLED=true needs {named} "):
        build(configured, FakeClock())


def test_nothing_to_stream_is_a_settings_error(settings: Settings) -> None:
    configured = settings.model_copy(
        update={
            "tastytrade_client_secret": SecretStr("s"),
            "tastytrade_refresh_token": SecretStr("r"),
        }
    )
    with pytest.raises(ConfigError, match="TASTYTRADE_SYMBOLS"):
        build(configured, FakeClock())


@pytest.mark.parametrize(
    ("field", "named"),
    [
        ("tastytrade_refresh_token", "TASTYTRADE_REFRESH_TOKEN"),
        ("tastytrade_client_secret", "TASTYTRADE_CLIENT_SECRET"),
    ],
)
async def test_refused_credentials_stop_the_source_without_retrying(
    fake: FakeTastytrade, start: Start, field: str, named: str
) -> None:
    run = await start(fake, **{field: SecretStr("wrong")})
    await run.eventually(lambda: run.state.status is SourceStatus.FAILED)
    assert named in (run.state.last_error or "")
    assert "wrong" not in (run.state.last_error or "")  # never echo a secret
    assert oauth_calls(fake) == 1 and not fake.connections


async def test_a_refused_quote_token_is_replaced_on_the_next_attempt(
    fake: FakeTastytrade, start: Start
) -> None:
    fake.refuse_tokens = 1
    run = await start(fake)
    await fake.until(lambda: len(fake.connections) == 2 and bool(fake.connections[1].subscriptions))
    first, second = (
        [m["token"] for m in c.received if m["type"] == "AUTH"] for c in fake.connections
    )
    assert first != second  # a new token was fetched, not the refused one re-sent
    fake.publish("Quote", "SPY", bidPrice=1.0, askPrice=1.1, bidSize=1, askSize=1)
    await run.watch.until(lambda: bool(run.watch.rows[Kind.QUOTE]))


async def test_quote_tokens_refused_again_and_again_are_a_settings_problem(
    fake: FakeTastytrade, start: Start
) -> None:
    fake.refuse_tokens = -1
    run = await start(fake)
    await run.eventually(lambda: run.state.status is SourceStatus.FAILED)
    assert "TASTYTRADE_REFRESH_TOKEN" in (run.state.last_error or "")
    assert len(fake.connections) == 2


async def test_tokens_are_cached_and_refreshed_before_they_expire(fake: FakeTastytrade) -> None:
    clock = FakeClock(start_ns=time.time_ns())  # the fake stamps expires-at in real time
    session = Session(
        fake.rest_url, SecretStr(fake.client_secret), SecretStr(fake.refresh_token), clock
    )
    async with session.client() as http:
        first = await session.quote_token(http)
        assert first.url == fake.ws_url and first.level == "api"
        assert await session.quote_token(http) is first  # cached: no REST call
        assert (oauth_calls(fake), session.quote_fetches) == (1, 1)
        clock.advance(14 * 60)  # the access token (900 s) is within a minute of expiry
        await session.access_token(http)
        assert oauth_calls(fake) == 2
        clock.advance(17 * 3600)  # 24-hour quote token: renewed at three quarters of its life
        assert (await session.quote_token(http)).token == first.token
        clock.advance(2 * 3600)
        renewed = await session.quote_token(http)
        assert renewed.token != first.token and session.quote_fetches == 2


async def test_an_access_token_revoked_early_is_refreshed_once(fake: FakeTastytrade) -> None:
    session = Session(
        fake.rest_url, SecretStr(fake.client_secret), SecretStr(fake.refresh_token), FakeClock()
    )
    async with session.client() as http:
        await session.access_token(http)
        fake._access.clear()  # revoked on the server side
        token = await session.quote_token(http)
    assert token.token in fake.quote_tokens and oauth_calls(fake) == 2


async def test_an_unreachable_api_is_a_transport_error_not_a_settings_error() -> None:
    from tickpipe.errors import TransportError

    session = Session("http://127.0.0.1:9", SecretStr("s"), SecretStr("r"), FakeClock())
    async with session.client() as http:
        with pytest.raises(TransportError):
            await session.access_token(http)
