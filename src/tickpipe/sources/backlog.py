"""How far behind a streaming feed is: bytes the kernel holds for us, unread, on its socket.

A reader that cannot keep up does not lose data at first: the kernel buffers it, then
TCP's window closes and the server's send buffer fills, and a real server disconnects a
client that stays behind (the backlog is lost with the connection). None of that shows
in event counts, so each streaming source samples its socket's receive queue
(``FIONREAD``) a few times a second and reports it to its context, which puts it on
/status and /metrics and logs when the source falls behind and when it catches up.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import socket
import termios
from typing import Any, Protocol

SAMPLE_EVERY_S = 0.25


class Reports(Protocol):
    def backlog(self, unread_bytes: int) -> None: ...


def unread_bytes(sock: Any) -> int | None:
    """Bytes received by the kernel and not yet read, or None if it cannot tell."""
    if sock is None:
        return None
    try:
        fd = sock.fileno()
        if fd < 0:
            return None
        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except (OSError, ValueError, AttributeError):
        return None
    return int(buf[0])


def transport_socket(connection: Any) -> socket.socket | None:
    """The socket under a websockets connection or an asyncio transport / stream writer."""
    transport = getattr(connection, "transport", connection)
    get = getattr(transport, "get_extra_info", None)
    return None if get is None else get("socket")


async def watch(ctx: Reports, connection: Any, every_s: float = SAMPLE_EVERY_S) -> None:
    """Report the connection's unread bytes every ``every_s`` until cancelled."""
    sock = transport_socket(connection)
    try:
        while True:
            unread = unread_bytes(sock)
            if unread is not None:
                ctx.backlog(unread)
            await asyncio.sleep(every_s)
    finally:
        with contextlib.suppress(Exception):
            ctx.backlog(0)  # the connection is gone: nothing of it is pending any more
