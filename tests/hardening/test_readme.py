"""The README followed top to bottom by a new user, on a fresh data dir.

Issue 12 (finding 8): the examples used fixed dates that answer nothing on any other day.
Issue 20: the Python example used an undefined ``KEY``; the first query answered
``stale`` and ``stream("SPY")`` looked hung while the simulator held SPY silent for a
minute; ``redis-cli XREVRANGE`` printed binary Arrow with no word on how to read it.

So the README's own blocks run here as written, in order: the install block's run command
(``pip install`` is the one command left out: the suite runs in the installed venv), the
status block, the DuckDB block, the keys block, the curl block, the GEX block and the
Python block; and in a second test the Redis block. They run in bash with this virtual
environment first on ``PATH`` (an activated venv), without any ``TICKPIPE_`` setting, in
a directory that holds only ``data-pipeline.py`` (a checkout, as far as the commands go).
Only the port and the Redis URL are substituted.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pytest

from tickpipe.api.params import parse_time
from tickpipe.clock import NS_PER_SECOND, SystemClock

from ..conftest import free_port
from ..e2e.helpers import ROOT

README = ROOT / "README.md"
SETTINGS_PREFIXES = ("TICKPIPE_", "SCHWAB_", "GEXBOT_", "TASTYTRADE_", "SIERRA_")
LAKE_WITHIN_S = 60
"""the README says 10 s (TICKPIPE_JOURNAL_SEGMENT_SECONDS), and quarantine seconds later;
slack for a loaded machine"""


def block(section: str, language: str, containing: str = "") -> str:
    """The first ``language`` code block after the heading ``section`` that holds
    ``containing``."""
    text = README.read_text()
    start = text.index(section)
    for found in re.finditer(rf"```{language}\n(.*?)```", text[start:], re.S):
        if containing in found.group(1):
            return found.group(1)
    raise AssertionError(f"no {language} block with {containing!r} under {section}")


def commands(script: str, word: str) -> list[str]:
    """The lines of ``script`` that run ``word`` (comments aside)."""
    return [line for line in script.splitlines() if line.lstrip().startswith(word)]


class NewUser:
    """A new user's terminals: a checkout with an activated venv and no settings."""

    def __init__(self, home: Path, port: int) -> None:
        home.mkdir(parents=True)
        shutil.copy(ROOT / "data-pipeline.py", home)
        self.home = home
        self.port = port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
        self.env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        self.servers: list[subprocess.Popen[bytes]] = []

    def local(self, text: str) -> str:
        port = str(self.port)
        return re.sub(r"(localhost|127\.0\.0\.1):8877", rf"127.0.0.1:{port}", text).replace(
            "--port 8877", f"--port {port}"
        )

    def run(self, script: str, timeout: float = 60, **env: str) -> str:
        """``script`` in a new bash that stops at the first failing command; its output."""
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + self.local(script)],
            cwd=self.home,
            env=self.env | env,
            capture_output=True,
            text=True,
            errors="replace",  # redis-cli prints binary Arrow as it is
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    def start(self, command: str, **env: str) -> subprocess.Popen[bytes]:
        """``command`` in another terminal, left running."""
        log = open(self.home / "server.log", "ab")  # noqa: SIM115 - the process holds it
        server = subprocess.Popen(
            ["bash", "-c", "exec " + self.local(command)],
            cwd=self.home,
            env=self.env | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.servers.append(server)
        return server

    def wait_ready(self, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert server.poll() is None, (self.home / "server.log").read_text()[-3000:]
            try:
                health = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=2)
                if health.json().get("ready"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the demo never became ready")

    def stop_all(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                server.kill()
                server.wait(timeout=30)


@pytest.fixture
def user(tmp_path: Path) -> Any:
    person = NewUser(tmp_path / "tickpipe", free_port())
    try:
        yield person
    finally:
        person.stop_all()


def answers(output: str) -> list[str]:
    """What each curl printed, in order (the curl wrapper ends each with a line ``@@@``)."""
    return output.split("\n@@@\n")[:-1]


CURL = 'curl() { command curl --fail-with-body "$@"; printf "\\n@@@\\n"; }\n'
"""every curl fails the script on an HTTP error, and marks where its answer ends"""


def check_answer(line: str, text: str, home: Path) -> None:
    """One curl of the README answered with data (or, for the quality records, a page)."""
    if "-o " in line:
        name = re.search(r"-o (\S+)", line)
        assert name is not None
        table = pa.ipc.open_stream((home / name.group(1)).read_bytes()).read_all()
        assert table.num_rows > 0, line
    elif "/replay" in line:
        events = [orjson.loads(x) for x in text.splitlines() if x.strip()]
        assert events and all(e["symbol"] == "SPY" for e in events), line
    elif "/quality/" in line:
        assert isinstance(orjson.loads(text)["data"], list), line
    elif "/gex/" in line:
        gex = orjson.loads(text)
        assert gex["spot"] > 0 and len(gex["strikes"]["strike"]) > 0, line
    else:
        answer = orjson.loads(text)
        assert answer["data"], line
        for symbol, fresh in answer.get("freshness", {}).items():
            assert fresh["stale"] is False, (line, symbol, fresh)
        if "/quotes/latest" in line:
            assert all(quote["stale"] is False for quote in answer["data"]), line


@pytest.mark.slow
def test_the_readme_top_to_bottom_on_a_fresh_data_dir(user: NewUser) -> None:
    install = block("## Install and run", "bash", "data-pipeline.py")
    [run] = [line for line in install.splitlines() if "data-pipeline.py" in line]
    demo = user.start(run)
    user.wait_ready(demo)

    status_block = block("## Install and run", "bash", "/api/v1/status")
    out = user.run(status_block)
    status, health = orjson.loads(out[: out.rindex("}\n{") + 2]), orjson.loads(out.splitlines()[-1])
    assert "simulator" in {s["name"] for s in status["sources"]}
    assert health["status"] == "ok" and health["ready"] is True

    lake = user.home / "data" / "lake"  # the README's wait: the datasets its blocks read
    deadline = time.monotonic() + LAKE_WITHIN_S
    while not all(
        list((lake / d).glob("date=*/*.parquet")) for d in ("trade", "option", "quarantine")
    ):
        assert time.monotonic() < deadline, "no Parquet files in the lake"
        time.sleep(0.5)

    out = user.run(block("## Look at the data", "bash", "duckdb"))
    assert re.search(r"│ SPY\s+│\s+\d+", out), out
    assert "rule" in out, out

    out = user.run(block("## Query it (HTTP API)", "bash", "keys create") + 'echo "KEY=$KEY"\n')
    key = out.splitlines()[-1].removeprefix("KEY=")
    assert key.startswith("tp_"), out
    assert re.search(r"my-model\s.*read,stream.*active", out), out

    script = block("## Query it (HTTP API)", "bash", "Authorization: Bearer") + block(
        "### Gamma exposure (GEX)", "bash", "curl"
    )  # in the same terminal: the GEX block uses the first one's $H
    out = user.run(CURL + script, KEY=key)
    curls = commands(script, "curl")
    assert len(answers(out)) == len(curls), out[-3000:]
    for line, text in zip(curls, answers(out), strict=True):
        check_answer(line, text, user.home)

    code = block("### From Python", "python")
    started = time.monotonic()
    out = user.run(f"python - <<'PY'\n{code}PY\n", timeout=60, KEY=key)
    assert time.monotonic() - started < 30, "the stream of SPY trades took long to start"
    trades = re.findall(r"^\S+Z (\d+\.\d+) (\d+\.\d+)$", out, re.M)
    assert len(trades) == 3, out
    assert re.search(r"│ SPY\s+┆.*┆ false\s+│", out) and re.search(
        r"│ QQQ\s+┆.*┆ false\s+│", out
    ), out

    demo.send_signal(signal.SIGINT)  # Ctrl-C: flushed, then a clean exit
    assert demo.wait(timeout=60) == 0
    assert "journal flushed" in (user.home / "server.log").read_text()


@pytest.mark.slow
@pytest.mark.redis
def test_the_redis_section_prints_readable_entries(user: NewUser, redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    script = block("### With Redis", "bash", "XREVRANGE").replace(
        "redis://127.0.0.1:6379/0", redis_url
    )
    [run] = commands(script, "TICKPIPE_REDIS_URL=")
    setting, command = run.split(" ", 1)
    name, url = setting.split("=", 1)
    demo = user.start(
        command.replace("data-pipeline.py", "data-pipeline.py --port 8877"), **{name: url}
    )
    user.wait_ready(demo)
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 30
    while not client.exists("tickpipe:hot:trade:SPY"):
        assert time.monotonic() < deadline, "no SPY trades in Redis"
        time.sleep(0.2)

    cli = f"redis-cli -u {redis_url} "
    [subscribe] = commands(script, "redis-cli SUBSCRIBE")
    done = subprocess.run(
        ["timeout", "3", "bash", "-c", subscribe.replace("redis-cli ", cli)],
        env=user.env,
        capture_output=True,
        text=True,
    )
    events = [orjson.loads(x) for x in done.stdout.splitlines() if x.startswith("[{")]
    assert events and all("type" in event for batch in events for event in batch)

    [xrevrange] = commands(script, "redis-cli XREVRANGE")
    raw = user.run(xrevrange.replace("redis-cli ", cli))
    assert raw.splitlines()[1:4:2] == ["n", "arrow"], raw[:200]

    heredoc = re.search(r"^python - <<'PY'.*?^PY$", script, re.S | re.M)
    assert heredoc is not None
    out = user.run(heredoc.group(0) + "\n")
    assert re.search(r"│ \d+\s+┆ \d+\s+┆ SPY\s+┆ \d+\.\d+", out), out

    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=60) == 0


def test_readme_examples_use_no_fixed_dates() -> None:
    for section, language in (("## Query it (HTTP API)", "bash"), ("### From Python", "python")):
        assert not re.search(r"20\d\d-\d\d-\d\d", block(section, language)), section


def test_relative_times() -> None:
    now = SystemClock().now_ns()
    day = 86_400 * NS_PER_SECOND
    assert abs(parse_time("now", "t") - now) < 5 * NS_PER_SECOND
    assert abs(parse_time("now-15m", "t") - (now - 900 * NS_PER_SECOND)) < 5 * NS_PER_SECOND
    assert parse_time("today", "t") == now // day * day
    assert parse_time("TODAY-1d", "t") == now // day * day - day
    assert parse_time("now+2h", "t") > now
