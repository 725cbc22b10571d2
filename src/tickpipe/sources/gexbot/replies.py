"""What gexbot's refusals mean for the user, in one sentence each, and keeping the key out
of what gets logged."""

from __future__ import annotations

import logging
import re

import httpx
import orjson

from tickpipe.logsafe import redact


class _RedactKeyParameter(logging.Filter):
    """httpx logs each request's URL; with the v1 style that URL carries ``key=``."""

    _pattern = re.compile(r"(?i)([?&]key=)[^&\s'\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self._pattern.sub(r"\1********", message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


KEY_FILTER = _RedactKeyParameter()
"""on httpx's logger while the v1 style is used"""


def refusal(what: str, status: int, detail: str) -> str:
    """The sentence a refused request stops the source with: what to fix, and where."""
    said = f' ("{detail}")' if detail else ""
    if status == 401:
        return (
            f"gexbot refused GEXBOT_API_KEY (HTTP 401{said}): set a valid gexbot data key "
            "(it starts with gexbot_custom_)"
        )
    if status == 400:
        return (
            f"gexbot answered HTTP 400 for {what}{said}: check GEXBOT_API_KEY (gexbot "
            "answers 400 to a missing key), GEXBOT_TICKERS and GEXBOT_CATEGORIES"
        )
    if status == 403:
        return (
            f"gexbot refused {what} to this GEXBOT_API_KEY (HTTP 403{said}): its plan "
            "does not include it; remove it from GEXBOT_TICKERS/GEXBOT_CATEGORIES"
        )
    return (
        f"gexbot has no {what} (HTTP 404{said}): fix GEXBOT_TICKERS, GEXBOT_CATEGORIES "
        "or GEXBOT_API_BASE_URL"
    )


def error_text(response: httpx.Response) -> str:
    """gexbot's ``{"error": "..."}``, else the start of the body; never the request URL."""
    try:
        body = orjson.loads(response.content)
        text = str(body.get("error", "")) if isinstance(body, dict) else ""
    except orjson.JSONDecodeError:
        text = response.content[:200].decode("utf-8", "replace")
    return redact(text.strip()[:200])
