"""The Wire reads proxies and the CA bundle from the environment once, and never ~/.netrc.

Real parts: the sandbox over loopback and a forwarding HTTP proxy on loopback that records what
passed through it.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from session_fsm import (
    ConfigurationError,
    KSSession,
    NetworkError,
    State,
    Wire,
    WireConfig,
    contract,
)
from session_fsm.environment import EnvironmentSettings
from session_fsm.sandbox import Sandbox
from session_fsm.wire import NO_RETRY
from tests.test_wire import who

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "transfer-encoding"}


class Proxy:
    """A forwarding HTTP proxy on loopback; ``seen`` lists the URLs it carried."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                target = urlsplit(self.path)  # a proxy gets the absolute URL
                seen.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn = http.client.HTTPConnection(target.netloc, timeout=5)
                path = target.path + (f"?{target.query}" if target.query else "")
                conn.request(self.command, path, body=body or None, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_DELETE = forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy()
    yield p
    p.close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable set, in either case, whatever the machine has."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


SESSION_CALLS = (contract.SESSION_INIT, contract.LOGIN_USERID, contract.TWO_FA_ACCESSCODE)


def test_a_netrc_entry_for_the_host_does_not_replace_the_bearer_token(
    env: pytest.MonkeyPatch, tmp_path: Path, new_session: Callable[..., KSSession]
) -> None:
    # requests would send these Basic credentials instead of our Authorization header.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login intruder password not-the-token\n")
    netrc.chmod(0o600)
    env.setenv("NETRC", str(netrc))
    s = new_session()
    s.connect()
    assert s.state is State.AUTHENTICATED


def test_the_environment_proxy_carries_every_session_call(
    env: pytest.MonkeyPatch, proxy: Proxy, sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    env.setenv("HTTP_PROXY", proxy.url)
    s = new_session()
    s.connect()
    assert s.state is State.AUTHENTICATED
    assert proxy.seen == [sb.url + path for _, path in SESSION_CALLS]


def test_no_proxy_sends_directly(
    env: pytest.MonkeyPatch, proxy: Proxy, new_session: Callable[..., KSSession]
) -> None:
    env.setenv("HTTP_PROXY", proxy.url)
    env.setenv("NO_PROXY", "127.0.0.1")
    s = new_session()
    s.connect()
    assert s.state is State.AUTHENTICATED
    assert proxy.seen == []


def test_the_environment_is_read_once_until_close(
    env: pytest.MonkeyPatch, proxy: Proxy, sb: Sandbox
) -> None:
    wire = Wire(WireConfig(retry=NO_RETRY))
    try:
        wire.session_init(sb.url, who())  # no proxy yet: direct, and remembered
        env.setenv("HTTP_PROXY", proxy.url)
        wire.session_init(sb.url, who())
        assert proxy.seen == []
        wire.close()  # forgets what it read
        wire.session_init(sb.url, who())
        assert proxy.seen == [sb.url + contract.SESSION_INIT[1]]
    finally:
        wire.close()


def test_proxies_passed_by_the_caller_win_over_the_environment(
    env: pytest.MonkeyPatch, proxy: Proxy, sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    env.setenv("NO_PROXY", "127.0.0.1")  # so the session calls go directly
    s = new_session()
    s.connect()
    r = s.get(contract.ORDERS_REPORT[1], proxies={"http": proxy.url})
    assert r.status_code == 200
    assert proxy.seen == [sb.url + contract.ORDERS_REPORT[1]]


def test_proxies_none_from_the_caller_keeps_the_environment_proxies(
    env: pytest.MonkeyPatch, proxy: Proxy, sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    env.setenv("HTTP_PROXY", proxy.url)  # as in requests: None means "no proxies of my own"
    s = new_session()
    s.connect()
    assert s.get(contract.ORDERS_REPORT[1], proxies=None).status_code == 200
    assert proxy.seen[-1] == sb.url + contract.ORDERS_REPORT[1]


def test_a_missing_ca_bundle_named_by_the_environment_is_a_configuration_error(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    env.setenv("REQUESTS_CA_BUNDLE", str(missing))
    wire = Wire(WireConfig(retry=NO_RETRY))
    with pytest.raises(ConfigurationError) as caught:
        wire.send("GET", "https://127.0.0.1:9/x")
    assert "missing.pem" in str(caught.value)
    assert "REQUESTS_CA_BUNDLE" in str(caught.value)  # the hint says where to look
    # verify=False asks for no bundle: the call goes out (and finds nothing listening).
    unverified = Wire(WireConfig(retry=NO_RETRY, verify=False))
    with pytest.raises(NetworkError):
        unverified.send("GET", "https://127.0.0.1:9/x")


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, True),
        ({"CURL_CA_BUNDLE": "/curl.pem"}, "/curl.pem"),
        ({"REQUESTS_CA_BUNDLE": "/req.pem", "CURL_CA_BUNDLE": "/curl.pem"}, "/req.pem"),
        ({"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "/curl.pem"}, "/curl.pem"),
    ],
)
def test_ca_bundle_precedence_is_requests(
    env: pytest.MonkeyPatch, variables: dict[str, str], expected: object
) -> None:
    env.delenv("REQUESTS_CA_BUNDLE", raising=False)
    env.delenv("CURL_CA_BUNDLE", raising=False)
    for k, v in variables.items():
        env.setenv(k, v)
    settings = EnvironmentSettings()
    assert settings.verify(True) == expected
    assert settings.verify(False) is False  # an explicit choice is never overridden
    assert settings.verify("/mine.pem") == "/mine.pem"


def test_a_requests_session_of_the_caller_is_used_as_it_is(
    env: pytest.MonkeyPatch, proxy: Proxy, sb: Sandbox
) -> None:
    # trust_env stays on: requests reads the environment on every call, as it always does.
    own = requests.Session()
    wire = Wire(WireConfig(retry=NO_RETRY), http=own)
    try:
        wire.session_init(sb.url, who())
        env.setenv("HTTP_PROXY", proxy.url)
        wire.session_init(sb.url, who())
        assert own.trust_env is True
        assert proxy.seen == [sb.url + contract.SESSION_INIT[1]]
    finally:
        wire.close()
