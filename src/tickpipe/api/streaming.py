"""The response of downloads and replays: a streamed body that holds a small, bounded
buffer however slowly it is read, gives its admission ticket back however it ends, stops
within a second of its key's revocation, and cuts off a reader that takes nothing for
``STALL_S``.

The body is made on demand: the next chunk is produced only once the previous one was
handed to the server, which waits while the client's socket is full; so a stalled reader
holds one page of rows and one encoded chunk, never more. Chunks go out in pieces of at
most ``PIECE_BYTES``, so the server's transport buffer holds little beyond the kernel's.

How a stream ends:

- the body is done: the response completes;
- the client left: nothing more is sent;
- the key was revoked: a body with a ``farewell`` (NDJSON replays) ends with that line,
  ``{"error": {"code": "key_revoked", ...}}``, and completes; a binary download is cut
  (the connection closes without the final chunk), so no client takes the part it got
  for a whole file;
- the reader took nothing for ``STALL_S``, or the body failed: cut likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tickpipe.api.admission import Ticket
from tickpipe.api.errors import error_body
from tickpipe.api.revocation import REVOKED_MESSAGE

log = logging.getLogger(__name__)

STALL_S = 30.0
"""a reader that accepts nothing for this long is cut off (its place is given back)"""
PIECE_BYTES = 256 * 1024
FAREWELL_S = 0.5
"""how long a revoked stream's last line may wait for its reader"""
REVOKED_LINE = error_body("key_revoked", REVOKED_MESSAGE) + b"\n"


class End(enum.Enum):
    DONE = "done"
    GONE = "client left"
    REVOKED = "key revoked"
    STALLED = f"the client read nothing for {STALL_S:g} s"
    FAILED = "the body failed"


class BoundedStream(Response):
    """A streamed 200 whose body is ``body``; see the module docstring."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        media_type: str,
        ticket: Ticket,
        revoked: Callable[[], Coroutine[Any, Any, None]],
        farewell: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self._ticket = ticket
        self._revoked = revoked
        self._farewell = farewell
        self.ended: End | None = None
        """how the stream ended (tests, and the log line of a cut stream)"""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            self.ended = end = await self._run(send, receive)
            if end is End.REVOKED and self._farewell is not None:
                with contextlib.suppress(TimeoutError, OSError):
                    async with asyncio.timeout(FAREWELL_S):
                        await _body(send, self._farewell, more=True)
                        end = End.DONE
            if end is End.DONE:
                with contextlib.suppress(OSError):
                    await _body(send, b"", more=False)
            elif end is not End.GONE:
                log.warning("%s %s cut: %s", scope.get("method"), scope.get("path"), end.value)
        finally:
            self._ticket.release()
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]

    async def _run(self, send: Send, receive: Receive) -> End:
        async with asyncio.TaskGroup() as group:
            pump = group.create_task(self._pump(send))
            gone = group.create_task(_disconnected(receive))
            revoked = group.create_task(self._revoked())
            await asyncio.wait({pump, gone, revoked}, return_when=asyncio.FIRST_COMPLETED)
            for task in (pump, gone, revoked):
                task.cancel()
        if pump.done() and not pump.cancelled():
            return pump.result()
        return End.REVOKED if revoked.done() and not revoked.cancelled() else End.GONE

    async def _pump(self, send: Send) -> End:
        try:
            async for chunk in self.body_iterator:
                for piece in _pieces(chunk):
                    try:
                        async with asyncio.timeout(STALL_S):
                            await _body(send, piece, more=True)
                    except TimeoutError:
                        return End.STALLED
        except OSError:
            return End.GONE
        except Exception:
            log.exception("a streamed body failed")
            return End.FAILED
        return End.DONE


async def _body(send: Send, data: bytes, *, more: bool) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


def _pieces(chunk: bytes) -> Iterator[bytes]:
    if len(chunk) <= PIECE_BYTES:
        yield chunk
        return
    view = memoryview(chunk)
    for start in range(0, len(view), PIECE_BYTES):
        yield bytes(view[start : start + PIECE_BYTES])


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def in_threads(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking iterator (queries, encoders) stepped one chunk at a time in a worker
    thread: nothing is made before it is asked for."""
    done = object()
    while True:
        chunk = await asyncio.to_thread(next, chunks, done)
        if chunk is done:
            return
        assert isinstance(chunk, bytes)
        yield chunk
