"""End to end: ``data-pipeline.py`` with TASTYTRADE_ENABLED=true against the fake."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tickpipe.config import Settings
from tickpipe.store.keystore import KeyStore

from ...conftest import free_port
from ...e2e.helpers import PipelineProcess
from ...fakes.dxlink import FakeTastytrade
from .conftest import now_ms

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    yield
    PipelineProcess.reap_all()


def source(status: dict[str, Any]) -> dict[str, Any]:
    found = [s for s in status.get("sources", []) if s["name"] == "tastytrade"]
    return found[0] if found else {}


def test_the_pipeline_streams_tastytrade_to_the_realtime_api(tmp_path: Path) -> None:
    fake = FakeTastytrade()
    t = now_ms()
    fake.publish("Quote", "SPY", bidPrice=600.11, askPrice=600.13, bidSize=5, askSize=7, bidTime=t)
    fake.trade("SPY", 600.12, 300, t, aggressorSide="BUY")
    with fake.in_thread():
        data = tmp_path / "data"
        env = {
            "TICKPIPE_DATA_DIR": str(data),
            "TICKPIPE_SIMULATOR": "false",
            "TASTYTRADE_ENABLED": "true",
            "TASTYTRADE_API_BASE_URL": fake.rest_url,
            "TASTYTRADE_CLIENT_SECRET": fake.client_secret,
            "TASTYTRADE_REFRESH_TOKEN": fake.refresh_token,
            "TASTYTRADE_SYMBOLS": "SPY",
        }
        process = PipelineProcess(free_port(), env, tmp_path / "pipeline.log")
        status = process.wait_for(lambda s: source(s).get("events", 0) >= 2, timeout=60)
        feed = source(status)
        assert feed["details"]["dxlink_state"] == "subscribed"
        assert feed["details"]["dxlink_subscriptions"] == 3
        assert feed["by_kind"] == {"quote": 1, "trade": 1}
        keys = KeyStore(Settings(_env_file=None, data_dir=data).keys_path)  # type: ignore[call-arg]
        token, _ = keys.create("e2e", ["read"], 1000)
        rows: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(rows) < 2 and time.monotonic() < deadline:  # the API offers nothing to await
            response = httpx.get(
                f"{process.base}/api/v1/ticks/realtime?symbols=SPY",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            rows = response.json().get("data", []) if response.status_code == 200 else []
            time.sleep(0.1)
        by_type = {row["type"]: row for row in rows}
        assert (by_type["quote"]["bid"], by_type["quote"]["ask"]) == (600.11, 600.13)
        assert (by_type["trade"]["price"], by_type["trade"]["aggressor"]) == (600.12, "B")
        assert {row["source"] for row in rows} == {"tastytrade"}
        assert process.stop(signal.SIGTERM) == 0
