"""The pipeline as a user runs it with gexbot on, pointed at the local fake."""

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
from ...fakes.gexbot import KEY, FakeGexbot

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    yield
    PipelineProcess.reap_all()


def gexbot_source(status: dict[str, Any]) -> dict[str, Any]:
    found = [s for s in status["sources"] if s["name"] == "gexbot"]
    return found[0] if found else {}


def answer(base: str, path: str, token: str, timeout: float = 30) -> dict[str, Any]:
    """GET until it answers 200 (our own GEX needs the simulated chain to build up)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(base + path, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: {response.status_code} {response.text}")
        time.sleep(0.2)


def test_gexbot_with_the_simulator_status_levels_compare_and_history(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fake = FakeGexbot()
    with fake.in_thread():
        env = {
            "TICKPIPE_DATA_DIR": str(data),
            "TICKPIPE_SIMULATOR": "true",
            "TICKPIPE_SIMULATOR_RATE": "2000",
            "TICKPIPE_JOURNAL_SEGMENT_SECONDS": "1",
            "GEXBOT_ENABLED": "true",
            "GEXBOT_API_KEY": KEY,
            "GEXBOT_API_BASE_URL": fake.base_url,
            "GEXBOT_TICKERS": "SPX,SPY",
            "GEXBOT_REQUESTS_PER_SECOND": "10",
        }
        proc = PipelineProcess(free_port(), env, tmp_path / "run.log")
        status = proc.wait_for(
            lambda s: (
                len(gexbot_source(s).get("details", {}).get("pairs", {})) == 6
                and all(p["updates"] >= 1 for p in gexbot_source(s)["details"]["pairs"].values())
            )
        )
        gexbot = gexbot_source(status)
        assert gexbot["status"] == "running" and gexbot["by_kind"]["gex"] >= 6
        assert gexbot["details"]["pairs"]["SPX/full"]["symbol"] == "$SPX"
        assert KEY not in str(status)
        token, _ = KeyStore(Settings(_env_file=None, data_dir=data).keys_path).create(  # type: ignore[call-arg]
            "reader", ["read"], 1000
        )

        levels = answer(proc.base, "/api/v1/gex/SPX?source=gexbot", token)
        served = {(t, label, b["timestamp"]): b for t, label, b in list(fake.served) if t == "SPX"}
        body = served[("SPX", "full", levels["as_of_ns"] // 1_000_000_000)]
        assert levels["source"] == "gexbot" and levels["symbol"] == "$SPX"
        assert (levels["spot"], levels["zero_gamma"]) == (body["spot"], body["zero_gamma"])
        assert levels["call_wall"] == body["major_pos_oi"]
        assert levels["strikes"]["strike"] == [row[0] for row in body["strikes"]]

        compared = answer(proc.base, "/api/v1/gex/SPY/compare", token)
        assert compared["tickpipe"]["spot"] > 0 and compared["gexbot"]["spot"] > 0
        assert compared["difference"]["spot"] == pytest.approx(
            compared["gexbot"]["spot"] - compared["tickpipe"]["spot"], abs=1e-6
        )

        now_ns = time.time_ns()
        history = answer(
            proc.base,
            f"/api/v1/ticks/historical?symbols=$SPX&types=gex&start_time={now_ns - 600 * 10**9}"
            f"&end_time={now_ns + 10**9}&limit=1000",
            token,
        )["data"]
        stored = [row for row in history if row["source"] == "gexbot"]
        assert {row["category"] for row in stored} == {"full", "zero", "one"}
        for row in stored:
            body = served[("SPX", row["category"], row["ts_event"] // 1_000_000_000)]
            assert row["spot"] == body["spot"] and row["zero_gamma"] == body["zero_gamma"]
            assert row["gex_usd_per_1pct"] == pytest.approx(
                [r[2] * 1e6 for r in body["strikes"]], rel=1e-12
            )
        assert proc.stop(signal.SIGINT) == 0
    assert fake.count(status=429) == 0
