"""A full disk said plainly by the key API, the keys CLI and the access log (issue 20,
finding 2), on a real small filesystem with the real process: creating a key answers 507
``disk_full`` in JSON (was a 500), ``tickpipe keys create`` prints one line and exits 1
(was a traceback), the access log's failing writes are counted and said in one log line
(were a ``--- Logging error ---`` dump per write, 4,600 lines in 90 s); with space back,
all of it works again by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import free_port
from ..e2e.helpers import PipelineProcess
from .conftest import fill

pytestmark = pytest.mark.slow


def keys_cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")}
    return subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "keys", *args],
        env=env | {"TICKPIPE_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


def test_a_full_disk_is_a_clear_error_for_keys_and_a_counted_one_for_the_access_log(
    tmpfs: Path, tmp_path: Path
) -> None:
    data = tmpfs / "data"
    log = tmp_path / "pipeline.log"
    created = keys_cli(data, "create", "--name", "ops", "--scopes", "read,admin")
    assert created.returncode == 0, created.stderr
    admin = {"Authorization": f"Bearer {created.stdout.strip()}"}
    env = {"TICKPIPE_DATA_DIR": str(data), "TICKPIPE_SIMULATOR": "false"}  # a still disk
    proc = PipelineProcess(free_port(), env, log)
    proc.wait_ready()
    access_log = data / "logs" / "access.log"
    with httpx.Client(base_url=proc.base, timeout=10) as client:
        assert client.get("/api/v1/admin/keys", headers=admin).status_code == 200
        deadline = time.monotonic() + 10
        while not access_log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the log thread writes four times a second
        assert access_log.exists()

        fill(tmpfs / "ballast")
        response = client.post("/api/v1/admin/keys", json={"name": "model"}, headers=admin)
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert error["code"] == "disk_full"
        assert "is full" in error["message"] and "keys.sqlite" in error["message"]

        cli = keys_cli(data, "create", "--name", "model")
        assert cli.returncode == 1
        assert cli.stdout == ""
        assert "Traceback" not in cli.stderr
        assert cli.stderr.splitlines()[-1].startswith("tickpipe: cannot create key 'model': ")
        assert "is full" in cli.stderr.splitlines()[-1]

        for _ in range(40):  # 3 s of requests: a dozen failing access log writes
            client.get("/api/v1/health")
            time.sleep(0.075)
        metrics = client.get("/metrics").text
        failed = metric(metrics, "tickpipe_access_log_errors_total")
        assert failed >= 5  # (the file's last page took the first few batches)
        assert metric(metrics, "tickpipe_access_log_dropped_total") >= failed
        text = log.read_text()
        assert "Logging error" not in text and "Traceback" not in text, text[-3000:]
        failing = [line for line in text.splitlines() if "cannot be written" in line]
        assert len(failing) == 1, failing

        (tmpfs / "ballast").unlink()
        assert (
            client.post("/api/v1/admin/keys", json={"name": "model"}, headers=admin).status_code
            == 201
        )
        deadline = time.monotonic() + 10
        while "written again" not in log.read_text() and time.monotonic() < deadline:
            client.get("/api/v1/health")
            time.sleep(0.1)
        assert "written again" in log.read_text()
    assert keys_cli(data, "create", "--name", "model-2").returncode == 0
    assert proc.stop(signal.SIGTERM) == 0
    print(next(line for line in log.read_text().splitlines() if "cannot be written" in line))
