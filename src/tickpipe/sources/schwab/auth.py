"""Schwab OAuth 2: the authorization-code flow with PKCE, the refresh grant, and one
``TokenManager`` that keeps an access token fresh for every Schwab call of a process.

Both grants POST a form-encoded body to ``{SCHWAB_API_BASE_URL}/v1/oauth/token`` with the
app key and secret as HTTP Basic credentials (Schwab's clients are confidential: the secret
is always needed; the PKCE verifier is sent too, and ignored by a server without PKCE).
Access tokens live 30 minutes and are refreshed 5 minutes before they expire; the refresh
token lives 7 days from the browser login, however often it is used, and then only the
helper (a new browser login) helps. Schwab answers an expired or revoked refresh token with
a 400 whose body nests another JSON document::

    {"error":"unsupported_token_type","error_description":"400 Bad Request: \\"{\\"error_description\\":
     \\"Exception while authenticating refresh token [...]\\",\\"error\\":\\"refresh_token_authentication_error\\"}\\""}

so any 400/401 of the refresh grant means "log in again" (a ``ConfigError``: no retries).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tickpipe.clock import NS_PER_SECOND, Clock
from tickpipe.errors import ConfigError, TransportError
from tickpipe.sources.schwab.ratelimit import TokenBucket
from tickpipe.sources.schwab.tokenstore import TokenFile, TokenSet, set_env_value

log = logging.getLogger(__name__)

ACCESS_LEEWAY_S = 300.0
"""refresh the access token when less than this remains (schwab-py uses 5 minutes too)"""
REFRESH_WARN_S = 2 * 86_400.0
"""warn on /status and in the log when the refresh token has less than this left"""
WARN_LOG_EVERY_S = 6 * 3600.0
FRESH_TOKEN_S = 120.0
"""a token refreshed this recently and still refused points at the app, not the token"""
HELPER = "`tickpipe schwab oauth` (or python scripts/schwab_oauth_helper.py)"
TIMEOUT = httpx.Timeout(15.0, connect=10.0)


def pkce_pair() -> tuple[str, str]:
    """A fresh (verifier, S256 challenge) pair (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)[:96]
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(base_url: str, app_key: str, callback: str, state: str, challenge: str) -> str:
    """The consent page the user opens. ``redirect_uri`` keeps ``:`` and ``/`` readable: a
    fully percent-encoded callback was once refused by Schwab's login page."""
    query = urlencode(
        {
            "client_id": app_key,
            "redirect_uri": callback,
            "response_type": "code",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        safe=":/",
    )
    return f"{base_url.rstrip('/')}/v1/oauth/authorize?{query}"


def code_from_redirect(url: str, state: str) -> str:
    """The authorization code of the URL the browser was sent to (``?code=...%40&session=...``);
    the code's ``@`` arrives percent-encoded and is decoded here."""
    query = parse_qs(urlsplit(url.strip()).query)
    if "error" in query:
        raise ConfigError(f"Schwab refused the login: {query['error'][0]} (run the helper again)")
    codes = query.get("code")
    if not codes:
        raise ConfigError(
            "the pasted URL has no ?code=: paste the whole address the browser was sent to"
        )
    returned = query.get("state", [state])[0]
    if returned != state:
        raise ConfigError("the pasted URL belongs to another login (state mismatch): run again")
    return codes[0]


@dataclasses.dataclass(frozen=True)
class Credentials:
    base_url: str
    app_key: str
    app_secret: str

    @property
    def token_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1/oauth/token"


class RefreshRejected(Exception):
    """The token endpoint refused a refresh token (expired, revoked, or replaced)."""


async def post_token(
    creds: Credentials, form: dict[str, str], limiter: TokenBucket | None = None
) -> dict[str, Any]:
    """One grant at the token endpoint; HTTP Basic client auth, form-encoded body."""
    if limiter is not None:
        await limiter.acquire()
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            response = await http.post(
                creds.token_url, data=form, auth=(creds.app_key, creds.app_secret)
            )
    except httpx.HTTPError as exc:
        raise TransportError(
            f"cannot reach Schwab's token endpoint {creds.token_url}: {exc!r}", source="schwab"
        ) from exc
    body = _json(response)
    if response.status_code == 200 and "access_token" in body and "refresh_token" in body:
        return body
    error = str(body.get("error", "")) or f"HTTP {response.status_code}"
    detail = str(body.get("error_description", ""))[:160]
    if response.status_code == 401 and error == "invalid_client" and "refresh" not in detail:
        raise ConfigError(
            f"Schwab rejected the app credentials ({error}): check SCHWAB_APP_KEY and "
            "SCHWAB_APP_SECRET against the app at developer.schwab.com (if they are right, "
            f"the login has expired: run {HELPER})"
        )
    if response.status_code in (400, 401) and form["grant_type"] == "refresh_token":
        raise RefreshRejected(f"{error}: {detail}" if detail else error)
    if response.status_code in (400, 401):
        raise ConfigError(
            f"Schwab refused the authorization code ({error}): a code works once and for about "
            "30 seconds, and SCHWAB_CALLBACK_URL must match the app's callback exactly; run the "
            "helper again"
        )
    raise TransportError(
        f"Schwab's token endpoint answered HTTP {response.status_code}", source="schwab"
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class TokenManager:
    """The token lifecycle of one process, shared by every Schwab source in it.

    ``access_token()`` returns a token valid for at least ``ACCESS_LEEWAY_S``, refreshing
    under the store's lock when needed (a token a sibling process refreshed meanwhile is
    taken from the file instead). ``fallback_refresh_token`` (``SCHWAB_REFRESH_TOKEN``) is
    used when the file has none, or when the file's one is refused and the setting differs
    (a token pasted into .env by hand).
    """

    def __init__(
        self,
        creds: Credentials,
        store: TokenFile,
        clock: Clock,
        *,
        env_file: Path | None = None,
        fallback_refresh_token: str | None = None,
        limiter: TokenBucket | None = None,
    ) -> None:
        self.creds = creds
        self.store = store
        self._clock = clock
        self._env_file = env_file
        self._fallback = fallback_refresh_token
        self._limiter = limiter
        self._lock = asyncio.Lock()
        self._tokens: TokenSet | None = None
        self._rejected_access: str | None = None
        self._warned_at = -WARN_LOG_EVERY_S
        self.refreshes = 0
        self.fresh_refusals = 0
        self.last_refresh_s: float | None = None

    def _now(self) -> float:
        return self._clock.now_ns() / NS_PER_SECOND

    def _fresh(self, tokens: TokenSet | None) -> bool:
        return (
            tokens is not None
            and tokens.access_token != self._rejected_access
            and tokens.access_expires_at - self._now() > ACCESS_LEEWAY_S
        )

    @property
    def tokens(self) -> TokenSet | None:
        return self._tokens

    async def access_token(self) -> str:
        async with self._lock:
            if not self._fresh(self._tokens):
                await self._refresh()
            assert self._tokens is not None
            return self._tokens.access_token

    async def refresh(self) -> TokenSet:
        """Refresh now, whatever the access token's age (the rotator; ``--dry-run``)."""
        async with self._lock:
            await self._refresh(force=True)
            assert self._tokens is not None
            return self._tokens

    def invalidate(self, access_token: str) -> int:
        """Schwab refused this access token (a REST 401, a streamer login denial): the next
        call refreshes. Returns how many freshly refreshed tokens in a row were refused:
        from two on, the app or the account is the problem, not the token's age."""
        self._rejected_access = access_token
        if self.refreshed_within(FRESH_TOKEN_S):
            self.fresh_refusals += 1
        return self.fresh_refusals

    def accepted(self) -> None:
        """Schwab accepted the current access token."""
        self.fresh_refusals = 0

    async def _refresh(self, force: bool = False) -> None:
        async with _locked(self.store):
            disk = self.store.load()
            if not force and self._fresh(disk):
                self._tokens = disk  # refreshed by a sibling process (the rotator)
                return
            candidates: list[tuple[str, float | None]] = []
            if disk is not None:
                candidates.append((disk.refresh_token, disk.login_at))
            if self._fallback and (disk is None or self._fallback != disk.refresh_token):
                candidates.append((self._fallback, None))
            if not candidates:
                raise ConfigError(
                    f"no Schwab refresh token: set SCHWAB_REFRESH_TOKEN or run {HELPER}"
                )
            refused = ""
            for refresh_token, login_at in candidates:
                try:
                    body = await post_token(
                        self.creds,
                        {"grant_type": "refresh_token", "refresh_token": refresh_token},
                        self._limiter,
                    )
                except RefreshRejected as exc:
                    refused = str(exc)
                    continue
                body.setdefault("refresh_token", refresh_token)
                tokens = TokenSet.from_response(body, self._now(), login_at)
                self._save(tokens, previous=refresh_token)
                return
            raise ConfigError(
                f"Schwab refused SCHWAB_REFRESH_TOKEN ({refused}): refresh tokens expire 7 days "
                f"after the browser login (or when revoked); run {HELPER} again"
            )

    async def login(self, code: str, verifier: str, callback: str) -> TokenSet:
        """Exchange an authorization code; the new login starts a new 7-day window."""
        body = await post_token(
            self.creds,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": callback,
                "code_verifier": verifier,
            },
            self._limiter,
        )
        async with self._lock, _locked(self.store):
            tokens = TokenSet.from_response(body, self._now(), login_at=self._now())
            self._save(tokens, previous=None)
            return tokens

    def _save(self, tokens: TokenSet, previous: str | None) -> None:
        self.store.save(tokens)
        if self._env_file is not None and tokens.refresh_token != previous:
            set_env_value(self._env_file, tokens.refresh_token)
        self._tokens = tokens
        self._rejected_access = None
        self.refreshes += 1
        self.last_refresh_s = self._now()

    def facts(self) -> dict[str, Any]:
        """Token expiries for /status (never the tokens), and the 7-day warning."""
        tokens = self._tokens or self.store.load()
        if tokens is None:
            return {"access_token_expires_at": None, "refresh_token_expires_at": None}
        now = self._now()
        facts: dict[str, Any] = {
            "access_token_expires_at": _iso(tokens.access_expires_at),
            "login_at": None if tokens.login_at is None else _iso(tokens.login_at),
            "token_refreshes": self.refreshes,
        }
        ends = tokens.refresh_expires_at
        if ends is None:
            facts["refresh_token_expires_at"] = None
            facts["refresh_token_warning"] = (
                f"login time unknown (token given in SCHWAB_REFRESH_TOKEN): run {HELPER} once "
                "so tickpipe can warn before the 7-day refresh token expires"
            )
            return facts
        left = ends - now
        facts["refresh_token_expires_at"] = _iso(ends)
        facts["refresh_token_expires_in_h"] = round(left / 3600, 1)
        if left < REFRESH_WARN_S:
            facts["refresh_token_warning"] = (
                f"the Schwab refresh token expires {_iso(ends)} "
                f"({'expired' if left <= 0 else f'in {left / 3600:.0f} h'}): run {HELPER} before then"
            )
        return facts

    def warn_if_expiring(self) -> None:
        """Log the 7-day warning, at most every few hours."""
        warning = self.facts().get("refresh_token_warning")
        now = self._now()
        if warning and now - self._warned_at >= WARN_LOG_EVERY_S:
            self._warned_at = now
            log.warning("%s", warning)

    def refreshed_within(self, seconds: float) -> bool:
        return self.last_refresh_s is not None and self._now() - self.last_refresh_s < seconds

    def seconds_until_refresh(self) -> float:
        """When the access token should next be refreshed (0: now)."""
        if self._tokens is None:
            return 0.0
        return max(0.0, self._tokens.access_expires_at - ACCESS_LEEWAY_S - self._now())


class _locked:
    """The store's cross-process lock, polled so that a cancel can never strand it."""

    def __init__(self, store: TokenFile) -> None:
        self._store = store
        self._fd: int | None = None

    async def __aenter__(self) -> None:
        while (fd := self._store.try_lock()) is None:
            await asyncio.sleep(0.05)  # a sibling process is refreshing; nothing to await
        self._fd = fd

    async def __aexit__(self, *exc: object) -> None:
        if self._fd is not None:
            self._store.unlock(self._fd)
            self._fd = None


def _iso(epoch_s: float) -> str:
    return (
        dt.datetime.fromtimestamp(epoch_s, dt.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )
