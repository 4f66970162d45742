"""Issue 17 section 1: errors say what happened, where, and what to do.

API errors name the call (method and path) and the server's own explanation; connection
errors name host:port and the cause (refused, DNS, TLS, timeout), tried over real loopback;
a bad configured host is a settings error; an unusable lock file fails at once; hints speak
the user's language. CLI parts run the real ``session-fsm``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from session_fsm import (
    ConfigurationError,
    FileStore,
    KSSession,
    LoginRejected,
    NetworkError,
    RequestTimeout,
    StoreError,
    UnsafeRedirect,
    WireConfig,
)
from session_fsm.errors import APIError, Call, error_for
from session_fsm.sandbox import Sandbox
from session_fsm.wire import NO_RETRY, Wire
from tests.conftest import make_credentials

Factory = Callable[..., KSSession]
SCRIPT = Path(sys.executable).with_name("session-fsm")
OLD_BOILERPLATE = "fix the named setting and try again"


# --- API errors: the call in the API's words, and the server's own explanation -------------


def test_a_trading_404_names_method_path_and_the_servers_words(new_session: Factory) -> None:
    s = new_session()
    s.connect()
    with pytest.raises(APIError) as info:
        s.get("/reports/1.0/no-such-report?x=1")
    text = str(info.value)
    assert text.startswith("GET /reports/1.0/no-such-report -> HTTP 404: "), text
    assert "No API resource matches" in text
    assert "fault 0" not in text and info.value.fault_code is None  # 0 is no fault code
    assert "trading failed" not in text and "UnexpectedStatus" not in text
    assert "x=1" not in text  # never the query string
    assert info.value.where == "GET /reports/1.0/no-such-report"


def test_a_wrong_password_says_login_rejected_with_fault_and_reason(new_session: Factory) -> None:
    s = new_session(make_credentials(password="not-the-password"))
    with pytest.raises(LoginRejected) as info:
        s.connect()
    err = info.value
    text = str(err)
    assert err.fault_code is not None
    assert text.startswith(
        f"login rejected: POST /session/1.0/session/login/userid -> HTTP 401, fault "
        f"{err.fault_code}: "
    ), text
    assert "Invalid userid or password" in text  # the sandbox's own words
    assert "login_with_user_id failed" not in text
    assert "provider" not in err.hint and "password=" in err.hint  # the user's words
    assert "not-the-password" not in f"{err} {err!r}"


def test_the_servers_text_is_made_safe_to_show() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vLXVzZXIiLCJleHAiOjE4MDB9.c2lnbmF0dXJl"
    hostile = f"bad \x1b[2J\x00\u202eorder\r\nrejected for session {token} " + "z" * 5000
    err = error_for(
        Call.TRADING, 400, 1007, hostile, where="POST /Orders/2.0/quick/order/rmk/place",
        fault_message="Bad\x07 request",
    )  # fmt: skip
    text = str(err)
    assert token not in text and "eyJhbGci" not in text
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 or ch == "\u202e" for ch in text)
    assert len(err.explanation) <= 200
    assert "Bad request (bad order rejected for session" in text, text
    assert token not in repr(err) and token not in err.description
    from session_fsm.explain import safe_text

    assert safe_text("use tradeapi.kotaksecurities.com") == "use tradeapi.kotaksecurities.com"


def test_a_fault_with_no_code_says_no_fault() -> None:
    err = error_for(Call.INIT, 503, None, "", where="")
    assert "fault" not in str(err) and "HTTP 503" in str(err)
    assert str(err).startswith("session init failed")


# --- connection errors: host:port and the cause, over real loopback ------------------------


def _wire(**over: Any) -> Wire:
    return Wire(WireConfig(retry=NO_RETRY, **over))


def _closed_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


def test_a_closed_port_is_connection_refused_naming_host_and_port() -> None:
    port = _closed_port()
    with pytest.raises(NetworkError) as info:
        _wire().send("GET", f"http://127.0.0.1:{port}/apim/reports/1.0/orders")
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "connection refused" in text, text
    assert text.startswith("GET /apim/reports/1.0/orders: ")
    assert "check the network" not in text and "ConnectionError" not in text


def test_an_unresolvable_name_is_a_dns_failure() -> None:
    with pytest.raises(NetworkError) as info:
        _wire(allowed_domains=("invalid",)).send("GET", "https://nonexistent.invalid/apim/x")
    text = str(info.value)
    assert "nonexistent.invalid:443" in text and "DNS lookup failed" in text, text
    assert "host name" in info.value.hint


def test_https_spoken_to_an_http_server_is_a_tls_failure(sb: Sandbox) -> None:
    url = sb.url.replace("http://", "https://") + "/reports/1.0/orders"
    port = url.split(":")[2].split("/")[0]
    with pytest.raises(NetworkError) as info:
        _wire().send("GET", url)
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "TLS handshake failed" in text, text
    assert "https" in info.value.hint


@pytest.fixture
def silent() -> Iterator[int]:
    """A port whose connections are accepted (by the kernel) and never answered."""
    server = socket.create_server(("127.0.0.1", 0), backlog=8)
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


def test_a_silent_server_is_a_read_timeout_naming_the_wait(silent: int) -> None:
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        _wire(timeout=(2.0, 0.3)).send("GET", f"http://127.0.0.1:{silent}/apim/x")
    assert time.monotonic() - started < 5
    text = str(info.value)
    assert f"127.0.0.1:{silent}" in text and "no answer within 0.3s" in text, text
    assert "timeout=" in info.value.hint


def test_a_full_accept_queue_is_a_connect_timeout() -> None:
    # Linux drops SYNs to a listener whose accept queue is full: the connect itself hangs.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)  # the fillers' handshakes complete (or queue) before ours
    try:
        with pytest.raises(RequestTimeout) as info:
            _wire(timeout=(0.3, 2.0)).send("GET", f"http://127.0.0.1:{port}/apim/x")
    finally:
        for sock in (*fillers, server):
            sock.close()
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "connecting timed out after 0.3s" in text, text
    assert "firewall" in info.value.hint


def test_connection_messages_never_show_user_info() -> None:
    from session_fsm.explain import endpoint

    assert endpoint("https://u:pw-S3cret@h.example.com/apim") == "h.example.com:443"
    assert endpoint("http://[::1]:8080/x") == "[::1]:8080"


# --- a bad configured host is a settings error ---------------------------------------------


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("tradeapi.kotaksecurities.com/apim", "is not a URL"),
        ("ftp://tradeapi.kotaksecurities.com/apim", "scheme other than https"),
        ("http://tradeapi.kotaksecurities.com/apim", "is http"),
        ("https://api.example.com/apim", "not on the allow-list (allowed_domains: "),
        ("https://tradeapi.kotaksecurities.com", "/apim"),
        ("https://tradeapi.kotaksecurities.com/", "/apim"),
    ],
)
def test_a_bad_configured_host_is_a_settings_error_saying_what_is_wrong(
    host: str, says: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        KSSession(make_credentials(), host=host)
    text = str(info.value)
    assert says in text, text
    assert not isinstance(info.value, UnsafeRedirect)
    assert "redirect" not in text and "allowed_hosts" not in text


def test_an_allowed_domain_makes_the_host_acceptable() -> None:
    s = KSSession(make_credentials(), host="https://api.example.com/apim/",
                  allowed_domains=("example.com",))  # fmt: skip
    assert s.origin == "https://api.example.com/apim"
    s.close()


# --- a lock file that cannot be created fails at once ---------------------------------------


def test_an_uncreatable_lock_file_fails_at_once_naming_path_and_os_error(sb: Sandbox) -> None:
    store = FileStore("/proc/session_fsm_tokens.json")  # /proc takes no new files
    s = KSSession(make_credentials(), host=sb.url, store=store, relogin_timeout=5.0)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        s.connect()
    elapsed = time.monotonic() - started
    s.close()
    text = str(info.value)
    assert elapsed < 2.0, f"waited {elapsed:.1f}s for a lock that can never be taken"
    assert "/proc/session_fsm_tokens.json" in text and "No such file or directory" in text
    assert "another process" not in text


def test_a_store_under_a_regular_file_names_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = FileStore(blocker / "tokens.json")
    with pytest.raises(StoreError) as info, store.lock("k", 5.0):
        pass
    assert str(blocker) in str(info.value) and "not a folder" in str(info.value)


# --- hints speak the user's language --------------------------------------------------------


def test_settings_errors_carry_no_boilerplate() -> None:
    with pytest.raises(ConfigurationError) as info:
        KSSession(make_credentials(), host="https://tradeapi.kotaksecurities.com/apim",
                  relogin_timeout=-1)  # fmt: skip
    assert OLD_BOILERPLATE not in str(info.value)
    assert str(ConfigurationError("bad thing")) == "bad thing"
    root = Path(__file__).resolve().parents[1] / "session_fsm"
    for path in root.rglob("*.py"):
        assert OLD_BOILERPLATE not in path.read_text(encoding="utf-8"), path


def test_a_provider_that_gives_nothing_names_the_credential() -> None:
    from session_fsm.credentials import produce

    class Vault:  # a user's own SecretProvider that comes back empty
        repeatable = True

        def available(self) -> bool:
            return True

        def get(self) -> Any:
            return None

    with pytest.raises(ConfigurationError) as info:
        produce(Vault(), "password")
    assert "Credentials(password=...)" in str(info.value)
    assert "provider" not in str(info.value)


# --- the CLI: settings errors exit 2, the allow-list can be set, causes are shown -----------


def cli(*args: str, env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
    return subprocess.run(
        [str(SCRIPT), *args], env={**base, "HOME": str(home), **env}, capture_output=True,
        text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def account_env(host: str) -> dict[str, str]:
    return {
        "KS_HOST": host, "KS_USERID": "demo-user", "KS_CONSUMER_KEY": "demo-consumer-key",
        "KS_ACCESS_TOKEN": "demo-access-token", "KS_PASSWORD": "pw-Err-5Tq-SECRET",
        "KS_ACCESS_CODE": "1234",
    }  # fmt: skip


def test_cli_a_host_off_the_allow_list_exits_2_and_names_the_option(tmp_path: Path) -> None:
    env = account_env("https://api.example.com/apim")
    for command in ("status", "logout", "login"):
        r = cli(command, env=env, home=tmp_path)
        assert r.returncode == 2, (command, r.stderr)
        assert "allow-list" in r.stderr and "--allowed-domain" in r.stderr
        assert "redirect" not in r.stderr and "Traceback" not in r.stderr


def test_cli_the_allow_list_can_be_set(tmp_path: Path) -> None:
    env = account_env("https://api.example.com/apim")
    flag = cli("status", "--allowed-domain", "example.org", "--allowed-domain", "example.com",
               env=env, home=tmp_path)  # fmt: skip
    assert flag.returncode == 1 and "no stored session" in flag.stdout, flag.stderr
    by_env = cli("logout", env={**env, "KS_ALLOWED_DOMAINS": "example.org, example.com"},
                 home=tmp_path)  # fmt: skip
    assert by_env.returncode == 0 and "nothing to log out" in by_env.stdout, by_env.stderr


def test_cli_connection_failures_name_host_port_and_cause(tmp_path: Path) -> None:
    port = _closed_port()
    refused = cli("login", env=account_env(f"http://127.0.0.1:{port}/apim"), home=tmp_path)
    assert refused.returncode == 1
    assert f"127.0.0.1:{port}" in refused.stderr and "connection refused" in refused.stderr
    assert "check the network" not in refused.stderr
    dns = cli("login", "--allowed-domain", "invalid",
              env=account_env("https://nonexistent.invalid/apim"), home=tmp_path)  # fmt: skip
    assert dns.returncode == 1 and "nonexistent.invalid:443" in dns.stderr
    assert "DNS lookup failed" in dns.stderr
    for run in (refused, dns):
        assert "pw-Err-5Tq-SECRET" not in run.stdout + run.stderr
        assert len(run.stderr.splitlines()) == 1


def test_cli_hints_name_the_settings_the_cli_reads(sb: Sandbox, tmp_path: Path) -> None:
    wrong = cli("login", env=account_env(sb.url), home=tmp_path)  # not the demo password
    assert wrong.returncode == 1 and "login rejected: POST /session/1.0/session/login/userid" \
        in wrong.stderr, wrong.stderr  # fmt: skip
    assert "KS_PASSWORD" in wrong.stderr and "KS_ACCESS_CODE" in wrong.stderr
    assert "Credentials(" not in wrong.stderr and "provider" not in wrong.stderr
    bad = cli("status", env=account_env("https://api.example.com/apim"), home=tmp_path)
    assert "KS_ALLOWED_DOMAINS" in bad.stderr and "--allowed-domain" in bad.stderr
