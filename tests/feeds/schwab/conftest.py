"""A fake Schwab per test and settings that point the feed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tickpipe.config import Settings

from ...fakes.schwab import REFRESH_TOKEN, FakeSchwab


@pytest.fixture
async def fake() -> AsyncIterator[FakeSchwab]:
    async with FakeSchwab(heartbeat_s=0.2) as server:
        yield server


def schwab_settings(fake: FakeSchwab, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "schwab_enabled": True,
        "schwab_api_base_url": fake.base_url,
        "schwab_app_key": fake.app_key,
        "schwab_app_secret": fake.app_secret,
        "schwab_refresh_token": REFRESH_TOKEN,
        "schwab_env_file": tmp_path / ".env",
        "simulator": "false",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
