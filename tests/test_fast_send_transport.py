"""Issue 15 (performance): the fast send honours the transport settings ``Wire.send`` does.

Over real loopback servers: the environment's proxy (read once) carries the fast path's
requests as it carries ``Wire.send``'s, and ``NO_PROXY`` sends directly; https is verified
against the configured CA bundle, or the environment's, and an untrusted certificate is a typed
TLS error; a cookie an answer sets is kept by the Wire's session and sent afterwards, as
``requests.Session`` does.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from session_fsm import KSSession, NetworkError, RetryPolicy, Wire, WireConfig
from session_fsm.fast_send import RequestTemplate
from session_fsm.sandbox import Sandbox
from tests.test_environment import PROXY_VARIABLES, Proxy
from tests.test_fast_send import ORDERS, template_of, through_wire


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_the_environment_proxy_carries_fast_requests_as_wire_send(
    env: pytest.MonkeyPatch, sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    proxy = Proxy()
    try:
        env.setenv("HTTP_PROXY", proxy.url)
        s = new_session()  # its Wire reads the environment once, on its first call
        s.connect()
        proxy.seen.clear()
        fast = template_of(s).send("GET", ORDERS)
        slow = through_wire(s, "GET", ORDERS)
        assert fast.status_code == slow.status_code == 200
        assert proxy.seen == [sb.url + ORDERS] * 2
        env.setenv("NO_PROXY", "127.0.0.1")  # read once: the Wire keeps what it read
        template_of(s).send("GET", ORDERS)
        assert len(proxy.seen) == 3
    finally:
        proxy.close()


def test_no_proxy_sends_directly(
    env: pytest.MonkeyPatch, new_session: Callable[..., KSSession]
) -> None:
    proxy = Proxy()
    try:
        env.setenv("HTTP_PROXY", proxy.url)
        env.setenv("NO_PROXY", "127.0.0.1")
        s = new_session()
        s.connect()
        assert template_of(s).send("GET", ORDERS).status_code == 200
        assert proxy.seen == []
    finally:
        proxy.close()


class CookieServer:
    """Answers every GET with a load balancer's cookie and records the Cookie header sent."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []
        seen = self.cookies

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("Cookie"))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Set-Cookie", "lb=node-7; Path=/")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/apim"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_cookies_an_answer_sets_are_kept_and_sent_as_wire_send_does() -> None:
    server = CookieServer()
    try:
        seen = []
        for fast in (True, False):
            wire = Wire(WireConfig(retry=RetryPolicy(total=0)))
            t = RequestTemplate(wire, server.url, {"Accept": "application/json"})
            first = t.send("GET", ORDERS) if fast else wire.send("GET", server.url + ORDERS)
            assert first.cookies.get("lb") == "node-7"
            assert wire.http.cookies.get("lb") == "node-7"  # the Wire's session keeps it
            t.send("GET", ORDERS)  # sent with the cookie (through Wire.send, which sends it)
            seen.append(list(server.cookies))
            server.cookies.clear()
            wire.close()
        assert seen[0] == seen[1] == [None, "lb=node-7"]
    finally:
        server.close()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """An https server on loopback with a self-signed certificate for localhost: its base URL
    and the certificate's path (the CA bundle that trusts it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = CookieServer()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server.server.socket = ctx.wrap_socket(server.server.socket, server_side=True)
    yield server.url.replace("http://127.0.0.1", "https://localhost"), str(cert)
    server.close()


def test_https_honours_the_configured_ca_bundle(tls_server: tuple[str, str]) -> None:
    url, ca = tls_server
    trusted = Wire(WireConfig(verify=ca, retry=RetryPolicy(total=0)))
    t = RequestTemplate(trusted, url, {"Accept": "application/json"})
    fast = t.send("GET", ORDERS)
    assert fast.status_code == 200 and fast.json() == {}
    assert fast.url == url + ORDERS
    trusted.close()
    untrusting = Wire(WireConfig(retry=RetryPolicy(total=0)))  # the default CA bundle
    t = RequestTemplate(untrusting, url, {"Accept": "application/json"})
    with pytest.raises(NetworkError, match="TLS"):
        t.send("GET", ORDERS)
    with pytest.raises(NetworkError, match="TLS"):
        untrusting.send("GET", url + ORDERS)  # as Wire.send
    untrusting.close()


def test_https_takes_the_ca_bundle_from_the_environment_once(
    tls_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = tls_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    wire = Wire(WireConfig(retry=RetryPolicy(total=0)))
    t = RequestTemplate(wire, url, {"Accept": "application/json"})
    assert t.send("GET", ORDERS).status_code == 200
    wire.close()
