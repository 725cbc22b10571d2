"""Every process a test session starts dies with the session, however the session ends.

The session puts a tag in its own environment (``JANITOR_TAG``) before any test runs, so
every process it starts inherits it: a redis-server, a pipeline and its uvicorn workers,
Playwright's driver and the Chromium it launches in a session of its own. This janitor is
started first, in a session of its own and without the tag, holding the read end of a
pipe whose write end only pytest holds. When that pipe closes (pytest exited, crashed, was
killed by pytest-timeout's ``os._exit`` or by SIGKILL) it kills every process whose
environment carries the tag, and says which. A process-group kill would miss Chromium,
and PR_SET_PDEATHSIG would miss grandchildren; an inherited environment reaches both.

Loaded as a pytest plugin (``-p tests.janitor`` in pyproject's addopts), it starts itself
as ``python tests/janitor.py TAG`` with stdin a pipe from the session.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TAG_VARIABLE = "JANITOR_TAG"


def tagged(tag: str) -> dict[int, str]:
    """Live processes whose environment carries ``JANITOR_TAG=tag``, with their command."""
    marker = f"{TAG_VARIABLE}={tag}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found[int(entry.name)] = command.strip()[:120]
    return found


def sweep(tag: str, rounds: int = 20) -> dict[int, str]:
    """SIGKILL every tagged process until none is left (a dying parent may have spawned)."""
    killed: dict[int, str] = {}
    for _ in range(rounds):
        found = tagged(tag)
        if not found:
            break
        for pid, command in found.items():
            try:
                os.kill(pid, signal.SIGKILL)
                killed[pid] = command
            except OSError:
                pass
        time.sleep(0.05)
    return killed


def main(tag: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is pytest's to handle
    sys.stdin.buffer.read()  # returns once every holder of the write end is gone
    killed = sweep(tag)
    if killed:
        lines = "".join(f"\n  {pid}: {command}" for pid, command in sorted(killed.items()))
        sys.stderr.write(f"janitor: killed {len(killed)} process(es) the tests left{lines}\n")


def pytest_configure(config: pytest.Config) -> None:
    if not Path("/proc/self/environ").exists():  # Linux only; elsewhere the fixtures reap
        return
    tag = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if k != TAG_VARIABLE}
    janitor = subprocess.Popen(
        [sys.executable, __file__, tag], stdin=subprocess.PIPE, env=env, start_new_session=True
    )
    os.environ[TAG_VARIABLE] = tag
    config.stash[_JANITOR] = janitor


def pytest_unconfigure(config: pytest.Config) -> None:
    janitor = config.stash.get(_JANITOR, None)
    if janitor is not None and janitor.stdin is not None:
        janitor.stdin.close()
        janitor.wait(timeout=30)


_JANITOR = pytest.StashKey[subprocess.Popen[bytes]]()


if __name__ == "__main__":
    main(sys.argv[1])
