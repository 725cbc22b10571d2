"""Logging helpers: one redaction filter for secrets (API keys, bearer tokens, token
parameters), and ``Throttle`` for failures that repeat.

The filter is installed on the root handler by the CLI (uvicorn logs through the root
logger too), so a key that reaches a log line by any path is written as ``tp_********``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable

_PATTERNS = [
    (re.compile(r"tp_[0-9a-f]{8}_[A-Za-z0-9_\-]+"), "tp_********"),
    (re.compile(r"(?i)(bearer\s+)[^\s'\",]+"), r"\1********"),
    (
        re.compile(r"(?i)((?:token|api_key|access_token|refresh_token|client_secret)=)[^&\s'\"]+"),
        r"\1********",
    ),
    (re.compile(r"(?i)([?&]key=)[^&\s'\"]+"), r"\1********"),
    (re.compile(r"gexbot_custom_[A-Za-z0-9_\-]+"), "gexbot_custom_********"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class Throttle:
    """Say a failure that repeats (on every request, every 250 ms) at most once per
    ``every_s``, with how often it happened meanwhile. Each occurrence calls ``hit()``,
    which counts it and answers how many occurred since the last line was allowed (0 while
    a line would come too soon); the first of a streak is always said at once. When the
    thing works again, ``recover()`` answers how long the streak was (0 if there was none)
    and ends it. ``total`` counts every occurrence.

        except OSError as exc:
            if n := throttle.hit():
                log.warning("write failed %d times in %.0f s: %s", n, throttle.every_s, exc)
        else:
            if failed := throttle.recover():
                log.info("writing again after %d failed writes", failed)
    """

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.total = 0
        self.streak = 0
        self._clock = clock
        self._since_line = 0
        self._line_at = -math.inf

    def hit(self) -> int:
        self.total += 1
        self.streak += 1
        self._since_line += 1
        now = self._clock()
        if now - self._line_at < self.every_s:
            return 0
        self._line_at = now
        count, self._since_line = self._since_line, 0
        return count

    def recover(self) -> int:
        streak, self.streak, self._since_line = self.streak, 0, 0
        self._line_at = -math.inf
        return streak


def install(handler: logging.Handler) -> None:
    if not any(isinstance(f, RedactSecrets) for f in handler.filters):
        handler.addFilter(RedactSecrets())


def configure_logging(level: str) -> None:
    """The one logging setup, for every process tickpipe starts (the CLI and each
    ``--role api`` worker): stderr, and the redaction filter on every root handler."""
    import sys

    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        install(handler)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll otherwise
