"""Each edge's wire call (session_fsm.core.edges) against the sandbox: what it leaves behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from session_fsm import KSSession, MemoryStore, State, contract
from session_fsm.core.edges import redirect_url as _redirect_url
from session_fsm.sandbox import Sandbox, SandboxConfig, run_sandbox
from tests.conftest import Clock, LogCapture, make_credentials

Factory = Callable[..., KSSession]
ORDERS = contract.ORDERS_REPORT[1]


def test_gateway_token_refresh_is_logged_per_session(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    s = new_session(
        make_credentials(
            access_token="old-token", access_token_provider=lambda: "demo-access-token"
        )
    )
    s.connect()  # init meets 900901 with the old token, refreshes from the provider
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    assert s.get(ORDERS).status_code == 200  # a trading call's 900901: refreshed again
    refreshed = [e for e in logs.events() if e["event"] == "gateway_token_refreshed"]
    assert [(e["level"], e["session_id"]) for e in refreshed] == [("info", s.session_id)] * 2


def test_logout_after_a_peer_logged_the_shared_session_out(
    new_session: Factory, sb: Sandbox
) -> None:
    store = MemoryStore()
    first = new_session(store=store)
    first.connect()
    second = new_session(store=store)
    assert second.resume()  # both hold the same session; the store holds its record
    first.logout()  # logs it out on the server and removes the record
    assert store.load(second.store_key()) is None
    second.logout()  # the server says it is gone, the store is empty: that is success
    assert second.state is State.LOGGED_OUT and second.history[-1].outcome == "ok"


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("ctradeapi.kotaksecurities.com", 443, "https://ctradeapi.kotaksecurities.com/apim"),
        ("ctradeapi.kotaksecurities.com", None, "https://ctradeapi.kotaksecurities.com/apim"),
        ("ctradeapi.kotaksecurities.com", 8443, "https://ctradeapi.kotaksecurities.com:8443/apim"),
    ],
)
def test_redirect_host_to_base_url(host: str, port: int | None, url: str) -> None:
    # The broker may answer a bare host name (the sandbox always answers a full URL): https,
    # the port only when it is not 443, and the API's base path.
    assert _redirect_url(host, port) == url


def test_a_file_store_hands_the_session_to_the_next_process(
    new_session: Factory, sb: Sandbox, tmp_path: Path
) -> None:
    store = f"file:{tmp_path / 'sessions.json'}"
    first = new_session(store=store)
    first.connect()
    second = new_session(store=store)  # another process, reading the same file
    assert second.resume() and second.snapshot() == first.snapshot()
    assert sb.control.stats()["logins"] == 1


def test_the_store_keeps_one_session_per_host_and_user(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    store = MemoryStore()
    new_session(store=store).connect()
    elsewhere = KSSession(
        make_credentials(), host=sb.url.replace("127.0.0.1", "localhost"), store=store, clock=clock
    )
    someone_else = new_session(make_credentials(userid="someone-else"), store=store)
    assert not elsewhere.resume() and not someone_else.resume()
    assert new_session(store=store).resume()
    elsewhere.close()


def test_a_bare_redirect_host_keeps_its_port(clock: Clock) -> None:
    with run_sandbox(SandboxConfig(redirect_host="localhost")) as sb:
        s = KSSession(make_credentials(), host=sb.url, clock=clock)
        s.init()  # the sandbox answers host "localhost", port 80; nothing is sent there here
        assert s.snapshot().host == "https://localhost:80/apim"
        s.close()
