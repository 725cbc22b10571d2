"""The .env file whose SCHWAB_REFRESH_TOKEN line the token rotation rewrites holds a
credential (issue 20, finding 3): it is written 0600, and a file that was open to other
users is tightened with one warning (the next rewrite finds it private and says nothing)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tickpipe.sources.schwab.tokenstore import set_env_value


@pytest.mark.parametrize("before", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_an_env_file_open_to_others_is_rewritten_0600_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, before: int
) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"SCHWAB_APP_KEY=k\nSCHWAB_REFRESH_TOKEN=TOKEN-0\n")
    env.chmod(before)
    with caplog.at_level(logging.WARNING, logger="tickpipe.sources.schwab.tokenstore"):
        assert set_env_value(env, "TOKEN-1")
        assert set_env_value(env, "TOKEN-2")
    assert env.stat().st_mode & 0o777 == 0o600
    assert env.read_bytes() == b"SCHWAB_APP_KEY=k\nSCHWAB_REFRESH_TOKEN=TOKEN-2\n"
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        f"{env} was open to other users (mode {before:04o}); it holds SCHWAB_REFRESH_TOKEN: "
        "written 0600 from now on"
    ]
    assert "TOKEN-" not in warnings[0]


def test_a_private_env_file_is_rewritten_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"SCHWAB_REFRESH_TOKEN=old\n")
    env.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert set_env_value(env, "new")
    assert env.stat().st_mode & 0o777 == 0o600 and not caplog.records
