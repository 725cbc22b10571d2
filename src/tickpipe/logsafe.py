"""One redaction filter for secrets in logs: API keys, bearer tokens, token parameters.

Installed on the root handler by the CLI (uvicorn logs through the root logger too), so
a key that reaches a log line by any path is written as ``tp_********``.
"""

from __future__ import annotations

import logging
import re

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
