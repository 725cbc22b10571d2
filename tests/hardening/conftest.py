"""The API fixtures of tests/api (a real pipeline without live sources, and the same API on
a loopback port), and a small real filesystem to fill, for the hardening tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..api.conftest import Api, api, served
from ..e2e.helpers import PipelineProcess

__all__ = ["Api", "api", "fill", "served", "tmpfs"]


@pytest.fixture(autouse=True)
def _reap_processes() -> Iterator[None]:
    """Every pipeline process a test starts is reaped after it, even when the test fails."""
    yield
    PipelineProcess.reap_all()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs (root only: elsewhere the journal tests cover ENOSPC by injection)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root; tests/unit covers ENOSPC by injection")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        PipelineProcess.reap_all()  # before the filesystem under them goes
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no byte left (unbuffered: nothing is left
    over to fail again on close)."""
    with open(path, "wb", buffering=0) as fh:
        for size in (65536, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
