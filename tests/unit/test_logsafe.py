"""Keys, tokens and secrets never reach a log line."""

from __future__ import annotations

import io
import logging

from tickpipe import logsafe
from tickpipe.clock import FakeClock
from tickpipe.logsafe import Throttle, configure_logging

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


def test_a_throttle_says_the_first_failure_then_at_most_one_line_per_interval() -> None:
    clock = FakeClock()
    throttle = Throttle(30, clock.monotonic)
    said = []
    for _ in range(100):  # 100 failures, one every 0.25 s: 25 s
        said.append(throttle.hit())
        clock.advance(0.25)
    assert said[0] == 1 and sum(1 for n in said if n) == 1
    for _ in range(40):  # 10 s more
        said.append(throttle.hit())
        clock.advance(0.25)
    assert [n for n in said if n] == [1, 120]  # the second line counts what it held back
    assert throttle.total == throttle.streak == 140
    assert throttle.recover() == 140 and throttle.recover() == 0
    assert throttle.hit() == 1  # a new streak is said at once
