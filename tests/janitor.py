"""Every process a test session starts dies with the session, however the session ends.

The session puts a tag in its own environment (``JANITOR_TAG``) before any test runs, so
every process it starts inherits it: a redis-server, a pipeline and its uvicorn workers,
Playwright's driver and the Chromium it launches in a session of its own. This janitor is
started first, in a session of its own and without the tag, holding the read end of a
pipe whose write end only pytest holds. When that pipe closes (pytest exited, crashed, was
killed by pytest-timeout's ``os._exit`` or by SIGKILL) it kills every process whose
environment carries the tag, and says which. A process-group kill would miss Chromium,
and PR_SET_PDEATHSIG would miss grandchildren; an inherited environment reaches both.
Some programs overwrite their environment to set their process title (redis-server
does), so while the session lives the janitor also notes, four times a second, every
descendant of the session (pid and start time, so a reused pid is never hit) and kills
those too.

Loaded as a pytest plugin (``-p tests.janitor`` in pyproject's addopts), it starts itself
as ``python tests/janitor.py TAG`` with stdin a pipe from the session.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TAG_VARIABLE = "JANITOR_TAG"
NOTE_EVERY_S = 0.25


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


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process (a zombie is dead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid -> start time."""
    table = {int(p): st for p in os.listdir("/proc") if p.isdigit() and (st := _stat(p))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                stack.append(child)
    return found


def noted_alive(noted: dict[int, int]) -> dict[int, str]:
    """Noted descendants still alive as the same process (same start time)."""
    alive: dict[int, str] = {}
    for pid, started in noted.items():
        stat = _stat(str(pid))
        if stat is not None and stat[1] == started and pid != os.getpid():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            alive[pid] = command.decode(errors="replace").strip()[:120]
    return alive


def sweep(tag: str, noted: dict[int, int] | None = None, rounds: int = 20) -> dict[int, str]:
    """SIGKILL every tagged or noted process until none is left (a dying parent may have
    spawned meanwhile)."""
    killed: dict[int, str] = {}
    for _ in range(rounds):
        found = tagged(tag) | noted_alive(noted or {})
        found = {pid: c for pid, c in found.items() if pid not in killed}
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
    session = os.getppid()
    noted: dict[int, int] = {}
    done = threading.Event()

    def note() -> None:
        while not done.wait(NOTE_EVERY_S):
            noted.update(descendants(session))

    watcher = threading.Thread(target=note, daemon=True)
    watcher.start()
    sys.stdin.buffer.read()  # returns once every holder of the write end is gone
    done.set()
    watcher.join()
    noted.pop(os.getpid(), None)
    killed = sweep(tag, noted)
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
