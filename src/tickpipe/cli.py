"""``tickpipe run`` and friends. Logging is configured here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import uvicorn

from tickpipe.config import Settings, load_settings
from tickpipe.errors import ConfigError

log = logging.getLogger("tickpipe")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the pipeline owns shutdown."""

    def install_signal_handlers(self) -> None:  # older uvicorn
        return

    def capture_signals(self):  # type: ignore[no-untyped-def]
        import contextlib

        return contextlib.nullcontext()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def serve(settings: Settings) -> None:
    from tickpipe.api.app import create_app
    from tickpipe.pipeline import Pipeline

    pipeline = Pipeline(settings)
    app = create_app(settings, pipeline)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", lifespan="off"
    )
    server = _Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def run_pipeline() -> None:
        try:
            await pipeline.run(stop)
        finally:
            stop.set()
            server.should_exit = True

    log.info(
        "tickpipe listening on http://%s:%d (status: /api/v1/status)", settings.host, settings.port
    )
    async with asyncio.TaskGroup() as group:
        group.create_task(run_pipeline(), name="pipeline")
        group.create_task(server.serve(), name="http")
        await stop.wait()
        server.should_exit = True


def _cmd_run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickpipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline and the API server")
    run.add_argument("--host", help="bind address (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (default 8877)")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"tickpipe: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
