"""``tickpipe import scid PATH...`` and ``tickpipe import depth PATH...``.

A path is a file or a folder (its ``*.scid`` / ``*.depth`` files); each file's symbol comes
from its name (``ESZ25-CME.scid`` -> ``/ESZ25``) unless ``--symbol`` names it (one file).
Prices are rounded to ``--tick-size``, else to the symbol's ``SIERRA_TICK_SIZES`` entry.
The import runs through the backfill path: resumable, idempotent, straight to the lake.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tickpipe.errors import ConfigError

if TYPE_CHECKING:
    from tickpipe.sources.sierra.importer import ImportFile

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Import Sierra Chart .{kind} files into the lake. A PATH is a file or a folder of "
    ".{kind} files; each file's symbol comes from its name (ESZ25-CME.{kind} is /ESZ25) "
    "unless --symbol names it (one file only). Prices are rounded to --tick-size, else to "
    "the symbol's SIERRA_TICK_SIZES entry. Stop `tickpipe run` first. An import can be "
    "stopped and run again: it continues where it stopped and never adds a record twice."
)


def register(commands: argparse._SubParsersAction, imports: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``import scid`` and ``import depth``."""
    for kind, what in (
        ("scid", "Sierra Chart intraday (.scid) files: trades, quotes, bars"),
        ("depth", "Sierra Chart market depth (.depth) files: book updates"),
    ):
        parser = imports.add_parser(kind, help=what, description=DESCRIPTION.format(kind=kind))
        parser.add_argument(
            "paths",
            nargs="+",
            type=Path,
            metavar="PATH",
            help=f"a .{kind} file or a folder of them",
        )
        parser.add_argument("--symbol", help="the tickpipe symbol (e.g. /ESZ25) of a single file")
        parser.add_argument("--tick-size", type=float, help="round prices to this tick (e.g. 0.25)")
        parser.set_defaults(func=_run, import_kind=kind)


def plan(
    paths: list[Path], kind: str, symbol: str | None, tick: float | None, ticks: dict[str, float]
) -> list[ImportFile]:
    """The files to import with their symbols and tick sizes; ConfigError says what is wrong."""
    from tickpipe.sources.sierra.importer import ImportFile
    from tickpipe.sources.sierra.names import check_tick_size, symbol_of_file, tick_size_for
    from tickpipe.symbols import is_canonical

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() == f".{kind}"
            )
            if not inside:
                raise ConfigError(f"{path} holds no .{kind} files")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder")
    if symbol is not None:
        symbol = symbol.strip().upper()
        if len(found) != 1:
            raise ConfigError(
                f"--symbol names the symbol of one file; {len(found)} were given (the others take theirs from their names)"
            )
        if not is_canonical(symbol):
            raise ConfigError(
                f"--symbol {symbol}: not a tickpipe symbol (futures /ESZ25, stocks SPY)"
            )
    if tick is not None:
        check_tick_size(tick, "--tick-size")
    items: list[ImportFile] = []
    owners: dict[str, Path] = {}
    for path in found:
        name = symbol or symbol_of_file(path)
        if name is None:
            raise ConfigError(
                f"cannot tell the symbol of {path.name} from its name: import it alone with --symbol /SYMBOL"
            )
        if kind == "scid" and name in owners:
            raise ConfigError(
                f"{owners[name].name} and {path.name} are both {name}: a record's seq is its number in its file, so import one of them with another --symbol"
            )
        owners[name] = path
        size = tick if tick is not None else tick_size_for(name, ticks, name=path.stem)
        if size is None:
            log.warning(
                "no tick size for %s: prices rounded to 7 significant digits (pass --tick-size or set SIERRA_TICK_SIZES)",
                name,
            )
        items.append(ImportFile(path.resolve(), name, size))
    return items


def _run(args: argparse.Namespace) -> int:
    from tickpipe.backfill import keep_freed_memory, run_backfill
    from tickpipe.clock import SystemClock
    from tickpipe.config import load_settings
    from tickpipe.logsafe import configure_logging
    from tickpipe.sources.sierra.importer import DepthImport, ScidImport

    settings = load_settings()
    configure_logging(settings.log_level)
    items = plan(
        args.paths, args.import_kind, args.symbol, args.tick_size, settings.sierra_tick_sizes
    )
    keep_freed_memory()
    clock = SystemClock()
    source = ScidImport(items, clock) if args.import_kind == "scid" else DepthImport(items, clock)
    report = asyncio.run(run_backfill(settings, [source], progress=sys.stderr.isatty()))
    failed = 0
    for part in report.sources:
        print(part.summary())
        failed += part.counters.get("files_failed", 0) + (0 if part.complete else 1)
    if failed:
        print(
            f"tickpipe: {failed} file(s) could not be imported; the quarantine has the reason",
            file=sys.stderr,
        )
        return 1
    return 0
