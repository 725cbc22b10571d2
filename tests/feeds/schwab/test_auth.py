"""OAuth against the fake Schwab: PKCE login, refresh, the token file and .env, and the
sentences a user gets when a credential is wrong."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from tickpipe.clock import NS_PER_SECOND, FakeClock, SystemClock
from tickpipe.errors import ConfigError
from tickpipe.sources.schwab import token_manager
from tickpipe.sources.schwab.auth import (
    authorize_url,
    code_from_redirect,
    pkce_pair,
    post_token,
    s256,
)
from tickpipe.sources.schwab.callback import CallbackCatcher
from tickpipe.sources.schwab.cli import login_flow, rotate
from tickpipe.sources.schwab.ratelimit import TokenBucket
from tickpipe.sources.schwab.tokenstore import TokenFile, set_env_value, write_private

from ...conftest import free_port
from ...fakes.schwab import REFRESH_TOKEN, FakeSchwab
from .conftest import schwab_settings

ENV = b"# my settings\nTICKPIPE_PORT=8877\r\nexport SCHWAB_REFRESH_TOKEN='old-token'\n\nSCHWAB_APP_KEY=abc # key\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def follow(url: str) -> str:
    """What the browser does: open the consent page, get sent to the callback."""
    response = httpx.get(url, follow_redirects=False)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def test_the_pkce_challenge_is_the_s256_of_the_verifier() -> None:
    # RFC 7636, appendix B
    assert (
        s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128 and challenge == s256(verifier)


def test_the_consent_url_names_app_callback_state_and_challenge() -> None:
    url = authorize_url("https://api.schwabapi.com", "KEY", "https://127.0.0.1:8182", "st", "ch")
    parts = urlsplit(url)
    assert parts.netloc == "api.schwabapi.com" and parts.path == "/v1/oauth/authorize"
    assert "redirect_uri=https://127.0.0.1:8182&" in url  # readable: Schwab refused it encoded
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "client_id": "KEY",
        "redirect_uri": "https://127.0.0.1:8182",
        "response_type": "code",
        "state": "st",
        "code_challenge": "ch",
        "code_challenge_method": "S256",
    }


def test_the_code_is_url_decoded_and_belongs_to_this_login() -> None:
    url = "https://127.0.0.1:8182/?code=C0.abc.def%40&session=9f2e&state=s1"
    assert code_from_redirect(url, "s1") == "C0.abc.def@"
    with pytest.raises(ConfigError, match="state mismatch"):
        code_from_redirect(url, "s2")
    with pytest.raises(ConfigError, match="no \\?code="):
        code_from_redirect("https://127.0.0.1:8182/?session=1", "s1")
    with pytest.raises(ConfigError, match="access_denied"):
        code_from_redirect("https://127.0.0.1:8182/?error=access_denied", "s1")


async def test_pkce_login_saves_the_token_file_0600_and_the_env_line(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    env.write_bytes(ENV)
    settings = schwab_settings(fake, tmp_path, schwab_refresh_token=None)
    tokens = await login_flow(settings, follow)
    [grant] = fake.token_requests
    assert (
        grant["grant_type"] == "authorization_code"
        and grant["redirect_uri"] == "https://127.0.0.1:8182"
    )
    assert "code_verifier" in grant  # checked by the fake against the S256 challenge
    assert tokens.refresh_token in fake.refresh_tokens and tokens.access_token in fake.access_tokens
    stored = tmp_path / "data" / "schwab_tokens.json"
    assert mode(stored) == 0o600
    body = orjson.loads(stored.read_bytes())
    assert body["token"]["refresh_token"] == tokens.refresh_token
    assert abs(body["creation_timestamp"] - SystemClock().now_ns() / NS_PER_SECOND) < 60
    assert env.read_bytes() == ENV.replace(b"'old-token'", f"'{tokens.refresh_token}'".encode())


async def test_a_wrong_pkce_verifier_or_a_reused_code_is_refused(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    settings = schwab_settings(fake, tmp_path)
    tokens = token_manager(settings, SystemClock(), TokenBucket(600))
    verifier, challenge = pkce_pair()
    url = authorize_url(fake.base_url, fake.app_key, "https://127.0.0.1:8182", "s", challenge)
    code = code_from_redirect(await asyncio.to_thread(follow, url), "s")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "https://127.0.0.1:8182",
    }
    with pytest.raises(ConfigError, match="refused the authorization code"):
        await post_token(tokens.creds, {**form, "code_verifier": pkce_pair()[0]})
    code = code_from_redirect(await asyncio.to_thread(follow, url), "s")
    assert "access_token" in await post_token(
        tokens.creds, {**form, "code": code, "code_verifier": verifier}
    )
    with pytest.raises(ConfigError, match="works once"):
        await post_token(tokens.creds, {**form, "code": code, "code_verifier": verifier})


async def test_a_wrong_client_secret_is_one_sentence_naming_the_setting(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    settings = schwab_settings(fake, tmp_path, schwab_app_secret="not-the-secret")
    tokens = token_manager(settings, SystemClock(), TokenBucket(600))
    with pytest.raises(ConfigError) as caught:
        await tokens.access_token()
    message = str(caught.value)
    assert (
        "SCHWAB_APP_SECRET" in message and "\n" not in message and "not-the-secret" not in message
    )


async def test_an_expired_refresh_token_tells_the_user_to_log_in_again(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    fake.refresh_tokens.clear()  # 7 days have passed
    tokens = token_manager(schwab_settings(fake, tmp_path), SystemClock(), TokenBucket(600))
    with pytest.raises(ConfigError) as caught:
        await tokens.access_token()
    message = str(caught.value)
    assert "SCHWAB_REFRESH_TOKEN" in message and "tickpipe schwab oauth" in message
    assert "refresh_token_authentication_error" in message or "unsupported_token_type" in message
    assert REFRESH_TOKEN not in message


async def test_rotation_rewrites_env_and_the_token_file_keeping_the_login_time(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    fake.rotate_refresh = True
    env = tmp_path / ".env"
    env.write_bytes(ENV)
    os.chmod(env, 0o640)
    settings = schwab_settings(fake, tmp_path, schwab_refresh_token="old-token")
    login = SystemClock().now_ns() / NS_PER_SECOND - 3 * 86_400
    stored = TokenFile(tmp_path / "data" / "schwab_tokens.json")
    stored.path.parent.mkdir(parents=True)
    stored.path.write_bytes(
        orjson.dumps(
            {
                "creation_timestamp": login,
                "token": {
                    "access_token": "expired",
                    "refresh_token": REFRESH_TOKEN,
                    "expires_at": 0,
                },
            }
        )
    )
    await rotate(settings, access_minutes=25, refresh_days=6, once=True)
    [new_refresh] = fake.refresh_tokens
    assert new_refresh != REFRESH_TOKEN
    assert env.read_bytes() == ENV.replace(b"'old-token'", f"'{new_refresh}'".encode())
    assert mode(env) == 0o600  # it holds a credential (tests/unit/test_env_file_mode.py)
    after = stored.load()
    assert after is not None and after.refresh_token == new_refresh and after.login_at == login
    assert after.access_token in fake.access_tokens and mode(stored.path) == 0o600


def test_the_env_line_is_replaced_in_place_or_appended(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"A=1\r\nSCHWAB_REFRESH_TOKEN = abc\r\nB=2")
    assert set_env_value(env, "new")
    assert env.read_bytes() == b"A=1\r\nSCHWAB_REFRESH_TOKEN = new\r\nB=2"
    assert not set_env_value(env, "new")  # nothing to change: the file is not rewritten
    other = tmp_path / "other.env"
    other.write_bytes(b"A=1")
    set_env_value(other, "tok")
    assert other.read_bytes() == b"A=1\nSCHWAB_REFRESH_TOKEN=tok\n"
    fresh = tmp_path / "fresh.env"
    set_env_value(fresh, "tok")
    assert fresh.read_bytes() == b"SCHWAB_REFRESH_TOKEN=tok\n" and mode(fresh) == 0o600
    with pytest.raises(ValueError):
        set_env_value(fresh, "two\nlines")


def test_private_files_are_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private(path, b"new")
    assert path.read_bytes() == b"new" and mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]


async def test_the_access_token_is_refreshed_five_minutes_before_it_expires(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    clock = FakeClock(start_ns=SystemClock().now_ns())
    tokens = token_manager(schwab_settings(fake, tmp_path), clock, TokenBucket(600))
    first = await tokens.access_token()
    clock.advance(24 * 60)
    assert await tokens.access_token() == first and len(fake.token_requests) == 1
    clock.advance(2 * 60)  # 4 minutes left
    assert await tokens.access_token() != first and len(fake.token_requests) == 2


async def test_a_token_refreshed_by_another_process_is_taken_from_the_file(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    settings = schwab_settings(fake, tmp_path)
    rotator = token_manager(settings, SystemClock(), TokenBucket(600))
    pipeline = token_manager(settings, SystemClock(), TokenBucket(600))
    refreshed = await rotator.refresh()
    assert await pipeline.access_token() == refreshed.access_token
    assert len(fake.token_requests) == 1


async def test_a_refresh_token_pasted_into_env_replaces_a_dead_one_in_the_file(
    fake: FakeSchwab, tmp_path: Path
) -> None:
    settings = schwab_settings(fake, tmp_path)
    store = TokenFile(tmp_path / "data" / "schwab_tokens.json")
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(
        orjson.dumps(
            {
                "creation_timestamp": 1.0,
                "token": {"access_token": "a", "refresh_token": "revoked", "expires_at": 0},
            }
        )
    )
    tokens = token_manager(settings, SystemClock(), TokenBucket(600))
    assert await tokens.access_token() in fake.access_tokens
    assert [r["refresh_token"] for r in fake.token_requests] == ["revoked", REFRESH_TOKEN]


async def test_the_seven_day_expiry_is_warned_about_days_ahead(
    fake: FakeSchwab, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(start_ns=SystemClock().now_ns())
    login = clock.now_ns() / NS_PER_SECOND - 6 * 86_400
    store = TokenFile(tmp_path / "data" / "schwab_tokens.json")
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(
        orjson.dumps(
            {
                "creation_timestamp": login,
                "token": {"access_token": "a", "refresh_token": REFRESH_TOKEN, "expires_at": 0},
            }
        )
    )
    tokens = token_manager(schwab_settings(fake, tmp_path), clock, TokenBucket(600))
    await tokens.access_token()
    facts = tokens.facts()
    assert facts["refresh_token_expires_in_h"] == pytest.approx(24, abs=0.1)
    assert "tickpipe schwab oauth" in facts["refresh_token_warning"]
    assert "access_token" not in orjson.dumps(facts).decode().replace("access_token_expires", "")
    with caplog.at_level(logging.WARNING):
        tokens.warn_if_expiring()
        tokens.warn_if_expiring()
    assert sum("refresh token expires" in r.getMessage() for r in caplog.records) == 1
    clock.advance(2 * 86_400)
    assert "expired" in tokens.facts()["refresh_token_warning"]


def test_a_loopback_https_callback_catches_the_redirect() -> None:
    port = free_port()
    found: queue.Queue[str] = queue.Queue()
    catcher = CallbackCatcher(f"https://127.0.0.1:{port}", found)
    assert catcher.start()
    try:
        response = httpx.get(f"https://127.0.0.1:{port}/?code=C0.x%40&state=s", verify=False)
        assert response.status_code == 200
        assert found.get(timeout=5) == f"https://127.0.0.1:{port}/?code=C0.x%40&state=s"
    finally:
        catcher.stop()
