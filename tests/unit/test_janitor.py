"""A test session that is killed outright takes every process it started with it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]

INNER = """
import os, subprocess, time

def test_starts_detached_processes_and_hangs():
    # their own session and process group: a group kill would miss them; redis-server
    # also overwrites its environment with its process title
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    redis = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", os.environ["WORKDIR"] + "/r.sock", "--save", "", "--dir", os.environ["WORKDIR"]],
        start_new_session=True, stdout=subprocess.DEVNULL,
    )
    time.sleep(1)  # the janitor notes descendants four times a second
    with open(os.environ["PIDFILE"] + ".tmp", "w") as f:
        f.write(f"{sleeper.pid} {redis.pid}")
    os.rename(os.environ["PIDFILE"] + ".tmp", os.environ["PIDFILE"])
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate: object, timeout: float) -> bool:
    """Poll: a process of another session offers nothing to await."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.skipif(shutil.which("redis-server") is None and not IN_CI, reason="no redis-server")
def test_a_sigkilled_session_leaves_no_process_behind(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    pidfile = tmp_path / "pid"
    session = subprocess.Popen(
        [
            *(
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "tests.janitor",
            ),
            *("--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")),
        ],
        cwd=ROOT,
        env={**os.environ, "PIDFILE": str(pidfile), "WORKDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(pidfile.exists, 60), "the inner test never started its children"
        sleeper, redis = (int(pid) for pid in pidfile.read_text().split())
        assert alive(sleeper) and alive(redis)
        session.send_signal(signal.SIGKILL)  # no teardown, no fixture, no atexit runs
        session.wait(timeout=10)
        for child in (sleeper, redis):
            assert wait_until(lambda c=child: not alive(c), 10), f"{child} outlived its session"
        _, report = session.communicate(timeout=10)  # the janitor's, once it has swept
        assert f"{sleeper}: sleep 600" in report.decode()
        assert f"{redis}: redis-server" in report.decode()
    finally:
        if session.poll() is None:
            session.kill()
        session.communicate(timeout=10)
