"""Revocation ends open streams: WebSocket subscriptions, replays and downloads.

A key may be revoked by another process (``tickpipe keys revoke``), so no in-process
callback can say so. Every ``CHECK_S`` the watch asks SQLite whether the key database
changed at all (``PRAGMA data_version`` on a connection of its own: one query per
interval for the whole process, whatever the number of streams); only when it did does
each open stream verify its own key again (``KeyStore.verify``, which reloads the keys
once per change). A revoked key's streams therefore end within ``CHECK_S`` plus the time
their goodbye takes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from tickpipe.store.keystore import KeyStore

log = logging.getLogger(__name__)

CHECK_S = 0.25
REVOKED_MESSAGE = "this API key was revoked; the stream is closed"


class KeyWatch:
    """Tells an open stream when the key it was opened with stops being valid."""

    def __init__(self, keys: KeyStore, check_s: float = CHECK_S) -> None:
        self._keys = keys
        self._check_s = check_s
        self._con: sqlite3.Connection | None = None
        self._version: int | None = None
        self._generation = 0
        self._checked = -float("inf")

    def generation(self) -> int:
        """A number that changes when the key database has changed; SQLite is asked at
        most once per ``check_s``, however many streams call."""
        now = time.monotonic()
        if now - self._checked >= self._check_s:
            self._checked = now
            try:
                if self._con is None:
                    self._con = sqlite3.connect(self._keys.path, check_same_thread=False)
                version = self._con.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:  # unreadable for a moment: look again next time
                log.warning("key database unreadable for the revocation watch: %s", exc)
                return self._generation
            if version != self._version:
                self._version = version
                self._generation += 1
        return self._generation

    async def revoked(self, token: str | None) -> None:
        """Return once ``token`` is no longer a valid key (revoked, or its row gone)."""
        seen = -1  # verify once at the start: a revocation may have come just before
        while True:
            generation = self.generation()
            if generation != seen:
                seen = generation
                if token is None or self._keys.verify(token) is None:
                    return
            await asyncio.sleep(self._check_s)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
