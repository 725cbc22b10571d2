"""Serve a fake from a thread with its own event loop, for tests that block (e.g. waiting on
a pipeline process) while the fake must keep answering."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any


@contextlib.contextmanager
def serve_in_thread(
    start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]], name: str
) -> Iterator[None]:
    """``start()`` the fake on a new loop in a thread; ``stop()`` it there on exit. An error
    while starting is raised here, in the test's thread."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        box["loop"] = asyncio.get_running_loop()
        box["stopping"] = stopping = asyncio.Event()
        try:
            await start()
        finally:
            ready.set()
        await stopping.wait()
        await stop()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    ready.wait(10)
    if "error" in box:
        raise box["error"]
    try:
        yield
    finally:
        box["loop"].call_soon_threadsafe(box["stopping"].set)
        thread.join(15)
