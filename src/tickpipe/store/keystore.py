"""API keys in SQLite, shared by the CLI and every API process; only hashes are stored.

A key reads ``tp_<id>_<secret>``: the id (public, 8 hex) finds the row, the secret is
checked against its SHA-256 with ``hmac.compare_digest``, so lookup time says nothing
about the secret. SHA-256 suffices: secrets are 256 random bits, not passwords.
``changed()`` asks SQLite's ``data_version``, so a revocation made by another process
(``tickpipe keys revoke``) is seen on the very next request.

The database is created 0600 (SQLite gives its ``-wal`` and ``-shm`` files the database's
mode) and a directory created for it 0700: the hashes are not secrets, but a key list
names who may read what.

A name is what people type and read (``tickpipe keys list``, the access log, the revoke
URL): 1 to ``MAX_NAME_CHARS`` printable characters, none of them a control or formatting
character (NUL, line breaks, bidi overrides), no ``/``, no space at either end. Names are
unique among active keys: a revoked key's name can be given to a new key (the old row
stays, revoked, under its own id).

A database that cannot be written is a ``StorageError`` naming the file
(``DiskFullError`` when the disk is full; SQLite then changed nothing), never a bare
``sqlite3`` error: the API answers it in JSON, the CLI in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import hmac
import math
import os
import secrets
import shutil
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tickpipe.errors import DiskFullError, KeyStoreError, StorageError

SCOPES = ("read", "stream", "admin")
RATE_LIMIT_MIN = 0.01
RATE_LIMIT_MAX = 1_000_000.0
"""requests/s a key may be given: finite, positive, and within what a bucket can count"""

MAX_NAME_CHARS = 100

_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    rate_limit REAL NOT NULL,
    created_ns INTEGER NOT NULL,
    revoked_ns INTEGER
)
"""
_ACTIVE_NAMES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name) "
    "WHERE revoked_ns IS NULL"
)


@dataclasses.dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    secret_sha256: str
    scopes: frozenset[str]
    rate_limit: float
    created_ns: int
    revoked_ns: int | None

    @property
    def active(self) -> bool:
        return self.revoked_ns is None

    def public(self) -> dict[str, object]:
        """What may be shown: never the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "rate_limit": self.rate_limit,
            "created_ns": self.created_ns,
            "revoked_ns": self.revoked_ns,
        }


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    parts = token.split("_")
    if len(parts) != 3 or parts[0] != "tp" or len(parts[1]) != 8:
        return None
    return parts[1], parts[2]


def check_name(name: str) -> str:
    """``name`` if people can type and read it (see the module docstring), else a
    KeyStoreError that says what is wrong with it."""
    rule = (
        f"a key name is 1 to {MAX_NAME_CHARS} printable characters: no control or formatting "
        "characters (NUL, line breaks, bidi overrides), no '/', no space at either end"
    )
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise KeyStoreError(f"{rule}; this one has {len(name):,} characters")
    for at, char in enumerate(name):
        if not _allowed(char):
            what = unicodedata.name(char, "a control character")
            raise KeyStoreError(
                f"{rule}; '{shown_name(name)}' has U+{ord(char):04X} ({what}) at position {at + 1}"
            )
    if name != name.strip(" "):
        raise KeyStoreError(f"{rule}; '{name}' starts or ends with a space")
    return name


def _allowed(char: str) -> bool:
    return char.isprintable() and char != "/"


def shown_name(name: str) -> str:
    """A stored name as one safe line: characters a valid name cannot hold (a key named by
    an older version) written as ``\\uXXXX``, cut to ``MAX_NAME_CHARS`` characters."""
    shown = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in name)
    return shown if len(shown) <= MAX_NAME_CHARS else shown[:MAX_NAME_CHARS] + "…"


def check_rate_limit(rate_limit: float) -> float:
    """The rate limit if it is a finite number in range, else a KeyStoreError saying so."""
    if not (
        isinstance(rate_limit, int | float)
        and math.isfinite(rate_limit)
        and RATE_LIMIT_MIN <= rate_limit <= RATE_LIMIT_MAX
    ):
        raise KeyStoreError(
            f"rate limit must be a number of requests per second from {RATE_LIMIT_MIN:g} to "
            f"{RATE_LIMIT_MAX:,.0f}; got {str(rate_limit)[:40]}"
        )
    return float(rate_limit)


def _private_file(path: Path) -> None:
    """Create ``path`` (and a missing parent) owner-only before SQLite opens it; tighten
    the files of a database created by an older version."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if name.exists() and name.stat().st_mode & 0o077:
            name.chmod(0o600)


@contextlib.contextmanager
def _storage(path: Path, what: str) -> Iterator[None]:
    """SQLite and OS failures of the key database as a ``StorageError`` saying what could
    not be done to which file."""
    try:
        yield
    except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
        if _disk_full(path, exc):
            raise DiskFullError(
                f"cannot {what}: the disk holding {path} is full; nothing was changed: free "
                "some space and try again"
            ) from exc
        raise StorageError(f"cannot {what} in {path}: {exc}") from exc


def _disk_full(path: Path, exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return True
    if name.startswith("SQLITE_IOERR"):  # a failed write of the WAL, say: out of space?
        with contextlib.suppress(OSError):
            return shutil.disk_usage(path.parent).free < 1024 * 1024
    return False


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        with _storage(path, "open the key database"):
            _private_file(path)
            self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA busy_timeout=5000")
            self._con.execute(_TABLE.format(table="api_keys"))
            _unique_among_active(self._con)
        self._lock = threading.Lock()
        self._version = -1
        self._cache: dict[str, ApiKey] = {}

    def create(self, name: str, scopes: list[str], rate_limit: float) -> tuple[str, ApiKey]:
        """A new key; the full token is returned once and never stored."""
        check_name(name)
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            shown = ",".join(scopes)[:100]
            raise KeyStoreError(f"scopes must be some of {', '.join(SCOPES)}; got {shown!r}")
        rate_limit = check_rate_limit(rate_limit)
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32).replace("_", "-")
        row = ApiKey(
            key_id, name, _hash(secret), frozenset(scopes), rate_limit, time.time_ns(), None
        )
        with self._lock, _storage(self.path, f"create key {name!r}"):
            try:
                self._con.execute(
                    "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (
                        row.id,
                        row.name,
                        row.secret_sha256,
                        ",".join(sorted(row.scopes)),
                        row.rate_limit,
                        row.created_ns,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if "api_keys.name" in str(exc):
                    raise KeyStoreError(
                        f"an active key is named {name!r}: revoke it first, or choose another name"
                    ) from exc
                raise KeyStoreError(f"key {name!r} refused by the key database: {exc}") from exc
            self._version = -1  # data_version only counts other connections' commits
        return f"tp_{key_id}_{secret}", row

    def revoke(self, name: str) -> ApiKey:
        """Revoke the active key named ``name`` (earlier keys of that name stay revoked)."""
        with self._lock, _storage(self.path, f"revoke key '{shown_name(name)}'"):
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute(
                    "SELECT * FROM api_keys WHERE name = ? AND revoked_ns IS NULL", (name,)
                ).fetchone()
                if row is not None:
                    revoked = time.time_ns()
                    con.execute(
                        "UPDATE api_keys SET revoked_ns = ? WHERE id = ?", (revoked, row[0])
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._version = -1
        if row is None:
            raise KeyStoreError(f"no active key named '{shown_name(name)}'")
        return dataclasses.replace(_row(row), revoked_ns=revoked)

    def list(self) -> list[ApiKey]:
        with self._lock, _storage(self.path, "read the keys"):
            rows = self._con.execute("SELECT * FROM api_keys ORDER BY created_ns").fetchall()
        return [_row(r) for r in rows]

    def verify(self, token: str) -> ApiKey | None:
        """The active key a bearer token belongs to, or None."""
        parts = split_key(token)
        if parts is None:
            return None
        key_id, secret = parts
        self._refresh()
        key = self._cache.get(key_id)
        if key is None or not key.active:
            # still hash, so a miss costs what a hit costs
            hmac.compare_digest(_hash(secret), "0" * 64)
            return None
        return key if hmac.compare_digest(_hash(secret), key.secret_sha256) else None

    def _refresh(self) -> None:
        with self._lock, _storage(self.path, "read the keys"):
            version = self._con.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return
            rows = self._con.execute("SELECT * FROM api_keys").fetchall()
            self._version = version
        self._cache = {r[0]: _row(r) for r in rows}

    def close(self) -> None:
        self._con.close()


def _unique_among_active(con: sqlite3.Connection) -> None:
    """Names are unique among active keys only. A database made before that had ``name``
    UNIQUE over every row, so a revoked name could never be used again: its table is
    rebuilt once (by whichever process opens it first)."""
    table = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'"
    if "UNIQUE" in con.execute(table).fetchone()[0]:
        con.execute("BEGIN IMMEDIATE")
        try:
            if "UNIQUE" in con.execute(table).fetchone()[0]:  # not done meanwhile
                con.execute(_TABLE.format(table="api_keys_new"))
                con.execute("INSERT INTO api_keys_new SELECT * FROM api_keys")
                con.execute("DROP TABLE api_keys")
                con.execute("ALTER TABLE api_keys_new RENAME TO api_keys")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    con.execute(_ACTIVE_NAMES)


def _row(r: tuple[Any, ...]) -> ApiKey:
    return ApiKey(
        id=str(r[0]),
        name=str(r[1]),
        secret_sha256=str(r[2]),
        scopes=frozenset(str(r[3]).split(",")),
        rate_limit=float(r[4]),
        created_ns=int(r[5]),
        revoked_ns=None if r[6] is None else int(r[6]),
    )
