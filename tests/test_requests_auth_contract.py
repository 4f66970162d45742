"""``requests.get(url, auth=session.auth)`` keeps requests' auth contract (issue 15): answers
are returned, never raised, even when no usable session can be had before sending; the
session records what happened; ``session.request()`` still raises its typed errors."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from session_fsm import InvalidTransition, KSSession, ServiceUnavailable, State, contract
from session_fsm.sandbox import Sandbox
from tests.conftest import Clock, LogCapture

ORDERS = contract.ORDERS_REPORT[1]
LOGIN = contract.LOGIN_USERID[1]


def _past_the_hard_deadline(new_session: Any, sb: Sandbox, clock: Clock) -> KSSession:
    s: KSSession = new_session(max_session_age=3600.0, soft_window=60.0)
    s.connect()
    clock.advance(3600 + 1)
    sb.control.fault(LOGIN, status=500, count=100)
    return s


def test_a_session_that_cannot_be_renewed_before_sending_gives_the_servers_401(
    new_session: Any, sb: Sandbox, clock: Clock, logs: LogCapture
) -> None:
    s = _past_the_hard_deadline(new_session, sb, clock)
    token = s.snapshot().session_token
    assert token is not None
    logins = sb.control.stats()["calls"].get(f"POST {LOGIN}", 0)
    r = requests.get(s.snapshot().host + ORDERS + "?q=1", auth=s.auth, timeout=5)
    assert r.status_code == 401  # the server's answer to the request without session headers
    sent = r.request.headers
    assert contract.H_SESSION_TOKEN not in sent and contract.H_AUTHORIZATION not in sent
    # one renewal was tried (the response hook did not try another on the 401), and recorded
    calls = sb.control.stats()["calls"].get(f"POST {LOGIN}", 0)
    assert 1 <= calls - logins <= 3  # the login and its retries on 500
    assert s.state is not State.AUTHENTICATED
    assert any(rec.error == "ServiceUnavailable" for rec in s.history[-3:])
    event = [e for e in logs.events() if e["event"] == "request_not_renewed"]
    assert event and event[-1]["error"] == "ServiceUnavailable"
    assert event[-1]["method"] == "GET" and event[-1]["path"].endswith(ORDERS)
    for secret in (token.reveal(), "demo-password", "demo-access-token"):
        assert secret not in logs.text()


def test_session_request_still_raises_its_typed_error(
    new_session: Any, sb: Sandbox, clock: Clock
) -> None:
    s = _past_the_hard_deadline(new_session, sb, clock)
    with pytest.raises(ServiceUnavailable):
        s.get(ORDERS)


def test_the_auth_renews_once_the_login_works_again(
    new_session: Any, sb: Sandbox, clock: Clock
) -> None:
    s = _past_the_hard_deadline(new_session, sb, clock)
    url = s.snapshot().host + ORDERS
    assert requests.get(url, auth=s.auth, timeout=5).status_code == 401
    sb.control.reset()
    r = requests.get(url, auth=s.auth, timeout=5)
    assert r.status_code == 200 and s.state is State.AUTHENTICATED


def test_before_connect_and_after_logout_the_auth_still_says_call_connect(
    new_session: Any, sb: Sandbox
) -> None:
    """A session never connected (or logged out) is the program's mistake, not an answer of
    the server: the auth raises InvalidTransition, as before, and sends nothing."""
    s: KSSession = new_session()
    with pytest.raises(InvalidTransition):
        requests.get(sb.url + ORDERS, auth=s.auth, timeout=5)
    s.connect()
    s.logout()
    with pytest.raises(InvalidTransition):
        requests.get(sb.url + ORDERS, auth=s.auth, timeout=5)
