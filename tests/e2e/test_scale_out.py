"""One ingest process and two API worker processes share Redis and the data dir: the
workers answer from what the ingest writes, relay its events field for field, and hold a
pub/sub subscription only while a WebSocket client wants one, within a bounded number of
Redis connections."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pytest
import websockets.sync.client as ws_client

import redis
from tickpipe.api.readonly import POOL_SIZE
from tickpipe.config import Settings
from tickpipe.events import SCHEMAS, Kind
from tickpipe.store import keys
from tickpipe.store.hot import deserialize
from tickpipe.store.keystore import KeyStore

from ..conftest import free_port
from .helpers import ROOT

pytestmark = pytest.mark.slow
CHANNELS = ("ticks", "level2", "options", "gex")


@dataclasses.dataclass
class Cluster:
    base: str
    token: str
    redis: redis.Redis
    data: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ws(self, query: str) -> ws_client.ClientConnection:
        return ws_client.connect(
            f"ws://{self.base.removeprefix('http://')}/api/v1/stream?{query}&token={self.token}"
        )


def eventually(check: Callable[[], Any], timeout_s: float = 30, what: str = "") -> Any:
    """Poll another process (or Redis) until ``check`` returns something truthy: they offer
    nothing this test could await."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")} | env
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tickpipe.cli", "run", *args],
            env=full_env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        tail = log.read_text(errors="replace")[-2000:]
        raise AssertionError(
            f"{proc.args} ignored SIGINT for 60 s; its log ends:\n{tail}"
        ) from None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Cluster]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    work = tmp_path_factory.mktemp("scale-out")
    data = work / "data"
    env = {
        "TICKPIPE_DATA_DIR": str(data),
        "TICKPIPE_REDIS_URL": redis_url,
        "TICKPIPE_SIMULATOR_RATE": "2000",
        "TICKPIPE_GEX_HISTORY_SECONDS": "1",
    }
    ingest = start(["--role", "ingest", "--port", str(free_port())], env, work / "ingest.log")
    port = free_port()
    api = start(["--role", "api", "--workers", "2", "--port", str(port)], env, work / "api.log")
    try:
        token, _ = KeyStore(Settings(_env_file=None, data_dir=data).keys_path).create(  # type: ignore[call-arg]
            "m", ["read", "stream"], 1000
        )
        yield Cluster(f"http://127.0.0.1:{port}", token, client, data)
    finally:
        stop(api, work / "api.log")
        stop(ingest, work / "ingest.log")
        client.close()


def realtime(cluster: Cluster, query: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{cluster.base}/api/v1/ticks/realtime?{query}", headers=cluster.headers, timeout=5
    )
    return list(r.json()["data"]) if r.status_code == 200 else []


def test_api_workers_serve_what_the_ingest_process_writes(cluster: Cluster) -> None:
    rows = eventually(lambda: realtime(cluster, "symbols=SPY&limit=5"), what="realtime rows")
    assert all(row["symbol"] == "SPY" for row in rows)

    def ingest_status() -> dict[str, Any] | None:
        answer = httpx.get(f"{cluster.base}/api/v1/status", timeout=5)
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "ingest_unavailable"  # not published yet
            return None
        return dict(answer.json())

    status = eventually(ingest_status, what="the ingest's status")
    assert status["api"]["role"] == "api" and status["api"]["ingest_status_age_s"] < 10
    assert "simulator" in {s["name"] for s in status["sources"]}  # the ingest's, same shape


def test_a_worker_answers_exactly_the_newest_events_redis_holds(cluster: Cluster) -> None:
    """While the ingest keeps writing, an answer asked between two reads of the stream's
    newest entry that found the same entry is exactly the newest 20 trades Redis held; and
    answers move on as the ingest writes."""
    query = "symbols=QQQ&types=trade&limit=20"
    first = eventually(lambda: realtime(cluster, query), what="QQQ trades")
    key = keys.stream_key(Kind.TRADE, "QQQ")
    checked = 0
    for _ in range(50):
        held = cluster.redis.xrevrange(key, count=20)
        answer = realtime(cluster, query)
        if cluster.redis.xrevrange(key, count=1)[0][0] != held[0][0]:
            continue  # the ingest wrote meanwhile: either answer would do
        assert [(r["seq"], r["ts_event"], r["price"]) for r in answer] == newest(held, 20)
        checked += 1
    assert checked >= 10
    assert realtime(cluster, query)[-1]["seq"] != first[-1]["seq"]


def newest(entries: list[Any], limit: int) -> list[tuple[int, int, float]]:
    """The newest ``limit`` trades in stream entries read newest first (XREVRANGE)."""
    batches = [deserialize(fields[b"arrow"], SCHEMAS[Kind.TRADE]) for _, fields in entries]
    rows = pa.Table.from_batches(batches[::-1]).to_pylist()[-limit:]
    return [(r["seq"], r["ts_event"], r["price"]) for r in rows]


def test_a_worker_relays_prices_expiries_and_gex_field_for_field(cluster: Cluster) -> None:
    """Each event a worker's WebSocket delivers is the event as ingested: the same JSON as
    the journal gives for it through the history route (prices, sizes, nulls, an option's
    expiry date, a GEX ladder), not only its symbol."""
    option = eventually(
        lambda: sorted(cluster.redis.smembers(keys.stream_symbols_key(Kind.OPTION))),
        what="option contracts in Redis",
    )[0].decode()
    wanted = {"trade", "quote", "option", "gex"}
    seen: dict[str, dict[str, Any]] = {}
    with cluster.ws(f"symbols=SPY,{option.replace(' ', '%20')}&types=trade,quote,option,gex") as ws:
        assert orjson.loads(ws.recv(timeout=10))["type"] == "subscribed"
        deadline = time.monotonic() + 60
        while set(seen) != wanted:
            assert time.monotonic() < deadline, f"only {sorted(seen)} arrived"
            for event in orjson.loads(ws.recv(timeout=30)):
                seen.setdefault(event["type"], event)
    assert seen["option"]["symbol"] == option and len(seen["option"]["expiry"]) == 10
    assert seen["gex"]["strikes"] and len(seen["gex"]["strikes"]) == len(
        seen["gex"]["gex_usd_per_1pct"]
    )
    for kind, event in seen.items():
        assert as_ingested(cluster, kind, event) == event, kind


def as_ingested(cluster: Cluster, kind: str, event: dict[str, Any]) -> dict[str, Any]:
    """The same event (source, seq) from the journal, through the history route."""
    query = {
        "symbols": event["symbol"],
        "types": kind,
        "start_time": str(event["ts_event"]),
        "end_time": str(event["ts_event"] + 1),
    }

    def find() -> dict[str, Any] | None:
        r = httpx.get(
            f"{cluster.base}/api/v1/ticks/historical",
            params=query,
            headers=cluster.headers,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        same = [
            e
            for e in r.json()["data"]
            if (e["source"], e["seq"]) == (event["source"], event["seq"])
        ]
        return same[0] if same else None

    return dict(eventually(find, what=f"{kind} {event['symbol']} #{event['seq']} in the journal"))


def numsub(cluster: Cluster) -> dict[str, int]:
    return {name.decode(): n for name, n in cluster.redis.pubsub_numsub(*CHANNELS)}


def subscribed_clients(cluster: Cluster) -> list[dict[str, Any]]:
    return [c for c in cluster.redis.client_list() if c["sub"] != "0" or c["psub"] != "0"]


def test_a_worker_subscribes_only_while_a_websocket_client_wants_a_kind(cluster: Cluster) -> None:
    eventually(lambda: realtime(cluster, "symbols=SPY&limit=1"), what="the workers")
    eventually(lambda: not subscribed_clients(cluster), what="no subscription at all")
    assert numsub(cluster) == dict.fromkeys(CHANNELS, 0)
    with cluster.ws("symbols=SPY&types=trade") as ws:
        assert orjson.loads(ws.recv(timeout=10))["type"] == "subscribed"
        assert orjson.loads(ws.recv(timeout=10))[0]["symbol"] == "SPY"  # relayed: subscribed
        assert numsub(cluster) == {"ticks": 1, "level2": 0, "options": 0, "gex": 0}
        assert len(subscribed_clients(cluster)) == 1
    eventually(lambda: numsub(cluster) == dict.fromkeys(CHANNELS, 0), what="unsubscribed")
    eventually(lambda: not subscribed_clients(cluster), what="pub/sub connection closed")


async def test_each_worker_holds_a_bounded_number_of_redis_connections(cluster: Cluster) -> None:
    """Under 100 concurrent requests that each need Redis, a worker's pool waits for a free
    connection rather than opening more: at most POOL_SIZE + its tracking connection."""
    eventually(lambda: realtime(cluster, "symbols=SPY&limit=1"), what="the workers")
    async with httpx.AsyncClient(base_url=cluster.base, headers=cluster.headers) as client:
        answers = await asyncio.gather(
            *(client.get("/api/v1/quotes/latest?symbols=SPY,QQQ", timeout=30) for _ in range(100))
        )
    assert {a.status_code for a in answers} == {200}
    names = [c["name"] for c in cluster.redis.client_list()]
    assert 0 < names.count("tickpipe-api") <= 2 * POOL_SIZE
    assert sum(n.startswith("tickpipe-api-") for n in names) == 2  # one tracking each


def test_api_role_without_redis_refuses_with_a_sentence(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKPIPE_")}
    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "run", "--role", "api", "--port", str(free_port())],
        env=env | {"TICKPIPE_DATA_DIR": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--role api needs TICKPIPE_REDIS_URL" in result.stderr
