"""``tickpipe run`` and friends. Logging is configured here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from tickpipe.config import Settings, load_settings
from tickpipe.errors import ConfigError, KeyStoreError, StorageError
from tickpipe.logsafe import configure_logging
from tickpipe.store.keystore import KeyStore, shown_name
from tickpipe.store.lock import lock_data_dir

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("tickpipe")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the pipeline owns shutdown."""

    def install_signal_handlers(self) -> None:  # older uvicorn
        return

    def capture_signals(self):  # type: ignore[no-untyped-def]
        import contextlib

        return contextlib.nullcontext()


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}): use --port") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(settings: Settings, role: str = "all") -> None:
    from tickpipe.api.app import create_app
    from tickpipe.api.protocol import HttpProtocol
    from tickpipe.pipeline import Pipeline, api_context

    sock = bind_socket(settings.host, settings.port)  # a busy port fails before anything starts
    lock_data_dir(settings.data_dir, "starting").close()  # so does a busy data dir (the
    # pipeline takes the lock for good as it starts; this only refuses before "listening")
    pipeline = Pipeline(settings, role=role)
    ctx = api_context(pipeline)
    app = create_app(ctx)
    if role == "ingest":
        ingest_routes_only(app)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="off",
        log_config=None,  # through the root logger and its redaction filter
        http=HttpProtocol,  # head limits; uvicorn's own refusals in our JSON shape
        ws_per_message_deflate=False,  # per-client compression made 200 clients fall behind
    )
    server = _Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: leave now; the journal makes this safe
            log.warning("second signal: exiting without the final flush (recovered on next start)")
            os._exit(130)
        log.info("stopping: flushing the journal to the lake (Ctrl-C again to force)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

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
        group.create_task(server.serve(sockets=[sock]), name="http")
        await stop.wait()
        server.should_exit = True


_INGEST_ROUTES = {"/api/v1/health", "/api/v1/status", "/openapi.json"}


def ingest_routes_only(app: FastAPI) -> None:
    """What ``--role ingest`` serves: status, health and the API's docs."""
    from tickpipe.api.routes import docs

    keep = _INGEST_ROUTES | docs.PATHS
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") in keep]


def _cmd_run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    configure_logging(settings.log_level)
    if args.role == "api":
        from tickpipe.api.protocol import HttpProtocol
        from tickpipe.api.readonly import api_context

        api_context(settings)  # refuse to start with a sentence, before forking workers
        log.info(
            "tickpipe API (%d workers) on http://%s:%d", args.workers, settings.host, settings.port
        )
        uvicorn.run(
            "tickpipe.api.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=args.workers,
            log_level="warning",
            log_config=None,
            http=HttpProtocol,
            ws_per_message_deflate=False,
        )
        return 0
    if args.workers != 1:
        raise ConfigError("--workers applies to --role api; the ingest process is one process")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(settings, args.role))
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (it comes with uvicorn[standard]): a faster event loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _data_dir_origin(settings: Settings) -> str:
    """Where ``tickpipe run`` (the same ``load_settings``) got its data dir from."""
    if os.environ.get("TICKPIPE_DATA_DIR"):
        return "TICKPIPE_DATA_DIR"
    env_file = Path(".env")
    if env_file.is_file() and any(
        line.strip().startswith("TICKPIPE_DATA_DIR=")
        for line in env_file.read_text(errors="replace").splitlines()
    ):
        return f"TICKPIPE_DATA_DIR in {env_file.resolve()}"
    return f"the default ./data under {Path.cwd()}"


def _key_store(*, create: bool = False) -> tuple[Settings, KeyStore]:
    """The key database of the data dir ``tickpipe run`` would use here, named on stderr.
    Only ``create`` makes one; listing or revoking where there is none is an error, not a
    new empty database in whatever directory the command ran from."""
    settings = load_settings()
    path = settings.keys_path
    where = f"{path.resolve()} (data dir from {_data_dir_origin(settings)})"
    if not path.exists():
        if not create:
            raise ConfigError(
                f"no key database at {where}: run this where you run `tickpipe run`, or set "
                "TICKPIPE_DATA_DIR to its data directory"
            )
        print(f"creating the key database {where}", file=sys.stderr)
    else:
        print(f"using the key database {where}", file=sys.stderr)
    return settings, KeyStore(path)


def _cmd_keys_create(args: argparse.Namespace) -> int:
    settings, store = _key_store(create=True)
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    rate = settings.api_default_rate_limit if args.rate_limit is None else args.rate_limit
    token, key = store.create(args.name, scopes, rate)
    print(token)
    print(
        f"key '{key.name}' created with scopes {','.join(sorted(key.scopes))} and "
        f"{key.rate_limit:g} requests/s; it is shown only this once",
        file=sys.stderr,
    )
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _key_store()[1].list()
    if not keys:
        print("no keys yet: tickpipe keys create --name NAME --scopes read", file=sys.stderr)
    for key in keys:
        state = "revoked" if key.revoked_ns else "active"
        print(
            f"{shown_name(key.name)}\t{key.id}\t{','.join(sorted(key.scopes))}\t"
            f"{key.rate_limit:g}/s\t{state}"
        )
    return 0


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    key = _key_store()[1].revoke(args.name)
    print(f"revoked '{shown_name(key.name)}' (id {key.id})", file=sys.stderr)
    return 0


DESCRIPTION = """A tick-data pipeline and its HTTP API. `tickpipe run` ingests the configured
feeds (a simulated market when none is set up), keeps recent data hot, writes everything
to a Parquet lake and serves the API on http://127.0.0.1:8877 (status page: /status.html).
Settings come from the environment or a .env file; see the README."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickpipe", description=DESCRIPTION)
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the pipeline and the API server",
        description="Run the pipeline and the API server until Ctrl-C (which flushes the "
        "journal to the lake first). One process owns a data directory at a time.",
    )
    run.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 for every interface)")
    run.add_argument("--port", type=int, help="port (default 8877)")
    run.add_argument(
        "--role",
        choices=("all", "ingest", "api"),
        default="all",
        help="all: pipeline + API (default); ingest: pipeline + status; api: API only (needs Redis)",
    )
    run.add_argument(
        "--workers", type=int, default=1, help="API worker processes (--role api only; default 1)"
    )
    run.set_defaults(func=_cmd_run)

    keys = sub.add_parser(
        "keys",
        help="manage API keys (works with or without a running server)",
        description="Create, list and revoke the API keys of the data directory `tickpipe run` "
        "uses here (TICKPIPE_DATA_DIR, default ./data), whether or not the server runs.",
    )
    keys_sub = keys.add_subparsers(title="commands", dest="keys_command", metavar="COMMAND")
    create = keys_sub.add_parser(
        "create",
        help="create a key and print it once",
        description="Create a key and print it (once: only its hash is kept).",
    )
    create.add_argument(
        "--name",
        required=True,
        help="who or what uses it: 1 to 100 printable characters, one active key per name",
    )
    create.add_argument("--scopes", default="read", help="comma-separated: read, stream, admin")
    create.add_argument(
        "--rate-limit",
        type=float,
        help="requests per second, 0.01 to 1000000 (default TICKPIPE_API_DEFAULT_RATE_LIMIT)",
    )
    create.set_defaults(func=_cmd_keys_create)
    keys_sub.add_parser(
        "list", help="list keys (never their secrets)", description="List keys, one per line."
    ).set_defaults(func=_cmd_keys_list)
    revoke = keys_sub.add_parser(
        "revoke",
        help="revoke a key by name; effective at once",
        description="Revoke the active key of this name; requests with it are refused at once.",
    )
    revoke.add_argument("name", help="the key's name (as `tickpipe keys list` shows it)")
    revoke.set_defaults(func=_cmd_keys_revoke)

    imports = sub.add_parser(
        "import",
        help="backfill history from files into the lake",
        description="Load history files into the lake (stop `tickpipe run` first).",
    )
    import_sub = imports.add_subparsers(title="formats", dest="import_command", metavar="FORMAT")
    for module in FEED_COMMANDS:
        importlib.import_module(module).register(sub, import_sub)
    _help_without_subcommand(parser)
    return parser


def _help_without_subcommand(parser: argparse.ArgumentParser) -> None:
    """A command that needs a sub-command (``tickpipe keys``) prints its help, the list of
    its sub-commands, instead of argparse's "the following arguments are required"."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.required = False
            parser.set_defaults(func=functools.partial(_print_help, parser))
            for child in action.choices.values():
                _help_without_subcommand(child)


def _print_help(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    parser.print_help(sys.stderr)
    return 2


FEED_COMMANDS = (
    "tickpipe.sources.schwab.cli",
    "tickpipe.sources.sierra.cli",
)
"""Feed modules that add commands: each has ``register(commands, import_commands)``, which
adds its subparsers (``tickpipe schwab ...``, ``tickpipe import scid ...``) with ``func``
set to a callable taking the parsed args and returning the exit code. They import their
heavy dependencies inside those callables, so ``tickpipe --help`` stays fast."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, KeyStoreError) as exc:
        print(f"tickpipe: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:  # a file it must write cannot be (a full disk)
        print(f"tickpipe: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:  # a task of the running pipeline refused to start
        refused = group.subgroup((ConfigError, KeyStoreError))
        if refused is None:
            raise
        print(f"tickpipe: {_first(refused)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


if __name__ == "__main__":
    raise SystemExit(main())
