"""The HTTP floor: a bare Starlette app under uvicorn answering constant bodies.

Served exactly as tickpipe serves its API (uvicorn with its default ``httptools`` parser,
uvloop, no access log, logging at WARNING), so a route of ours divided by this in the same
run, under the same load, is what our own code costs. ``/api/v1/health`` answers a 42-byte
JSON object; ``--body PATH=FILE`` adds a route answering FILE's bytes (the same bytes a
route of ours sends, so payload size is not counted against our code).

    python bench/floor_app.py --port 18001 [--body /api/v1/ticks/realtime=answer.json]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HEALTH = b'{"status":"ok","ready":true,"reasons":[]}'


def constant(body: bytes) -> Callable[[Request], Awaitable[Response]]:
    async def answer(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return answer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", action="append", default=[], help="PATH=FILE")
    args = parser.parse_args()
    routes = [Route("/api/v1/health", constant(HEALTH))]
    for spec in args.body:
        path, _, file = spec.partition("=")
        routes.append(Route(path, constant(Path(file).read_bytes())))
    config = uvicorn.Config(
        Starlette(routes=routes),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="off",
        log_config=None,
    )
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
