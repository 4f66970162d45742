"""Issue 14, item 1: the allow-list decides on the host the transport connects to.

A hostile ``session/init`` redirect, an absolute URL given to ``session.get()`` or to requests
with ``auth=session.auth``, or a request handed straight to the Wire's adapter: none may send a
byte to a host the allow-list did not approve. The stand-in for the attacker is a loopback
listener that counts connections; the URLs use the parser tricks of the security review
(``\\@`` and ``\\.`` read by ``urlsplit`` as user info / part of the name, by urllib3 as the
end of the host).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
from hypothesis import example, given
from hypothesis import strategies as st
from urllib3.util import parse_url

from session_fsm import ConfigurationError, KSSession, UnsafeRedirect, WireConfig
from session_fsm.sandbox import Sandbox, SandboxConfig, run_sandbox
from session_fsm.wire import LOOPBACK_HOSTS, check_host, host_allowed
from tests.conftest import FAST_RETRY, Clock, make_credentials
from tests.loopback_listeners import listening

KS = "kotaksecurities.com"
ORDERS = "/reports/1.0/orders"
INIT_ONLY = {"GET /session/1.0/session/init": 1}


def session_on(sb: Sandbox, clock: Clock, **options: Any) -> KSSession:
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("timeout", (2.0, 2.0))
    return KSSession(make_credentials(), host=sb.url, clock=clock, **options)


# --- the review's examples, end to end ------------------------------------------------------


@pytest.mark.parametrize(
    "redirect",
    [
        # full URL: urlsplit reads user info "127.0.0.2:PORT\", host tradeapi.kotaksecurities.com
        "https://127.0.0.2:{evil}\\@tradeapi.kotaksecurities.com/apim",
        # the bare host form (the session builds https://HOST:PORT/apim from it)
        "127.0.0.2:{evil}\\@tradeapi.kotaksecurities.com",
        # plain user info, which no KS URL has
        "https://127.0.0.2:{evil}@tradeapi.kotaksecurities.com/apim",
    ],
)
def test_a_hostile_redirect_never_gets_the_login(redirect: str, clock: Clock) -> None:
    with listening() as evil:
        target = redirect.format(evil=evil.port)
        with run_sandbox(SandboxConfig(redirect_host=target)) as sb:
            s = session_on(sb, clock)
            with pytest.raises(UnsafeRedirect) as info:
                s.connect()
            calls = sb.control.stats()["calls"]
            s.close()
        assert evil.connections == 0 and evil.received == b""
        assert calls == INIT_ONLY  # the login POST (password, Bearer) left for nowhere
        assert str(evil.port) not in str(info.value)  # user info is never shown
        assert s.state.value == "Uninitialised"


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.2:{evil}\\@tradeapi.kotaksecurities.com/apim" + ORDERS,
        "https://127.0.0.2:{evil}@tradeapi.kotaksecurities.com/apim" + ORDERS,
        "http://127.0.0.2:{evil}\\@127.0.0.1/apim" + ORDERS,
        "https://127.0.0.2:{evil}/apim" + ORDERS,
    ],
)
def test_an_absolute_url_never_gets_the_session_headers(
    url: str, sb: Sandbox, clock: Clock
) -> None:
    s = session_on(sb, clock)
    s.connect()
    with listening() as evil:
        target = url.format(evil=evil.port)
        with pytest.raises(UnsafeRedirect):
            s.get(target)
        with pytest.raises(UnsafeRedirect):  # any requests code using the session's auth
            requests.get(target, auth=s.auth, timeout=2)
        with pytest.raises(UnsafeRedirect):  # the adapter itself, the last step before bytes
            prepared = requests.Request("GET", target, headers={"sessionToken": "x"}).prepare()
            s.wire.http.send(prepared, timeout=2)
    s.close()
    assert evil.connections == 0 and evil.received == b""
    assert s.get(ORDERS).status_code == 200  # the session itself is fine


def _bind_443() -> socket.socket | None:
    try:
        return socket.create_server(("127.0.0.2", 443))
    except OSError:
        return None


def test_the_backslash_dot_form_never_connects(clock: Clock) -> None:
    # urlsplit: host "127.0.0.2\.kotaksecurities.com" (under the allowed domain); urllib3:
    # host "127.0.0.2", port 443. Only port 443 shows the connection, so bind it if we may.
    probe = _bind_443()
    if probe is None:
        pytest.skip("cannot listen on 127.0.0.2:443 here (the unit test below still runs)")
    probe.close()
    with listening(443) as evil, run_sandbox() as sb:
        s = session_on(sb, clock)
        s.connect()
        with pytest.raises(UnsafeRedirect):
            s.get("https://127.0.0.2\\.kotaksecurities.com/apim" + ORDERS)
        s.close()
    assert evil.connections == 0


@pytest.mark.parametrize(
    ("url", "sent_to"),
    [
        ("https://evil.com\\.kotaksecurities.com/apim", "evil.com"),
        ("https://evil.com\\@tradeapi.kotaksecurities.com/apim", "evil.com"),
        ("https://tradeapi.kotaksecurities.com@evil.com/apim", "evil.com"),
        ("https://evil.com#.kotaksecurities.com", "evil.com"),
        ("https://evil.com?.kotaksecurities.com", "evil.com"),
        ("https://evil.com/.kotaksecurities.com", "evil.com"),
        ("https://2130706433/apim", "2130706433"),
    ],
)
def test_each_example_is_refused_where_requests_would_connect_elsewhere(
    url: str, sent_to: str
) -> None:
    assert connect_hosts(url) == {sent_to}  # what requests/urllib3 would really connect to
    assert not host_allowed(url, WireConfig())
    with pytest.raises(UnsafeRedirect):
        check_host(url, WireConfig())


def test_a_configured_host_with_user_info_is_refused_and_not_shown() -> None:
    for host in (
        "https://u:hunter2@ctradeapi.kotaksecurities.com/apim",
        "http://u:hunter2@127.0.0.1:9/apim",
    ):
        with pytest.raises(ConfigurationError) as info:  # a setting to fix: no redirect
            KSSession(make_credentials(), host=host)
        assert not isinstance(info.value, UnsafeRedirect)
        shown = f"{info.value!s} {info.value!r} {info.value.args}"
        assert "hunter2" not in shown and "u:" not in shown
        assert "user info" in str(info.value)


def test_messages_never_show_user_info(clock: Clock) -> None:
    target = "https://admin:hunter2@evil.example/apim"
    with run_sandbox(SandboxConfig(redirect_host=target)) as sb:
        s = session_on(sb, clock)
        with pytest.raises(UnsafeRedirect) as info:
            s.connect()
        s.close()
    err = info.value
    assert "hunter2" not in f"{err!s}{err!r}{err.host}" and "admin" not in str(err)
    assert "evil.example" in str(err)


def test_the_hint_names_the_real_option() -> None:
    err = UnsafeRedirect("evil.example")
    assert "allowed_domains" in err.hint and "allowed_hosts" not in str(err)


def test_plain_hosts_still_pass() -> None:
    cfg = WireConfig()
    for url in (
        "https://ctradeapi.kotaksecurities.com/apim",
        "https://CTRADEAPI.KotakSecurities.com./apim",
        "https://kotaksecurities.com:8443/apim",
        "https://xn--bcher-kva.kotaksecurities.com/apim",  # an IDN in its IDNA form
        "http://127.0.0.1:9/apim",
        "http://[::1]:9/apim",
        "https://localhost/apim",
    ):
        assert host_allowed(url, cfg), url
    for url in (
        "https://bücher.kotaksecurities.com/apim",  # non-ASCII: give the xn-- form
        "https://a%2e.kotaksecurities.com/apim",
        "https://a .kotaksecurities.com/apim",
        "https://a\t.kotaksecurities.com/apim",
        "https://a..kotaksecurities.com/apim",
        "https://a.kotaksecurities.com:0/apim",
        "https://a.kotaksecurities.com:99999/apim",
        "https://[::1%25eth0]/apim",
        " https://a.kotaksecurities.com/apim",
    ):
        assert not host_allowed(url, cfg), url


# --- the property ------------------------------------------------------------------------------

DOMAINS = (KS,)


def connect_hosts(url: str) -> set[str] | None:
    """Where requests would connect for ``url`` (None: it would not send at all)."""
    try:
        raw = parse_url(url).host
        prepared = requests.Request("GET", url).prepare().url or ""
        hosts = {urlparse(prepared).hostname, parse_url(prepared).host, raw}
    except Exception:
        return None
    return {h.strip("[]").lower() if h else "" for h in hosts}


def allowed_target(host: str, scheme: str, allow_loopback: bool) -> bool:
    """The allow-list's meaning, stated on the host the connection goes to."""
    name = host.removesuffix(".")
    if name in LOOPBACK_HOSTS or name == "::1":
        return allow_loopback and scheme in ("http", "https")
    if scheme != "https":
        return False
    try:
        ipaddress.ip_address(name)
        return name in DOMAINS
    except ValueError:
        return any(name == d or name.endswith("." + d) for d in DOMAINS)


PIECES = st.sampled_from(
    [
        "evil.com", KS, "tradeapi." + KS, "KOTAKSECURITIES.COM", "127.0.0.1", "localhost",
        "[::1]", "[::ffff:127.0.0.1]", "2130706433", "0x7f.1", "127.1", "0177.0.0.1",
        "xn--bcher-kva", "b\u00fccher", "\uff45vil", "\u3002", ".", "..", "\\", "@", ":", "%2e",
        "%", " ", "\t", "\n", "\r", "\x00", "\x7f", "#", "?", "/", "-", "_", "u:pw@", ":443",
        ":8080", ":0", ":99999", "[", "]",
    ]
)  # fmt: skip
HOSTS = st.one_of(
    st.lists(PIECES, min_size=1, max_size=6).map("".join),
    st.text(
        alphabet=st.sampled_from("abkz019.-_:@\\%[]# \t/?\uff45\u3002\u00fc"),
        min_size=1,
        max_size=24,
    ),
)


@given(
    scheme=st.sampled_from(["https", "http", "HTTPS", "Http", "ftp"]),
    host=HOSTS,
    tail=st.sampled_from(["/apim", "", "/apim/session/1.0/session/init", "?q=1", "#f"]),
    loopback=st.booleans(),
)
@example(scheme="https", host="evil.com\\." + KS, tail="/apim", loopback=True)
@example(scheme="https", host="evil.com\\@tradeapi." + KS, tail="/apim", loopback=True)
@example(scheme="https", host="127.0.0.1:9\\@tradeapi." + KS, tail="/apim", loopback=False)
@example(scheme="https", host="localhost\\." + KS, tail="/apim", loopback=False)
def test_the_check_approves_only_hosts_the_connection_would_be_allowed_to_reach(
    scheme: str, host: str, tail: str, loopback: bool
) -> None:
    url = f"{scheme}://{host}{tail}"
    config = WireConfig(allowed_domains=DOMAINS, allow_loopback=loopback)
    if not host_allowed(url, config):
        return
    targets = connect_hosts(url)
    assert targets is not None, url  # approved URLs are sendable
    assert all(allowed_target(t, scheme.lower(), loopback) for t in targets), (url, targets)
