"""Command-line entry points of this feed (filled in by the feed's issue)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction, imports: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this feed's subcommands; none yet."""
