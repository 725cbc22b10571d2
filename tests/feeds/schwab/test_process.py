"""The Schwab scripts and the pipeline as a user runs them, as processes against the fake."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tickpipe.config import Settings
from tickpipe.store.keystore import KeyStore

from ...conftest import free_port
from ...e2e.helpers import ROOT, PipelineProcess
from ...fakes.schwab import SPX_CHAIN, FakeSchwab, ms_now, rebased
from .harness import lake

pytestmark = pytest.mark.slow


@pytest.fixture
def served() -> Iterator[FakeSchwab]:
    fake = FakeSchwab(heartbeat_s=0.5)
    with fake.in_thread():
        yield fake


def script(name: str, args: list[str], env: dict[str, str], cwd: Path, **kw: Any) -> Any:
    """Run one of scripts/ with exactly ``env`` (no SCHWAB_*/TICKPIPE_* of ours) in ``cwd``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TICKPIPE_", "SCHWAB_"))}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def dry_env(fake: FakeSchwab, tmp_path: Path) -> dict[str, str]:
    return {
        **fake.settings_env(),
        "TICKPIPE_DATA_DIR": str(tmp_path / "data"),
        "SCHWAB_SYMBOLS": "SPY,$SPX,/ES",
        "SCHWAB_CHAIN_SYMBOLS": "$SPX",
        "SCHWAB_ENV_FILE": str(tmp_path / ".env"),
    }


def test_dry_run_passes_with_good_settings_without_opening_the_websocket(
    served: FakeSchwab, tmp_path: Path, redis_url: str
) -> None:
    env = {**dry_env(served, tmp_path), "TICKPIPE_REDIS_URL": redis_url}
    done = script("run_schwab_streamer.py", ["--dry-run"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ok  credentials: SCHWAB_APP_KEY and SCHWAB_APP_SECRET are set"
    assert lines[1].startswith(
        "ok  symbols: LEVELONE_EQUITIES 2, CHART_EQUITY 1, LEVELONE_FUTURES 1"
    )
    assert "ok  Redis answers at TICKPIPE_REDIS_URL (the trading bus)" in lines
    assert any(line.startswith("ok  token refresh: access token valid until") for line in lines)
    assert f"ok  streamer: {served.ws_url} (not opened: dry run)" in lines
    assert lines[-1] == "dry run passed: the settings are ready to stream"
    assert served.login_requests == 0 and not served.conns
    assert [r["grant_type"] for r in served.token_requests] == ["refresh_token"]


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"SCHWAB_APP_KEY": ""}, "needs SCHWAB_APP_KEY"),
        ({"SCHWAB_APP_SECRET": "wrong"}, "check SCHWAB_APP_KEY and SCHWAB_APP_SECRET"),
        ({"SCHWAB_REFRESH_TOKEN": "expired-long-ago"}, "run `tickpipe schwab oauth`"),
        ({"SCHWAB_SYMBOLS": "SPY,S&P"}, "SCHWAB_SYMBOLS: 'S&P' is not a symbol"),
        ({"TICKPIPE_REDIS_URL": "redis://127.0.0.1:{port}/0"}, "cannot reach Redis"),
    ],
)
def test_dry_run_names_what_is_wrong_and_exits_non_zero(
    served: FakeSchwab, tmp_path: Path, change: dict[str, str], sentence: str
) -> None:
    env = dry_env(served, tmp_path)
    env.update({k: v.format(port=free_port()) for k, v in change.items()})
    done = script("run_schwab_streamer.py", ["--dry-run"], env, tmp_path)
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("tickpipe: ") and sentence in line, done.stderr
    assert "Traceback" not in done.stderr


def test_the_oauth_helper_logs_in_with_a_pasted_url_and_saves_the_refresh_token(
    served: FakeSchwab, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# tickpipe\nSCHWAB_SYMBOLS=SPY\n")
    env = {**dry_env(served, tmp_path), "SCHWAB_REFRESH_TOKEN": ""}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TICKPIPE_", "SCHWAB_"))}
    helper = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "schwab_oauth_helper.py"),
            "--no-listen",
            "--env-file",
            str(env_file),
        ],
        env={**clean, **env},
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert helper.stdout is not None and helper.stdin is not None
    consent = ""
    while not consent:
        line = helper.stdout.readline()
        assert line, helper.stderr.read() if helper.stderr else ""
        if "/v1/oauth/authorize?" in line:
            consent = line.strip()
    redirected = httpx.get(consent).headers["location"]  # the browser's part
    helper.stdin.write(redirected + "\n")
    helper.stdin.flush()
    out, err = helper.communicate(timeout=60)
    assert helper.returncode == 0, err
    assert "Logged in." in out
    saved = orjson.loads((tmp_path / "data" / "schwab_tokens.json").read_bytes())
    refresh = saved["token"]["refresh_token"]
    assert refresh in served.refresh_tokens
    assert (
        env_file.read_text() == f"# tickpipe\nSCHWAB_SYMBOLS=SPY\nSCHWAB_REFRESH_TOKEN={refresh}\n"
    )


def test_the_rotator_once_refreshes_and_rewrites_env(served: FakeSchwab, tmp_path: Path) -> None:
    served.rotate_refresh = True
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\nSCHWAB_REFRESH_TOKEN=fake-refresh-token-0\nB=2\n")
    env = {k: v for k, v in dry_env(served, tmp_path).items() if k != "SCHWAB_REFRESH_TOKEN"}
    args = ["--access-interval-minutes", "25", "--refresh-interval-days", "6", "--once"]
    done = script("schwab_token_rotator.py", [*args, "--env-file", str(env_file)], env, tmp_path)
    assert done.returncode == 0, done.stderr
    [refresh] = served.refresh_tokens
    assert env_file.read_text() == f"A=1\nSCHWAB_REFRESH_TOKEN={refresh}\nB=2\n"
    assert "access token refreshed" in done.stderr


def test_data_pipeline_streams_schwab_into_status_and_the_realtime_api(
    served: FakeSchwab, tmp_path: Path
) -> None:
    served.set_chain(rebased(orjson.loads(SPX_CHAIN.read_bytes()), ms_now()))
    now = ms_now()
    snapshot = {
        "1": 600.1,
        "2": 600.2,
        "3": 600.15,
        "4": 3,
        "5": 4,
        "8": 10_000,
        "34": now,
        "35": now,
    }
    served.call(served.update("LEVELONE_EQUITIES", "SPY", snapshot))
    data = tmp_path / "data"
    token, _ = KeyStore(Settings(_env_file=None, data_dir=data).keys_path).create(
        "t", ["read"], 1000
    )  # type: ignore[call-arg]
    env = {
        **served.settings_env(),
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_SIMULATOR": "false",
        "SCHWAB_SYMBOLS": "SPY,$SPX",
        "SCHWAB_CHAIN_SYMBOLS": "$SPX",
        "SCHWAB_ENV_FILE": str(tmp_path / ".env"),
    }
    proc = PipelineProcess(free_port(), env, tmp_path / "run.log")

    def schwab(status: dict[str, Any], name: str = "schwab") -> dict[str, Any]:
        return next(s for s in status["sources"] if s["name"] == name)

    status = proc.wait_for(lambda s: schwab(s)["phase"] == "streaming")
    assert {s["name"] for s in status["sources"]} == {"schwab", "schwab-chains", "gex"}
    stamp = ms_now()
    sent = served.call(
        served.update("LEVELONE_EQUITIES", "SPY", {"3": 600.17, "8": 10_300, "35": stamp})
    )
    assert sent == 1
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 10
    trades: list[dict[str, Any]] = []
    while not trades and time.monotonic() < deadline:
        body = httpx.get(f"{proc.base}/api/v1/ticks/realtime?symbols=SPY", headers=headers).json()
        trades = [e for e in body["data"] if e["type"] == "trade"]
        time.sleep(0.05)  # the process offers no event to wait on
    assert [(t["price"], t["size"], t["ts_event"], t["source"]) for t in trades] == [
        (600.17, 300, stamp * 1_000_000, "schwab")
    ]
    quotes = [e for e in body["data"] if e["type"] == "quote"]
    assert [(q["bid"], q["ask"]) for q in quotes] == [(600.1, 600.2)]
    status = proc.wait_for(
        lambda s: "$SPX" in schwab(s, "schwab-chains")["details"].get("chains", {})
    )
    details = schwab(status)["details"]
    assert details["subscriptions"] == {"LEVELONE_EQUITIES": 2, "CHART_EQUITY": 1}
    assert details["login_time"] and details["last_heartbeat"] and details["entitlement"] == "NP"
    assert proc.stop(signal.SIGINT) == 0


def test_the_streamer_script_alone_feeds_redis_pub_sub_and_the_lake(
    served: FakeSchwab, tmp_path: Path, redis_url: str
) -> None:
    import redis

    now = ms_now()
    snapshot = {
        "1": 600.1,
        "2": 600.2,
        "3": 600.15,
        "4": 3,
        "5": 4,
        "8": 10_000,
        "34": now,
        "35": now,
    }
    served.call(served.update("LEVELONE_EQUITIES", "SPY", snapshot))
    bus = redis.Redis.from_url(redis_url)
    listener = bus.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("ticks")
    env = {**dry_env(served, tmp_path), "SCHWAB_SYMBOLS": "SPY", "TICKPIPE_REDIS_URL": redis_url}
    env.pop("SCHWAB_CHAIN_SYMBOLS")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TICKPIPE_", "SCHWAB_"))}
    streamer = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run_schwab_streamer.py")],
        env={**clean, **env},
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not any(e["type"] == "quote" for e in events) and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.2)  # the snapshot's quote: streaming
            if message is not None:
                events += orjson.loads(message["data"])
        stamp = ms_now()
        served.call(
            served.update("LEVELONE_EQUITIES", "SPY", {"3": 600.2, "8": 10_050, "35": stamp})
        )
        while not any(e["type"] == "trade" for e in events) and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.2)
            if message is not None:
                events += orjson.loads(message["data"])
    finally:
        streamer.send_signal(signal.SIGINT)
        _, err = streamer.communicate(timeout=60)
        listener.close()
        bus.close()
    assert streamer.returncode == 0, err
    [trade] = [e for e in events if e["type"] == "trade"]
    assert (trade["symbol"], trade["price"], trade["size"], trade["source"]) == (
        "SPY",
        600.2,
        50,
        "schwab",
    )
    assert trade["ts_event"] == stamp * 1_000_000
    stored = [(t["symbol"], t["price"], t["size"]) for t in lake(tmp_path / "data", "trade")]
    assert stored == [("SPY", 600.2, 50)]  # flushed to the lake when the streamer stopped
