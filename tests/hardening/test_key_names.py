"""Key names people can read and reuse (issue 20, findings 3 and 4): a name with NUL, a
line break, a bidi override, a '/' or a space at either end is refused with a sentence by
the API and the CLI (such names broke ``tickpipe keys list``); a revoked key's name can be
given to a new key (the README creates ``my-model`` and later revokes it); a key database
of an older version, where names were unique over revoked keys too, is upgraded in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tickpipe.cli import main
from tickpipe.errors import KeyStoreError
from tickpipe.store.keystore import KeyStore

from .conftest import Api

BAD_NAMES = {
    "nul": "model\x00x",
    "newline": "model\nx",
    "tab": "model\tx",
    "bidi override": "model\u202ex",
    "zero-width space": "model\u200bx",
    "slash": "team/model",
    "leading space": " model",
    "trailing space": "model ",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
async def test_the_api_refuses_unreadable_names_with_a_sentence(api: Api, name: str) -> None:
    body = {"name": name, "scopes": ["read"]}
    response = await api.client.post("/api/v1/admin/keys", json=body, headers=api.auth(api.admin))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "key_refused"
    assert error["message"].startswith("a key name is 1 to 100 printable characters")
    assert "\x00" not in error["message"] and "\u202e" not in error["message"]


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_the_cli_refuses_unreadable_names_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    monkeypatch.setenv("TICKPIPE_DATA_DIR", str(tmp_path / "data"))
    assert main(["keys", "create", "--name", name]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    refusal = out.err.splitlines()[-1]
    assert refusal.startswith("tickpipe: a key name is 1 to 100 printable characters")
    assert all(c.isprintable() for c in refusal)


def test_names_in_any_script_are_fine(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    for name in ("Jürgen's model", "模型 1", "back-tester_2.0 (prod)"):
        assert store.create(name, ["read"], 10)[1].name == name
    store.close()


async def test_a_revoked_name_can_be_given_to_a_new_key(api: Api) -> None:
    admin = api.auth(api.admin)
    first = await api.client.post("/api/v1/admin/keys", json={"name": "my-model"}, headers=admin)
    old = first.json()["key"]
    assert (
        await api.client.delete("/api/v1/admin/keys/my-model", headers=admin)
    ).status_code == 200
    again = await api.client.post("/api/v1/admin/keys", json={"name": "my-model"}, headers=admin)
    assert again.status_code == 201, again.text
    new = again.json()["key"]
    twice = await api.client.post("/api/v1/admin/keys", json={"name": "my-model"}, headers=admin)
    assert twice.status_code == 400  # one active key per name
    assert "revoke it first" in twice.json()["error"]["message"]
    probe = "/api/v1/quotes/latest?symbols=SPY"
    assert (await api.client.get(probe, headers=api.auth(old))).status_code == 401
    assert (await api.client.get(probe, headers=api.auth(new))).status_code == 200
    listed = (await api.client.get("/api/v1/admin/keys", headers=admin)).json()["data"]
    mine = [(k["id"], k["revoked_ns"] is None) for k in listed if k["name"] == "my-model"]
    assert [active for _, active in mine] == [False, True] and mine[0][0] != mine[1][0]
    revoked = await api.client.delete("/api/v1/admin/keys/my-model", headers=admin)
    assert revoked.json()["id"] == mine[1][0]  # the active one, not the old one


def test_the_readme_keys_block_can_be_run_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TICKPIPE_DATA_DIR", str(tmp_path / "data"))
    for _ in range(2):
        assert main(["keys", "create", "--name", "my-model", "--scopes", "read,stream"]) == 0
        assert main(["keys", "list"]) == 0
        assert main(["keys", "revoke", "my-model"]) == 0
    capsys.readouterr()
    assert main(["keys", "list"]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(row[0], row[-1]) for row in listed] == [("my-model", "revoked")] * 2
    assert listed[0][1] != listed[1][1]  # two keys, two ids


def test_an_older_key_database_is_upgraded_and_keeps_its_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    old = sqlite3.connect(data / "keys.sqlite")
    old.execute(
        "CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
        "secret_sha256 TEXT NOT NULL, scopes TEXT NOT NULL, rate_limit REAL NOT NULL, "
        "created_ns INTEGER NOT NULL, revoked_ns INTEGER)"
    )
    rows = [
        ("0000000a", "my-model", "0" * 64, "read", 10.0, 1, 5),
        ("0000000b", "bad\nname\u202e", "0" * 64, "read", 10.0, 2, None),  # before the rules
    ]
    old.executemany("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    old.commit()
    old.close()
    store = KeyStore(data / "keys.sqlite")
    assert [(k.id, k.name) for k in store.list()] == [(r[0], r[1]) for r in rows]
    token, key = store.create("my-model", ["read"], 10)
    assert store.verify(token) == key
    with pytest.raises(KeyStoreError, match="an active key is named 'my-model'"):
        store.create("my-model", ["read"], 10)
    store.close()

    monkeypatch.setenv("TICKPIPE_DATA_DIR", str(data))
    assert main(["keys", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3  # one line per key, whatever an old name holds
    assert out[1].startswith("bad\\u000aname\\u202e\t0000000b\t")
