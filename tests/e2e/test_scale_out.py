"""One ingest process and two API worker processes share Redis and the data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
import websockets.sync.client as ws_client

from tickpipe.config import Settings
from tickpipe.store.keystore import KeyStore

from ..conftest import free_port
from .helpers import ROOT, PipelineProcess

pytestmark = pytest.mark.slow


def test_api_workers_serve_what_the_ingest_process_writes(tmp_path: Path, redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    data = tmp_path / "data"
    env = {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_REDIS_URL": redis_url,
        "TICKPIPE_SIMULATOR_RATE": "2000",
    }
    ingest = PipelineProcess(free_port(), env, tmp_path / "ingest.log")
    api_port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")} | env
    api_log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - closed in finally
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tickpipe.cli",
            "run",
            "--role",
            "api",
            "--workers",
            "2",
            "--port",
            str(api_port),
        ],
        env=full_env,
        cwd=ROOT,
        stdout=api_log,
        stderr=subprocess.STDOUT,
    )
    try:
        ingest.wait_for(lambda s: s["accepted_total"] > 0)
        token, _ = KeyStore(Settings(_env_file=None, data_dir=data).keys_path).create(
            "m", ["read", "stream"], 1000
        )  # type: ignore[call-arg]
        base = f"http://127.0.0.1:{api_port}"
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 30
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and not rows:
            try:
                r = httpx.get(
                    f"{base}/api/v1/ticks/realtime?symbols=SPY&limit=5", headers=headers, timeout=5
                )
                rows = r.json().get("data", []) if r.status_code == 200 else []
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert rows and all(row["symbol"] == "SPY" for row in rows)
        answer = httpx.get(f"{base}/api/v1/status", timeout=5)
        while answer.status_code == 503 and time.monotonic() < deadline + 10:
            assert answer.json()["error"]["code"] == "ingest_unavailable"  # not published yet
            time.sleep(0.2)
            answer = httpx.get(f"{base}/api/v1/status", timeout=5)
        status = answer.json()
        assert status["api"]["role"] == "api" and status["api"]["ingest_status_age_s"] < 10
        assert "simulator" in {s["name"] for s in status["sources"]}  # the ingest's, same shape
        with ws_client.connect(
            f"ws://127.0.0.1:{api_port}/api/v1/stream?symbols=SPY&token={token}"
        ) as ws:
            assert orjson.loads(ws.recv(timeout=10))["type"] == "subscribed"
            events = orjson.loads(ws.recv(timeout=10))
            assert events and events[0]["symbol"] == "SPY"
    finally:
        api.send_signal(signal.SIGINT)
        api.wait(timeout=30)
        api_log.close()
        ingest.stop(signal.SIGINT)


def test_api_role_without_redis_refuses_with_a_sentence(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")}
    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "run", "--role", "api", "--port", str(free_port())],
        env=env | {"TICKPIPE_DATA_DIR": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--role api needs TICKPIPE_REDIS_URL" in result.stderr
