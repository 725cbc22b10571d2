"""Run ``data-pipeline.py`` as a real process and talk to it over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


class PipelineProcess:
    started: list[PipelineProcess] = []  # noqa: RUF012 - every process a test started, reaped after it

    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TICKPIPE_", "SCHWAB_", "GEXBOT_", "TASTYTRADE_", "SIERRA_"))
        }
        full_env.update(env)
        self._log = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "data-pipeline.py"), "--port", str(port)],
            env=full_env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        PipelineProcess.started.append(self)

    @classmethod
    def reap_all(cls) -> None:
        """Kill whatever a test left running (a failed assertion skips its own stop)."""
        while cls.started:
            proc = cls.started.pop()
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait(timeout=30)
            proc._log.close()

    def get(self, path: str) -> Any:
        return httpx.get(self.base + path, timeout=5).json()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        """Poll /api/v1/status until ``predicate`` holds (the process offers no other signal)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pipeline exited with {self.proc.returncode}")
            try:
                last = self.get("/api/v1/status")
                if predicate(last):
                    return last
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting; last status: {last}")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pipeline exited with {self.proc.returncode}")
            try:
                if self.get("/api/v1/health").get("ready"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("pipeline never became ready")

    def stop(self, sig: int, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
