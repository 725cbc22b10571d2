"""HTTP load for the API benchmarks: ``wrk`` for throughput, ``loadgen.py`` for open-loop
latency, both in their own processes, each point warmed up before it is measured.

Every point also records the CPU the server process and the load generator used over it
(what limits the figure: a server at ~100 % of a core is the bottleneck; a generator near
100 % means the figure is the generator's). Without ``wrk`` installed, throughput comes
from ``loadgen.py --closed`` and the result says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent

WRK_SCRIPT = """
%s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests":%%d,"duration_us":%%d,"errors":{"connect":%%d,"read":%%d,"write":%%d,'
    .. '"status":%%d,"timeout":%%d},"latency_us":{"p50":%%f,"p95":%%f,"p99":%%f,'
    .. '"p99.9":%%f,"max":%%f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


@contextlib.contextmanager
def floor_server(bodies: dict[str, bytes]) -> Iterator[tuple[int, int]]:
    """``floor_app.py`` on a free port (yields port and pid); ``bodies`` adds constant
    routes."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="tickpipe-floor-"))
    args = [sys.executable, str(HERE / "floor_app.py"), "--port", str(port)]
    for i, (path, body) in enumerate(bodies.items()):
        file = workdir / f"{i}.json"
        file.write_bytes(body)
        args += ["--body", f"{path}={file}"]
    proc = subprocess.Popen(args)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v1/health")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def generator() -> str:
    return "wrk" if shutil.which("wrk") else "loadgen.py --closed (wrk not installed)"


class Load:
    """Runs measured points against servers on this machine; ``server_pid`` maps a port to
    the process whose CPU each point reports."""

    def __init__(self, duration_s: float, warmup_s: float, headers: dict[str, str]) -> None:
        self.duration_s = duration_s
        self.warmup_s = warmup_s
        self.headers = headers
        self.server_pid: dict[int, int] = {}

    def throughput(self, port: int, path: str, connections: int) -> dict[str, Any]:
        """Closed loop, ``connections`` keep-alive connections: requests/s and latency."""
        url = f"http://127.0.0.1:{port}{path}"
        if shutil.which("wrk"):
            self._wrk(url, connections, self.warmup_s)  # connections and caches warm
            result = self._measured(port, lambda: self._wrk(url, connections, self.duration_s))
            result["generator"] = "wrk"
            return result
        args = ["--closed", "--connections", str(connections)]
        result = self._measured(port, lambda: self._loadgen(port, path, args))
        result["generator"] = "loadgen.py --closed"
        return result

    def latency(self, port: int, path: str, connections: int, rate: float) -> dict[str, Any]:
        """Open loop at a fixed ``rate``, latency from each request's scheduled time."""
        args = ["--connections", str(connections), "--rate", str(rate)]
        result = self._measured(port, lambda: self._loadgen(port, path, args))
        result["generator"] = "loadgen.py (open loop)"
        return result

    def _measured(self, port: int, run: Any) -> dict[str, Any]:
        pid = self.server_pid.get(port)
        server_before = cpu_seconds(pid) if pid else 0.0
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result: dict[str, Any] = run()
        wall = time.perf_counter() - started
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        gen_cpu = (children.ru_utime - children_before.ru_utime) + (
            children.ru_stime - children_before.ru_stime
        )
        result["generator_cpu"] = gen_cpu / wall
        if pid:
            result["server_cpu"] = (cpu_seconds(pid) - server_before) / wall
        return result

    def _wrk(self, url: str, connections: int, duration_s: float) -> dict[str, Any]:
        header_lines = "\n".join(
            f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in self.headers.items()
        )
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT % header_lines)
        try:
            out = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{connections}",
                    f"-d{max(1, round(duration_s))}s",
                    "--timeout",
                    "10s",
                    "-s",
                    script.name,
                    url,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            os.unlink(script.name)
        raw = json.loads(out.strip().splitlines()[-1])
        seconds = raw["duration_us"] / 1e6
        errors = {k: v for k, v in raw["errors"].items() if v}
        return {
            "mode": "closed-loop",
            "connections": connections,
            "duration_s": seconds,
            "samples": raw["requests"],
            "errors": errors,
            "requests_per_s": raw["requests"] / seconds,
            "latency_ms": {k: v / 1000 for k, v in raw["latency_us"].items()},
        }

    def _loadgen(self, port: int, path: str, extra: list[str]) -> dict[str, Any]:
        args = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--path", path]
        args += ["--duration", str(self.duration_s), "--warmup", str(self.warmup_s)]
        for k, v in self.headers.items():
            args += ["--header", f"{k}: {v}"]
        out = subprocess.run(args + extra, capture_output=True, text=True, check=True).stdout
        result: dict[str, Any] = json.loads(out)
        return result
