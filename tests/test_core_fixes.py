"""Issue 15's defects, each pinned through the public API against real loopback servers.

1. Bearer (900901) refresh is single flight per Bearer generation and never crashes.
2. A proactive (soft) refresh is its own edge, Authenticated -> Authenticated: the session never
   pretends to have expired, and a failed refresh is a failed attempt of that edge.
3. A request takes one snapshot: host and tokens.
4. ``session.auth`` keeps requests' auth contract (its hook returns, never raises); errors of
   ``session.request`` carry the response.
6. Transport options that conflict with a given ``wire=`` are refused.
Plus: a trading 403 "Invalid session, please re-login to continue" is an expired session.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from session_fsm import (
    ConfigurationError,
    GatewayAuthError,
    InvalidTransition,
    KSError,
    KSSession,
    LoginRejected,
    NotReplayable,
    ServiceUnavailable,
    SessionExpired,
    State,
    Wire,
    WireConfig,
    contract,
    table,
)
from session_fsm.diagrams import group_id, mermaid
from session_fsm.sandbox import Sandbox, SandboxConfig
from session_fsm.sandbox.app import make_app
from tests.conftest import FAST_RETRY, Clock, make_credentials

Factory = Callable[..., KSSession]
ORDERS = contract.ORDERS_REPORT[1]
ORDER = contract.ORDER_NORMAL[1]
LOGIN = contract.LOGIN_USERID[1]
TWO_FA = contract.TWO_FA_ACCESSCODE[1]
A = State.AUTHENTICATED


def stats(sb: Sandbox) -> dict[str, int]:
    s = sb.control.stats()
    return {"logins": s["logins"], "sessions": s["sessions"], **s["calls"]}


def trail(s: KSSession) -> list[tuple[str, str, str, str]]:
    return [(r.trigger, r.src.value, r.dst.value, r.outcome) for r in s.history]


class Provider:
    """An access_token_provider that counts how often it is asked."""

    def __init__(self, token: str = "demo-access-token") -> None:
        self.token = token
        self.asked = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.asked += 1
        return self.token


def in_threads(n: int, work: Callable[[], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run ``work`` in ``n`` threads released together; (results, errors of any kind)."""
    go = threading.Barrier(n)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        go.wait()
        try:
            results.append(work())
        except BaseException as exc:  # an AssertionError too: the defect under test
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results, errors


# --- 1. Bearer refresh: single flight, no crash ------------------------------------------------


def test_a_900901_storm_asks_the_provider_once(new_session: Factory, sb: Sandbox) -> None:
    provider = Provider()
    s = new_session(make_credentials(access_token_provider=provider), timeout=(5.0, 10.0))
    s.connect()
    # All 16 requests reach the sandbox (and take a fault each) before the first answer (2 s).
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN, count=16, delay=2.0)
    results, errors = in_threads(16, lambda: s.get(ORDERS).status_code)
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors[:3]]
    assert results == [200] * 16
    assert provider.asked == 1  # one rejected Bearer generation: one provider call
    assert s.state is A and stats(sb)["logins"] == 1
    # A later rejection is of the next Bearer generation: the provider is asked once more.
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN, count=16, delay=2.0)
    results, errors = in_threads(16, lambda: s.get(ORDERS).status_code)
    assert not errors and results == [200] * 16 and provider.asked == 2


def test_a_900901_after_a_failed_soft_refresh_is_refreshed_and_replayed(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    provider = Provider()
    s = new_session(
        make_credentials(access_token_provider=provider), max_session_age=1000, soft_window=100
    )
    s.connect()
    clock.advance(950)
    sb.control.fault(LOGIN, status=503, count=1 + FAST_RETRY.total)
    assert s.get(ORDERS).status_code == 200  # the soft refresh failed; the old token served
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    r = s.get(ORDERS)  # used to raise a bare AssertionError
    assert r.status_code == 200 and [h.status_code for h in r.history] == [401]
    assert provider.asked == 1 and s.generation == 1 and s.state is A


# --- 2. the soft refresh is an edge of its own ---------------------------------------------


def test_refresh_is_an_authenticated_self_edge_drawn_in_the_diagram() -> None:
    e = table.edge(A, "refresh")
    assert e is not None and e.dest is A and e.internal
    assert e.guards == ("has_password", "has_access_code")
    # A dashed (internal) arrow into Authenticated from the note "from Authenticated" (the table
    # drawing draws every edge off the happy path from a note), labelled with trigger and guards.
    text = mermaid()
    note = group_id((A,), A)
    assert f'    {note}["from Authenticated"]' in text.splitlines()
    loops = [
        line
        for line in text.splitlines()
        if line.strip().startswith(f"{note} -.->") and line.rstrip().endswith("AUTHENTICATED")
    ]
    assert any("refresh" in line and "has_access_code" in line for line in loops), loops


def aged(new_session: Factory, clock: Clock, at: float, **opts: Any) -> KSSession:
    s = new_session(max_session_age=1000, soft_window=100, **opts)
    s.connect()
    clock.advance(at)
    return s


def refreshing(s: KSSession, sb: Sandbox) -> threading.Thread:
    """Start a request that takes the refresh edge, its 2FA held 1 s by the sandbox; return
    once that 2FA reached the sandbox (the refresh is under way, the lock held)."""
    sb.control.fault(TWO_FA, delay=1.0)

    def request() -> None:
        with contextlib.suppress(KSError):  # (its GET may meet a logout made meanwhile)
            s.get(ORDERS)

    t = threading.Thread(target=request)
    t.start()
    for _ in range(500):
        if stats(sb).get(f"POST {TWO_FA}", 0) == 2:
            break
        threading.Event().wait(0.01)
    return t


def test_a_soft_refresh_never_leaves_authenticated(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = aged(new_session, clock, 950)
    seen: list[State] = []
    s.on_transition(lambda _s, _r: seen.append(_s.state))
    assert s.get(ORDERS).status_code == 200
    assert trail(s)[-1] == ("refresh", "Authenticated", "Authenticated", "ok")
    assert s.history[-1].reason == "soft_deadline" and s.history[-1].generation == 2
    assert "session_expired" not in [r.trigger for r in s.history]
    assert seen == [A] and s.generation == 2 and stats(sb)["logins"] == 2


def test_the_old_token_serves_while_the_refresh_is_under_way(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = aged(new_session, clock, 950, timeout=(5.0, 5.0))
    t = refreshing(s, sb)
    r = s.get(ORDERS)  # another thread, meanwhile: no wait, the old token, still Authenticated
    during = (r.status_code, s.state, s.generation, t.is_alive())
    t.join(10)
    assert during == (200, A, 1, True)
    assert s.generation == 2 and s.state is A


def test_a_failed_soft_refresh_is_a_failed_refresh_not_an_expiry(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = aged(new_session, clock, 950)
    sb.control.fault(LOGIN, status=503, count=1 + FAST_RETRY.total)
    assert s.get(ORDERS).status_code == 200
    assert s.state is A and s.snapshot().session_token is not None and s.generation == 1
    last = s.history[-1]
    assert (last.trigger, last.src, last.dst, last.outcome) == ("refresh", A, A, "failed")
    assert last.error == "ServiceUnavailable" and last.reason == "soft_deadline"
    assert "session_expired" not in [r.trigger for r in s.history]
    clock.advance(13)  # tried again after a quarter of the 50 s left
    assert s.get(ORDERS).status_code == 200
    assert trail(s)[-1] == ("refresh", "Authenticated", "Authenticated", "ok")
    assert s.generation == 2 and stats(sb)["logins"] == 2


def test_an_expiry_during_a_refresh_waits_for_it_instead_of_logging_in_again(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = aged(new_session, clock, 950, timeout=(5.0, 5.0))
    t = refreshing(s, sb)
    sb.control.expire()  # the server ends the old session while the refresh is under way
    r = s.get(ORDERS)  # 401 with the old token: waits for the refresh, replays on its session
    t.join(10)
    assert r.status_code == 200 and [h.status_code for h in r.history] == [401]
    assert s.generation == 2 and stats(sb)["logins"] == 2  # no second login for the expiry
    assert "session_expired" not in [rec.trigger for rec in s.history]


def test_a_logout_during_a_refresh_is_not_undone(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = aged(new_session, clock, 950, timeout=(5.0, 5.0))
    t = refreshing(s, sb)
    s.logout()  # waits for the refresh, then ends the new session
    t.join(10)
    assert s.state is State.LOGGED_OUT and sb.control.stats()["logouts"] == 1
    assert [r.trigger for r in s.history][-2:] == ["refresh", "logout"]
    with pytest.raises(InvalidTransition):
        s.get(ORDERS)
    assert stats(sb)["logins"] == 2


# --- 3. one snapshot per request -----------------------------------------------------------


class SteppingClock(Clock):
    """Reads ``before`` once when armed, then ``after``: a deadline passing mid-request."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[float] = []

    def __call__(self) -> float:
        if self.queue:
            self.now = self.queue.pop(0)
        return self.now


def test_a_request_reads_the_session_once(new_session: Factory, sb: Sandbox) -> None:
    clock = SteppingClock()
    s = new_session(clock=clock, max_session_age=1000, soft_window=0)
    s.connect()
    t0 = clock.now
    clock.queue = [t0 + 999, t0 + 1001]  # the hard deadline passes after the first read
    assert s.get(ORDERS).status_code == 200
    # The request went out with the snapshot it took (generation 1), not a second one.
    assert s.generation == 1 and stats(sb)["logins"] == 1
    assert s.get(ORDERS).status_code == 200 and s.generation == 2  # the next one renews


# --- 4. requests' auth contract and .response --------------------------------------------


def test_plain_requests_get_the_401_back_when_the_bearer_is_rejected(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    r = requests.get(sb.url + ORDERS, auth=s.auth, timeout=5)
    assert r.status_code == 401 and r.json()["fault"]["code"] == contract.FAULT_GATEWAY_TOKEN
    assert s.state is State.UNINITIALISED and s.history[-1].trigger == "gateway_rejected"


def test_plain_requests_get_the_401_back_when_the_relogin_fails(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    sb.control.expire()
    sb.control.fault(LOGIN, status=401, code=0)  # the re-login's password is refused
    r = requests.get(sb.url + ORDERS, auth=s.auth, timeout=5)
    assert r.status_code == 401 and not r.history
    assert (s.history[-1].trigger, s.history[-1].error) == ("login", "LoginRejected")


def test_plain_requests_get_the_replay_even_when_it_fails(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_SESSION_EXPIRED, count=2)
    r = requests.get(sb.url + ORDERS, auth=s.auth, timeout=5)
    assert r.status_code == 401 and [h.status_code for h in r.history] == [401]
    assert stats(sb)["logins"] == 2


def test_errors_raised_by_the_hook_carry_the_response(new_session: Factory, sb: Sandbox) -> None:
    s = new_session(cooldown=0)
    s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    with pytest.raises(GatewayAuthError) as gw:
        s.get(ORDERS)
    assert gw.value.response is not None and gw.value.response.status_code == 401
    s.connect()
    sb.control.expire()
    sb.control.fault(LOGIN, status=401, code=0)
    with pytest.raises(LoginRejected) as lr:
        s.get(ORDERS)
    assert lr.value.response is not None and lr.value.response.status_code == 401
    s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_SESSION_EXPIRED, count=2)
    with pytest.raises(SessionExpired) as se:
        s.get(ORDERS)
    assert se.value.response is not None and len(se.value.response.history) == 1
    sb.control.expire()

    def stream() -> Iterator[bytes]:
        yield b"{}"

    with pytest.raises(NotReplayable) as nr:
        s.post(ORDER, data=stream(), headers={"Content-Type": "application/json"})
    assert nr.value.response is not None and nr.value.response.status_code == 401


# --- 6. options that a given wire would drop ---------------------------------------------


def test_options_conflicting_with_a_given_wire_are_refused(sb: Sandbox) -> None:
    with pytest.raises(ConfigurationError) as info:
        KSSession(make_credentials(), host=sb.url, wire=Wire(), timeout=(9, 99),
                  allowed_domains=("example.com",), verify=False)  # fmt: skip
    text = str(info.value)
    assert "timeout" in text and "allowed_domains" in text and "verify" in text
    assert "99" not in text and "example.com" not in text  # names, never values
    wire = Wire(WireConfig(timeout=(9, 99)))
    s = KSSession(make_credentials(), host=sb.url, wire=wire, timeout=(9, 99), cooldown=0)
    assert s.wire is wire  # the same value is no conflict; session options are not wire's


# --- a trading 403 "Invalid session" is an expired session ---------------------------------


@pytest.fixture
def invalid_session_server() -> Iterator[tuple[str, Any, list[int]]]:
    """The sandbox app behind a loopback server that, when armed, ends the user's session
    and answers the next trading GET 403 "Invalid session, please re-login to continue"."""
    app = make_app(SandboxConfig())
    armed = [0]

    def wsgi(environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        if armed[0] and request.path.endswith(ORDERS):
            armed[0] -= 1
            app.state.expire_sessions(None)
            body = {"fault": {"code": 403, "message": "Invalid session, please re-login to "
                              "continue", "description": "Invalid session"}}  # fmt: skip
            return Response(json.dumps(body), 403, content_type="application/json")(
                environ, start_response
            )
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/apim", app, armed
    finally:
        server.shutdown()
        t.join(5)


def test_a_403_invalid_session_relogs_in_and_replays(
    invalid_session_server: tuple[str, Any, list[int]],
) -> None:
    url, app, armed = invalid_session_server
    s = KSSession(make_credentials(), host=url, retry=FAST_RETRY, timeout=(5.0, 5.0))
    try:
        s.connect()
        armed[0] = 1
        r = s.get(ORDERS)
        assert r.status_code == 200 and [h.status_code for h in r.history] == [403]
        assert s.generation == 2 and app.state.stats()["logins"] == 2
        assert "session_expired" in [rec.trigger for rec in s.history]
        armed[0] = 2  # the replay meets it too: the typed error, with the response
        with pytest.raises(SessionExpired) as info:
            s.get(ORDERS)
        assert info.value.status == 403 and info.value.response.status_code == 403
    finally:
        s.close()


def test_a_403_without_the_invalid_session_text_is_not_an_expiry() -> None:
    from session_fsm.errors import Call, UnexpectedStatus, error_for

    assert isinstance(error_for(Call.TRADING, 403, None, "Forbidden"), UnexpectedStatus)
    assert isinstance(
        error_for(Call.TRADING, 403, None, message="Invalid session, please re-login to continue"),
        SessionExpired,
    )
    assert isinstance(error_for(Call.LOGIN, 403, None, "Invalid session"), UnexpectedStatus)


def test_service_unavailable_still_has_its_response(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    s.connect()
    sb.control.fault(ORDER, status=503)
    with pytest.raises(ServiceUnavailable) as info:
        s.post(ORDER, json={})
    assert info.value.response.status_code == 503
