"""What a new user meets at the command line (issue 20, finding 4): a second instance on a
busy data dir refuses with its sentence and says nothing about listening; a command
without its sub-command (`tickpipe keys`) shows that command's help; every --help is
written for users, not developers."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tickpipe.cli import build_parser, main

from ..conftest import free_port
from ..e2e.helpers import PipelineProcess


@pytest.mark.slow
def test_a_second_instance_on_a_busy_data_dir_refuses_before_it_says_it_listens(
    tmp_path: Path,
) -> None:
    env = {"TICKPIPE_DATA_DIR": str(tmp_path / "data"), "TICKPIPE_SIMULATOR_SEED": "3"}
    first = PipelineProcess(free_port(), env, tmp_path / "first.log")
    first.wait_ready()
    second = PipelineProcess(free_port(), env, tmp_path / "second.log")
    assert second.proc.wait(timeout=60) == 2
    said = (tmp_path / "second.log").read_text()
    assert "is in use by tickpipe process" in said and "stop it first" in said
    assert "listening" not in said and "Traceback" not in said, said
    assert first.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize(
    ("argv", "commands"),
    [
        ([], ["run", "keys", "import"]),
        (["keys"], ["create", "list", "revoke"]),
        (["import"], ["scid", "depth"]),
        (["schwab"], ["oauth", "rotate", "stream"]),
    ],
)
def test_a_command_without_its_sub_command_shows_its_help(
    capsys: pytest.CaptureFixture[str], argv: list[str], commands: list[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: tickpipe {' '.join(argv)}".rstrip())
    assert "required" not in err and "_command" not in err
    for command in commands:
        assert f"\n    {command} " in err, err


def parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, (*path, name))


ALL = {" ".join(path) or "tickpipe": parser for path, parser in parsers(build_parser())}


@pytest.mark.parametrize("command", list(ALL))
def test_every_help_is_written_for_users(command: str) -> None:
    parser = ALL[command]
    text = parser.format_help()
    assert "``" not in text  # reStructuredText: a docstring, not a help text
    assert "nowhere else" not in text and "Logging is configured" not in text
    undocumented = [
        a.dest
        for a in parser._actions
        if not a.help and not isinstance(a, argparse._SubParsersAction)
    ]
    assert not undocumented, f"tickpipe {command}: {undocumented} have no help"
