"""Where Schwab tokens live: ``data/schwab_tokens.json`` and the ``.env`` refresh-token line.

The JSON file has schwab-py's shape, ``{"creation_timestamp": <login, epoch s>, "token":
{...Schwab's token response..., "expires_at": <epoch s>}}``: ``creation_timestamp`` is the
interactive login the 7-day refresh-token lifetime counts from (refreshing does not extend
it). It is written through a temp file, fsync and rename, with mode 0600, so a reader never
sees half a file and nobody else can read it. ``.env`` gets its ``SCHWAB_REFRESH_TOKEN=``
line rewritten in place; every other byte of the file stays as it was. Processes sharing
the store (the pipeline, the rotator) refresh under one lock file, so only one refreshes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

REFRESH_TOKEN_LIFETIME_S = 7 * 86_400
ENV_NAME = "SCHWAB_REFRESH_TOKEN"


@dataclasses.dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    access_expires_at: float
    """epoch seconds"""
    login_at: float | None
    """epoch seconds of the browser login; None when only a bare refresh token was given"""
    token: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    """Schwab's token response as received (plus ``expires_at``)"""

    @property
    def refresh_expires_at(self) -> float | None:
        return None if self.login_at is None else self.login_at + REFRESH_TOKEN_LIFETIME_S

    @classmethod
    def from_response(
        cls, response: dict[str, Any], now_s: float, login_at: float | None
    ) -> TokenSet:
        expires_in = response.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 1800.0
        token = dict(response, expires_at=now_s + lifetime)
        return cls(
            access_token=str(response["access_token"]),
            refresh_token=str(response["refresh_token"]),
            access_expires_at=now_s + lifetime,
            login_at=login_at,
            token=token,
        )

    def to_json(self) -> bytes:
        body = {"creation_timestamp": self.login_at, "token": self.token}
        return orjson.dumps(body, option=orjson.OPT_INDENT_2)


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> TokenSet | None:
        """The stored tokens, or None when there is no usable file."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            body = orjson.loads(raw)
            token = body["token"]
            login = body.get("creation_timestamp")
            return TokenSet(
                access_token=str(token["access_token"]),
                refresh_token=str(token["refresh_token"]),
                access_expires_at=float(token.get("expires_at", 0)),
                login_at=float(login) if isinstance(login, int | float) else None,
                token=token,
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: not a token file (%r)", self.path, exc)
            return None

    def save(self, tokens: TokenSet) -> None:
        write_private(self.path, tokens.to_json())

    def try_lock(self) -> int | None:
        """Take the store's lock file without waiting: its descriptor, or None when another
        process holds it. One refresher at a time across processes; ``unlock`` releases."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        os.close(fd)  # closing the descriptor releases the lock


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` atomically (temp file in the same directory, fsync, rename) with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_ENV_LINE = re.compile(
    rb"^(?P<head>[ \t]*(?:export[ \t]+)?" + ENV_NAME.encode() + rb"[ \t]*=[ \t]*)"
    rb"(?P<quote>[\"']?)(?P<value>.*?)(?P=quote)[ \t]*(?P<end>\r?\n)?$",
    re.DOTALL,
)


def set_env_value(path: Path, value: str) -> bool:
    """Rewrite the ``SCHWAB_REFRESH_TOKEN=`` line(s) of a .env file in place (appended when
    absent), keeping every other line, the quoting style and the line endings byte for
    byte. Returns False when nothing changed. The file is written 0600 (it holds a
    credential), with a warning when it was open to group or others before (then once:
    afterwards it is not)."""
    if any(c in value for c in "\r\n\"'"):
        raise ValueError("a refresh token cannot contain quotes or line breaks")
    try:
        original = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        original, mode = b"", 0o600
    lines = original.splitlines(keepends=True)
    found = False
    for i, line in enumerate(lines):
        match = _ENV_LINE.match(line)
        if match is None:
            continue
        found = True
        quote = match["quote"]
        lines[i] = match["head"] + quote + value.encode() + quote + (match["end"] or b"")
    if not found:
        if lines and not lines[-1].endswith(b"\n"):
            lines[-1] += b"\n"
        lines.append(f"{ENV_NAME}={value}\n".encode())
    updated = b"".join(lines)
    if updated == original:
        return False
    if mode & 0o077:
        log.warning(
            "%s was open to other users (mode %04o); it holds %s: written 0600 from now on",
            path,
            mode,
            ENV_NAME,
        )
    write_private(path, updated, 0o600)
    return True
