"""Serve an app on a loopback port for a test, and speak raw HTTP to it (to hold a
response open without reading it, or read only its head)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from tickpipe.api.app import create_app
from tickpipe.api.context import ApiContext
from tickpipe.api.protocol import HttpProtocol
from tickpipe.cli import _Server

from ..conftest import free_port


def app_with(ctx: ApiContext, **settings: Any) -> FastAPI:
    """An app over ``ctx`` with some settings changed."""
    return create_app(dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=settings)))


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[int]:
    """``app`` on a free loopback port, as the CLI serves it; yields the port."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        http=HttpProtocol,  # as the CLI serves it: head limits, parser refusals in JSON
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclasses.dataclass
class Opened:
    """A GET whose head was read; the body is left unread until the test reads it."""

    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def body_json(self) -> Any:
        import orjson

        length = int(self.headers["content-length"])
        return orjson.loads(await self.reader.readexactly(length))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # a reset: the server had data we never read
            await self.writer.wait_closed()


async def open_get(port: int, path: str, token: str) -> Opened:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=64 * 1024)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Opened(int(lines[0].split()[1]), headers, reader, writer)
