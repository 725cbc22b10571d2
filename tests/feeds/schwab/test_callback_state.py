"""The OAuth helper's callback, when the browser comes back from another login attempt
(issue 20, finding 4: the browser was told "you can close this tab" and the terminal "the
pasted URL belongs to another login" though nothing was pasted). Both now say what
happened, and the helper keeps waiting for this login's redirect."""

from __future__ import annotations

import io
import queue
import threading
from contextlib import redirect_stdout

import httpx
import pytest

from tickpipe.sources.schwab import cli as schwab_cli
from tickpipe.sources.schwab.callback import CallbackCatcher

from ...conftest import free_port


def test_a_redirect_from_another_login_is_answered_as_such_and_the_wait_goes_on() -> None:
    port = free_port()
    origin = f"https://127.0.0.1:{port}"
    found: queue.Queue[str] = queue.Queue()
    told = threading.Event()
    catcher = CallbackCatcher(origin, found, state="this-login", say=told.set)
    assert catcher.start()
    try:
        with httpx.Client(verify=False, timeout=5) as browser:
            foreign = browser.get(f"{origin}/?code=C0.old%40&state=an-older-login")
            assert foreign.status_code == 400
            assert "another Schwab login attempt" in foreign.text
            assert "close this tab" not in foreign.text
            assert told.is_set()
            assert browser.get(f"{origin}/favicon.ico").status_code == 404
            assert found.empty()  # neither is this login's answer: still waiting

            ours = browser.get(f"{origin}/?code=C0.new%40&state=this-login")
            assert ours.status_code == 200 and "you can close this tab" in ours.text
        assert found.get(timeout=5) == f"{origin}/?code=C0.new%40&state=this-login"
    finally:
        catcher.stop()


def test_a_refused_login_is_handed_on_for_the_terminal_to_explain() -> None:
    port = free_port()
    origin = f"https://127.0.0.1:{port}"
    found: queue.Queue[str] = queue.Queue()
    catcher = CallbackCatcher(origin, found, state="s")
    assert catcher.start()
    try:
        answer = httpx.get(f"{origin}/?error=access_denied&state=s", verify=False, timeout=5)
        assert answer.status_code == 200 and "did not grant" in answer.text
        assert found.get(timeout=5).endswith("?error=access_denied&state=s")
    finally:
        catcher.stop()


def test_the_terminal_says_a_callback_came_from_another_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The helper as the user runs it: the consent URL printed, a foreign callback, then
    this login's."""
    port = free_port()
    callback = f"https://127.0.0.1:{port}"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # nothing pasted
    read = schwab_cli.interactive_redirect(callback, listen=True)
    consent = "https://api.example/v1/oauth/authorize?client_id=k&state=this-login"
    out = io.StringIO()
    got: list[str] = []

    def helper() -> None:
        with redirect_stdout(out):
            got.append(read(consent))

    thread = threading.Thread(target=helper)
    thread.start()
    with httpx.Client(verify=False, timeout=5) as browser:
        for _ in range(100):  # the helper's listener starts on its own thread
            try:
                browser.get(f"{callback}/?code=old&state=other-login")
                break
            except httpx.ConnectError:
                thread.join(0.05)
        browser.get(f"{callback}/?code=new&state=this-login")
    thread.join(10)
    assert got == [f"{callback}/?code=new&state=this-login"]
    text = out.getvalue()
    assert "came back from another login attempt" in text and "ignored" in text
    assert "pasted URL belongs to another login" not in text
