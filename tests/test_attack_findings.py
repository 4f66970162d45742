"""Findings of the adversarial review of the merged issue-14 hardening.

Each test here failed on the merged main (dfb19b9) and passes with the fix beside it, or is
marked ``xfail(strict=True)`` with the reason it is left open.

- A redirect followed by ``requests`` (``requests.get(url, auth=session.auth)``, whose GET
  follows redirects by default, or ``session.get(..., allow_redirects=True)`` on a Wire given
  the caller's own ``requests.Session``) carried the session token to any host: requests drops
  only ``Authorization`` when the host changes, and no GuardedAdapter checks a caller's session.
- A token file or Redis value nested too deeply raised a raw ``RecursionError`` out of
  ``load()`` (the store's parser caught ``ValueError`` only).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from session_fsm import KSSession, UnexpectedStatus, UnsafeRedirect, Wire, WireConfig
from session_fsm.file_store import FORMAT, FileStore
from tests.answer_server import SESSION_TOKEN, AnswerServer, answer_server
from tests.conftest import make_credentials
from tests.loopback_listeners import Listener, listening

DEEP = 100_000


class _Redirector:
    """A loopback server answering every GET with a redirect to ``target`` (set later)."""

    def __init__(self) -> None:
        outer = self
        self.target = ""
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                if self.path.startswith("/landed"):
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"[]")
                    return
                self.send_response(302)
                self.send_header("Location", outer.target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redirector() -> Iterator[_Redirector]:
    r = _Redirector()
    yield r
    r.close()


@pytest.fixture
def api() -> Iterator[AnswerServer]:
    with answer_server() as server:
        yield server


def _connected(api: AnswerServer, wire: Wire | None = None) -> KSSession:
    s = KSSession(make_credentials(), host=api.url, wire=wire, timeout=(2.0, 2.0))
    s.connect()
    return s


def test_requests_with_session_auth_never_follows_a_redirect_off_the_allow_list(
    api: AnswerServer, redirector: _Redirector
) -> None:
    with listening() as evil:
        redirector.target = f"http://127.0.0.2:{evil.port}/steal"
        s = _connected(api)
        try:
            # An auth's hook returns answers, never raises: the hop goes without our secrets
            # (the listener drops it).
            with pytest.raises(requests.ConnectionError):
                requests.get(redirector.url + "/r", auth=s.auth, timeout=5)
        finally:
            s.close()
        assert evil.connections == 1
        assert b"GET /steal" in evil.received
        assert SESSION_TOKEN.encode() not in evil.received
        assert b"demo-access-token" not in evil.received


@pytest.mark.parametrize("own_session", [False, True], ids=["wire-session", "caller-session"])
def test_session_get_with_redirects_never_sends_the_token_off_the_allow_list(
    api: AnswerServer, redirector: _Redirector, own_session: bool
) -> None:
    with listening() as evil:
        redirector.target = f"http://127.0.0.2:{evil.port}/steal"
        http = requests.Session() if own_session else None
        s = _connected(api, Wire(WireConfig(timeout=(2.0, 2.0)), http=http))
        try:
            with pytest.raises(UnsafeRedirect):
                s.get(redirector.url + "/r", allow_redirects=True)
            # The scheme-relative and backslash forms requests resolves itself.
            redirector.target = f"//127.0.0.2:{evil.port}/steal"
            with pytest.raises(UnsafeRedirect):
                s.get(redirector.url + "/r", allow_redirects=True)
        finally:
            s.close()
        assert evil.connections == 0


def test_a_redirect_within_the_allow_list_is_still_followed(
    api: AnswerServer, redirector: _Redirector
) -> None:
    redirector.target = "/landed"
    s = _connected(api, Wire(WireConfig(timeout=(2.0, 2.0)), http=requests.Session()))
    try:
        assert s.get(redirector.url + "/r", allow_redirects=True).status_code == 200
        assert requests.get(redirector.url + "/r", auth=s.auth, timeout=5).status_code == 200
    finally:
        s.close()
    assert redirector.hits == 4


def _nested(depth: int) -> bytes:
    head = b'{"format": "' + FORMAT.encode() + b'", "sessions": '
    return head + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("raw", [b"[" * DEEP + b"]" * DEEP, _nested(DEEP)], ids=["top", "inner"])
def test_a_deeply_nested_token_file_is_ignored_not_raised(
    tmp_path: Path, raw: bytes, stack_at_collections: list[str]
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(raw)
    store = FileStore(path)
    assert store.load("k") is None
    assert store.load_cooldown("k") is None
    assert stack_at_collections == []  # refused, not decoded into the recursion limit


def test_a_deeply_nested_redis_value_is_ignored_not_raised() -> None:
    starved: list[str] = []
    from session_fsm.redis_store import RedisStore
    from tests import redis_server
    from tests.conftest import collections_probed

    with redis_server.running() as server:
        client = server.client()
        store = RedisStore(client)
        try:
            client.set("k", b"[" * DEEP + b"]" * DEEP)
            client.set("k:cooldown", b"[" * DEEP + b"]" * DEEP)
            with collections_probed(starved):
                assert store.load("k") is None
                assert store.load_cooldown("k") is None
            assert starved == []  # refused, not decoded into the recursion limit
        finally:
            client.close()


@pytest.mark.parametrize("how", ["not-followed", "session-get", "caller-session"])
def test_the_refused_redirect_error_reaches_no_secret(
    api: AnswerServer, redirector: _Redirector, how: str
) -> None:
    from tests.secret_hunt import hunt

    redirector.target = "http://127.0.0.2:9/steal"
    http = requests.Session() if how == "caller-session" else None
    s = _connected(api, Wire(WireConfig(timeout=(2.0, 2.0)), http=http))
    try:
        with pytest.raises(UnexpectedStatus if how == "not-followed" else UnsafeRedirect) as info:
            s.get(redirector.url + "/r", allow_redirects=how != "not-followed")
    finally:
        s.close()
    creds = make_credentials()
    secrets = [SESSION_TOKEN, creds.access_token.reveal(), "demo-password"]
    assert hunt(info.value, secrets) == []


def test_a_redirect_not_followed_leaves_no_token_on_the_error(
    api: AnswerServer, redirector: _Redirector
) -> None:
    """requests keeps the next hop it would send as ``response.next`` (a copy of the request
    with its headers): the error's response must not carry the session token there."""
    from tests.secret_hunt import hunt

    redirector.target = "/landed"  # on the allow-list: nothing refuses it
    s = _connected(api)
    try:
        with pytest.raises(UnexpectedStatus) as info:
            s.get(redirector.url + "/r")
    finally:
        s.close()
    secrets = [SESSION_TOKEN, make_credentials().access_token.reveal()]
    assert hunt(info.value, secrets) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost.:{port}/apim",
        "http://LocalHost.:{port}/apim",
        "http://127.0.0.1.:{port}/apim",
        "https://127.0.0.1.:{port}/apim",
        "https://10.0.0.5./apim",
    ],
)
def test_a_trailing_dot_loopback_name_or_address_is_no_loopback(url: str) -> None:
    """``localhost.`` and ``127.0.0.1.`` skip the hosts file and inet_aton: the resolver asks
    DNS, which may answer any address (checked: getaddrinfo sends a query to port 53). They
    must not pass as loopback, nor as a listed address, or a hostile init redirect gets the
    login (password in a plain-http body) sent wherever DNS points."""
    from session_fsm.wire import host_allowed

    config = WireConfig(allowed_domains=("kotaksecurities.com", "10.0.0.5"))
    assert not host_allowed(url.format(port=8080), config)
    # and the plain forms still pass
    plain = url.replace(".:", ":").replace("5./", "5/").format(port=8080)
    assert host_allowed(plain, config)


def test_a_trailing_dot_loopback_redirect_never_gets_the_login() -> None:
    from session_fsm.sandbox import SandboxConfig, run_sandbox

    evil = Listener(host="127.0.0.1")
    try:
        target = f"http://localhost.:{evil.port}/apim"
        with run_sandbox(SandboxConfig(redirect_host=target)) as sb:
            s = KSSession(make_credentials(), host=sb.url, timeout=(2.0, 2.0))
            try:
                with pytest.raises(UnsafeRedirect):
                    s.connect()
            finally:
                s.close()
    finally:
        evil.close()
    assert evil.connections == 0


def test_trace_skips_a_deeply_nested_log_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stack_at_collections: list[str]
) -> None:
    from session_fsm.cli import main

    log = tmp_path / "bot.log"
    log.write_text("[" * DEEP + "]" * DEEP + "\n")
    assert main(["trace", str(log)]) == 1  # no transition events: the call failed
    err = capsys.readouterr().err
    assert "RecursionError" not in err
    assert "skipped 1 line, not JSON: line 1" in err
    assert stack_at_collections == []  # refused, not decoded into the recursion limit


def test_a_config_file_that_is_not_utf8_is_a_settings_error_showing_no_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from session_fsm.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    config = tmp_path / "ks.conf"
    config.write_bytes(b"KS_USERID=u\nKS_PASSWORD=p\xe9ssw\xf6rd\n")
    config.chmod(0o600)
    assert main(["login", "--config", str(config)]) == 2  # a setting to fix
    err = capsys.readouterr().err
    assert "UnicodeDecodeError" not in err and "0xe9" not in err
    assert "ks.conf:2: not UTF-8" in err


@pytest.mark.parametrize(
    "proxy",
    ["http://u:Pr0xyPassw0rd@127.0.0.1:1", "socks5://u:Pr0xyPassw0rd@127.0.0.1:1"],
    ids=["refused", "unsupported"],
)
def test_an_environment_proxy_password_is_not_in_rendered_locals(
    api: AnswerServer, proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Wire reads HTTP(S)_PROXY itself; its frame is on every transport error's traceback,
    so renderers that show locals (stdlib, structlog, rich) must not find the proxy's
    password among them."""
    from session_fsm import NetworkError
    from tests.secret_hunt import renderings

    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    s = KSSession(make_credentials(), host=api.url, timeout=(2.0, 2.0))
    try:
        with pytest.raises(NetworkError) as info:
            s.connect()
    finally:
        s.close()
    shown = {name: text for name, text in renderings(info.value).items() if "Pr0xy" in text}
    assert shown == {}


@pytest.mark.parametrize(
    "stored_host",
    ["https://u:pw@evil.example/apim", "http://127.0.0.2:1/apim", "not a url"],
    ids=["userinfo", "off-list", "not-url"],
)
def test_a_stored_session_on_a_refused_host_is_not_adopted(
    api: AnswerServer, tmp_path: Path, stored_host: str
) -> None:
    """A stored session whose host the allow-list refuses (the allow-list was narrowed, or
    another writer put it there) used to be adopted: Authenticated, healthy, and every request
    refused with UnsafeRedirect, for good. It is ignored and the session logs in instead."""
    import json

    from session_fsm.stores import store_key
    from tests.answer_server import TRADING

    path = tmp_path / "tokens.json"
    record = {"host": stored_host, "userid": "demo-user", "session_token": "stored-token",
              "generation": 5, "login_time": 1.0}  # fmt: skip
    key = store_key(api.url, "demo-user")
    path.write_text(json.dumps({"format": FORMAT, "sessions": {key: record}}))
    s = KSSession(make_credentials(), host=api.url, store=FileStore(path), timeout=(2.0, 2.0))
    try:
        s.connect()
        assert s.get(TRADING[1]).status_code == 200
        assert s.snapshot().host == api.url
        assert s.generation > 5  # a fresh login, stored over the refused record
    finally:
        s.close()
    assert api.calls.get(" ".join(TRADING)) == 1
