"""Keys, tokens and secrets never reach a log line."""

from __future__ import annotations

import io
import logging

from tickpipe import logsafe
from tickpipe.logsafe import configure_logging

KEY = "tp_1a2b3c4d_S3cr3t-Val-ue_xyz"


def test_redact_hides_keys_bearer_tokens_and_token_parameters() -> None:
    text = (
        f"GET /api/v1/stream?symbols=SPY&token={KEY} Authorization: Bearer {KEY} refresh_token=abc"
    )
    clean = logsafe.redact(text)
    assert "S3cr3t" not in clean and "abc" not in clean
    assert "symbols=SPY" in clean


def test_the_cli_installs_the_filter_on_every_root_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        configure_logging("INFO")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("tickpipe.test.access").warning("client sent %s", f"Bearer {KEY}")
        try:
            raise ValueError(f"bad key {KEY}")
        except ValueError:
            logging.getLogger("tickpipe.api").exception("request failed")
        written = stream.getvalue()
        assert "S3cr3t" not in written
        assert "Bearer ********" in written and "tp_********" in written
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved
