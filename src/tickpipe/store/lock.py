"""One writer per data directory: ``tickpipe run`` and ``tickpipe import`` take this lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TextIO

from tickpipe.errors import ConfigError


def lock_data_dir(data_dir: Path, what: str) -> TextIO:
    """Hold ``data_dir/ingest.lock`` for the life of the process (a second writer would close
    the first one's open journal segments under it); the lock dies with the process."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # keys, tokens and data: ours only
    path = data_dir / "ingest.lock"
    handle = open(path, "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"{data_dir} is in use by tickpipe process {owner}: stop it first, or set "
            "TICKPIPE_DATA_DIR to another directory (API-only processes: --role api)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} ({what})")
    handle.flush()
    return handle
