"""A tickpipe API server process for the bounded-memory test: the real pipeline and app,
no sources, the query layer's DuckDB memory limit set from the command line (so a
dataset a few times that limit is enough to show whether memory stays bounded).

    python -m tests.hardening.rss_server DATA_DIR PORT MEMORY_LIMIT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn

from tickpipe.api.app import create_app
from tickpipe.api.protocol import HttpProtocol
from tickpipe.config import Settings
from tickpipe.pipeline import Pipeline, api_context
from tickpipe.store.query import Query


async def main(data: Path, port: int, memory_limit: str) -> None:
    settings = Settings(_env_file=None, data_dir=data, simulator="false")  # type: ignore[call-arg]
    pipeline = Pipeline(settings, sources=[])
    pipeline.query = Query(
        settings.lake_dir, settings.journal_dir, pipeline.hot, memory_limit=memory_limit
    )
    stop = asyncio.Event()
    run = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    config = uvicorn.Config(
        create_app(api_context(pipeline)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        http=HttpProtocol,
    )
    await uvicorn.Server(config).serve()
    stop.set()
    await run


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
