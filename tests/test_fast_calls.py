"""Issue 15 (performance): the four session calls go straight into the Wire's guarded pool.

``connect()`` against ``requests`` with the environment read once was 1.44x in client CPU time,
most of it requests' per-call machinery on the three session calls. They now take the fast path
(:mod:`session_fsm.fast_calls`) unless something unusual needs ``Wire.send``; these tests check
that they do, and that what the server receives and what the session makes of the answers is
what ``Wire.send`` gave (the rest of the suite, the fault matrix and the deadline, retry, host
check and secret tests, runs through the fast path too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from session_fsm import KSError, KSSession, MalformedAnswer, Wire, WireConfig, contract
from session_fsm.core.calls import SessionCall
from session_fsm.errors import Call
from session_fsm.sandbox import Sandbox
from session_fsm.table import State
from tests.conftest import SLEEPS, make_credentials


@pytest.fixture
def sent_by_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The URLs ``requests.Session.request`` was asked for (it still sends them)."""
    seen: list[str] = []
    original = requests.Session.request

    def spy(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(f"{method} {url}")
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    yield seen


def test_connect_sends_its_three_calls_without_requests_session_machinery(
    sb: Sandbox, new_session: Callable[..., KSSession], sent_by_requests: list[str]
) -> None:
    s = new_session()
    s.connect()
    assert s.state is State.AUTHENTICATED
    assert sent_by_requests == []
    calls = sb.control.stats()["calls"]
    for method, path in (contract.SESSION_INIT, contract.LOGIN_USERID,
                         contract.TWO_FA_ACCESSCODE):  # fmt: skip
        assert calls.get(f"{method} {path}") == 1
    assert s.get(contract.ORDERS_REPORT[1]).status_code == 200  # the token works
    s.logout()  # DELETE with no body (Content-Length: 0, as requests sends it)
    assert s.state is State.LOGGED_OUT and sent_by_requests == []


def test_the_fast_and_the_general_path_read_the_same_answers(sb: Sandbox) -> None:
    class GeneralPath(Wire):
        """A Wire whose own send is overridden: the session calls take Wire.send."""

        def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
            return super().send(method, url, **kwargs)

    creds = make_credentials()
    fast, general = Wire(), GeneralPath()
    who = creds.identity
    for wire in (fast, general):
        a = wire.exchange(SessionCall(Call.INIT, sb.url, who))
        assert a.status == 200 and a.body["Success"]["redirect"] is not None
    one = fast.exchange(SessionCall(Call.INIT, sb.url, who))
    two = general.exchange(SessionCall(Call.INIT, sb.url, who))
    assert (one.call, one.status, one.retry_after, one.body) == (
        two.call, two.status, two.retry_after, two.body,
    )  # fmt: skip
    fast.close()
    general.close()


def test_an_answer_over_the_cap_is_refused_on_the_fast_path(
    sb: Sandbox, sent_by_requests: list[str]
) -> None:
    wire = Wire(WireConfig(max_answer_bytes=64))
    with pytest.raises(MalformedAnswer) as err:
        KSSession(make_credentials(), host=sb.url, wire=wire).connect()
    assert err.value.field == "body" and sent_by_requests == []
    # The connection the refused answer came on is not reused half-read: the next call works.
    wire2 = Wire()
    assert KSSession(make_credentials(), host=sb.url, wire=wire2).connect().state is (
        State.AUTHENTICATED
    )
    wire.close()
    wire2.close()


def test_a_503_on_login_is_retried_on_the_fast_path(
    sb: Sandbox, new_session: Callable[..., KSSession], sent_by_requests: list[str]
) -> None:
    SLEEPS.clear()
    sb.control.fault(contract.LOGIN_USERID[1], status=503, retry_after=1, count=2)
    s = new_session()
    s.connect()
    assert s.state is State.AUTHENTICATED and sent_by_requests == []
    assert sb.control.stats()["calls"][" ".join(contract.LOGIN_USERID)] == 3
    assert SLEEPS == [1.0, 1.0]  # the session adapter's Retry, its Retry-After honoured


def test_a_proxy_in_the_environment_sends_session_calls_through_requests(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch, sent_by_requests: list[str]
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: refused
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    wire = Wire()
    with pytest.raises(KSError):  # the proxy refuses: a NetworkError
        KSSession(make_credentials(), host=sb.url, wire=wire).connect()
    assert sent_by_requests and sent_by_requests[0].startswith("GET " + sb.url + "/session/")
    wire.close()
