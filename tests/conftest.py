"""Shared fixtures: settings over a temp data dir, a private redis-server, a fake clock."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tickpipe.clock import NS_PER_SECOND, FakeClock
from tickpipe.config import Settings

IN_CI = os.environ.get("CI", "").lower() == "true"


HANG_DUMP_MARGIN_S = 5.0


@pytest.fixture(autouse=True)
def _dump_asyncio_tasks_before_the_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    """pytest-timeout dumps every thread's stack, which for an async test only shows the
    event loop waiting in select; just before it fires, print where each asyncio task is
    suspended, which is where a hang really is."""
    timeout = float(request.config.getini("timeout") or 0)
    marker = request.node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        timeout = float(marker.args[0])
    if timeout <= HANG_DUMP_MARGIN_S:
        yield
        return
    timer = threading.Timer(timeout - HANG_DUMP_MARGIN_S, _dump_tasks, args=(request.node.nodeid,))
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


def _dump_tasks(nodeid: str) -> None:
    """To the real stderr (pytest's capture may never be shown: the timeout exits)."""
    out = sys.__stderr__ or sys.stderr
    try:
        loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
        out.write(f"\n+++ {nodeid} is about to time out; asyncio tasks:\n")
        for loop in loops:
            if loop.is_closed():
                continue
            try:
                tasks = list(asyncio.all_tasks(loop))
            except RuntimeError:  # the set changed while we read it from this thread
                continue
            for task in tasks:
                task.print_stack(limit=20, file=out)
    except Exception as exc:  # a diagnostic must never be what fails
        out.write(f"+++ could not list asyncio tasks: {exc!r}\n")
    out.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        simulator_seed=7,
        simulator_realtime=False,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ns=1_795_000_000 * NS_PER_SECOND)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port for this test session.

    ``TICKPIPE_TEST_REDIS_URL`` (set by ``.ci/run``) points at one already running instead.
    """
    preset = os.environ.get("TICKPIPE_TEST_REDIS_URL")
    if preset:
        yield preset
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail(
                "redis-server is not on PATH; CI must install it (apt-get install redis-server)"
            )
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("redis-server did not start within 10 s")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)
