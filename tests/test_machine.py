"""The session state machine against the sandbox: lifecycle, internal edges, refusals, failures."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from session_fsm import (
    FromCallable,
    GatewayAuthError,
    GuardFailed,
    InvalidTransition,
    KSError,
    KSSession,
    LoginRejected,
    MemoryStore,
    NetworkError,
    OneShot,
    OneTimeTokenRejected,
    RequestTimeout,
    ServiceUnavailable,
    SessionExpired,
    State,
    WrongDomain,
    contract,
    table,
)
from session_fsm.sandbox import Sandbox
from tests.conftest import Clock, LogCapture, make_credentials

Factory = Callable[..., KSSession]
INIT, LOGIN, TWOFA, LOGOUT = (
    f"{m} {p}"
    for m, p in (
        contract.SESSION_INIT,
        contract.LOGIN_USERID,
        contract.TWO_FA_ACCESSCODE,
        contract.SESSION_LOGOUT,
    )
)


def calls(sb: Sandbox) -> dict[str, int]:
    return dict(sb.control.stats()["calls"])


def drive_to(s: KSSession, state: State) -> None:
    """Reach ``state`` with the table's own shortest path of public triggers."""
    if s.state is state:
        return
    path = table.shortest_path(s.state, [state])
    assert path is not None, f"{state} unreachable"
    for e in path:
        getattr(s, e.trigger)()
    assert s.state is state


def test_full_lifecycle_states_calls_and_events(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    s = new_session()
    expected = [
        ("init", State.INITIALISED, INIT),
        ("login", State.OTT_ISSUED, LOGIN),
        ("authenticate", State.AUTHENTICATED, TWOFA),
        ("logout", State.LOGGED_OUT, LOGOUT),
        ("init", State.INITIALISED, INIT),
    ]
    for trigger, state, call in expected:
        before = calls(sb)
        getattr(s, trigger)()
        assert s.state is state
        after = calls(sb)
        assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {
            call: 1
        }
    events = [e for e in logs.events() if e["event"] == "transition"]
    assert [(e["trigger"], e["src"], e["dst"], e["outcome"]) for e in events] == [
        ("init", "Uninitialised", "Initialised", "ok"),
        ("login", "Initialised", "OTT-issued", "ok"),
        ("authenticate", "OTT-issued", "Authenticated", "ok"),
        ("logout", "Authenticated", "LoggedOut", "ok"),
        ("init", "LoggedOut", "Initialised", "ok"),
    ]
    for e in events:
        assert e["session_id"] == s.session_id and e["userid"] == "demo-user"
        assert isinstance(e["duration_ms"], float) and e["attempt"] == 1
    assert events[2]["guards"] == {"has_ott": True, "ott_fresh": True, "has_access_code": True}
    assert sb.control.stats()["logins"] == 1 and sb.control.stats()["sessions"] == 1


def test_connect_from_every_state(new_session: Factory, sb: Sandbox) -> None:
    for start in State:
        s = new_session()
        if start is State.LOGGED_OUT:
            s.connect()
            s.logout()
        else:
            drive_to(s, start)
        s.connect()
        assert s.state is State.AUTHENTICATED
        assert s.snapshot().session_token is not None


@pytest.mark.parametrize(
    ("state", "trigger"),
    table.refused_pairs(),
    ids=[f"{s.value}-{t}" for s, t in table.refused_pairs()],
)
def test_refused_pairs(new_session: Factory, sb: Sandbox, state: State, trigger: str) -> None:
    s = new_session()
    if state is State.LOGGED_OUT:
        s.connect()
        s.logout()
    else:
        drive_to(s, state)
    before, snap = calls(sb), s.snapshot()
    if trigger == "logout":  # not logged in: nothing to do, recorded, no error (issue 17)
        s.logout()
        assert s.snapshot() == snap and calls(sb) == before
        assert (s.history[-1].outcome, s.history[-1].reason) == ("refused", "not logged in")
        return
    with pytest.raises(InvalidTransition) as info:
        getattr(s, trigger)()
    assert s.snapshot() == snap  # nothing changed, tokens included
    assert calls(sb) == before  # nothing reached the sandbox
    msg = str(info.value)
    assert msg.startswith(f"{trigger}() needs ") and f"session is {state.value}" in msg
    assert ("call " in msg and "first" in msg) or "already" in msg
    assert s.history[-1].outcome == "refused"
    assert (info.value.state, info.value.trigger) == (state.value, trigger)  # public fields


def test_hint_example_from_the_issue() -> None:
    assert table.hint(State.UNINITIALISED, "login") == (
        "login() needs Initialised or OTT-issued, session is Uninitialised: call init() first"
    )


def test_internal_edge_session_expired(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    s.connect()
    sb.control.expire()
    s.get("/reports/1.0/orders")
    edges = [(r.trigger, r.src, r.dst) for r in s.history]
    assert ("session_expired", State.AUTHENTICATED, State.INITIALISED) in edges
    assert s.state is State.AUTHENTICATED and s.generation == 2


def test_internal_edge_ott_rejected(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    drive_to(s, State.OTT_ISSUED)
    sb.control.fault(contract.TWO_FA_ACCESSCODE[1], status=401, code=contract.FAULT_OTT_INVALID)
    with pytest.raises(OneTimeTokenRejected):
        s.authenticate()
    assert s.state is State.INITIALISED and s.snapshot().one_time_token is None
    assert [r.trigger for r in s.history[-2:]] == ["authenticate", "ott_rejected"]


@pytest.mark.parametrize("start", list(State))
@pytest.mark.parametrize(
    ("code", "error", "edge"),
    [
        (contract.FAULT_GATEWAY_TOKEN, GatewayAuthError, "gateway_rejected"),
        (contract.FAULT_WRONG_DOMAIN, WrongDomain, "redirect_changed"),
    ],
)
def test_internal_edges_to_uninitialised(
    new_session: Factory, sb: Sandbox, start: State, code: int, error: type[KSError], edge: str
) -> None:
    s = new_session(cooldown=0)
    if start is State.LOGGED_OUT:
        s.connect()
        s.logout()
    else:
        drive_to(s, start)
    trigger = {
        State.UNINITIALISED: "init",
        State.INITIALISED: "login",
        State.OTT_ISSUED: "authenticate",
        State.AUTHENTICATED: "logout",
        State.LOGGED_OUT: "init",
    }[start]
    path = {
        "init": contract.SESSION_INIT,
        "login": contract.LOGIN_USERID,
        "authenticate": contract.TWO_FA_ACCESSCODE,
        "logout": contract.SESSION_LOGOUT,
    }[trigger]
    sb.control.fault(
        path[1], status=401 if code == contract.FAULT_GATEWAY_TOKEN else 403, code=code
    )
    with pytest.raises(error):
        getattr(s, trigger)()
    if trigger == "logout":  # logout always forgets the session locally, then reports
        assert s.state is State.LOGGED_OUT
        return
    assert s.state is State.UNINITIALISED
    assert s.history[-1].trigger == edge and s.history[-1].src is start
    snap = s.snapshot()
    assert snap.session_token is None and snap.one_time_token is None and snap.host == s.origin


def test_internal_edge_restore_from_store(new_session: Factory, sb: Sandbox) -> None:
    store = MemoryStore()
    first = new_session(store=store)
    first.connect()
    before = calls(sb)
    second = new_session(store=store)
    assert second.resume() is True
    assert second.state is State.AUTHENTICATED and second.history[-1].trigger == "restore"
    assert calls(sb) == before  # no HTTP to resume
    assert second.get("/reports/1.0/orders").status_code == 200


def test_first_trigger_resumes_the_stored_session(new_session: Factory, sb: Sandbox) -> None:
    # resume() is documented as done "by itself on the first trigger": a bare logout() on a
    # fresh session must first adopt the stored session, then log it out on the server.
    store = MemoryStore()
    new_session(store=store).connect()
    second = new_session(store=store)
    second.logout()
    assert [(r.trigger, r.outcome) for r in second.history] == [("restore", "ok"), ("logout", "ok")]
    assert second.state is State.LOGGED_OUT and store.load(second.store_key()) is None
    assert sb.control.stats()["logouts"] == 1


FAILURES: list[tuple[dict[str, Any], type[KSError]]] = [
    ({"status": 400}, KSError),
    ({"status": 500}, ServiceUnavailable),
    ({"status": 503, "count": 10}, ServiceUnavailable),
    ({"drop": True, "count": 10}, NetworkError),
    ({"delay": 1.0, "drop": True, "count": 10}, RequestTimeout),
    ({"malformed": True}, KSError),
]


@pytest.mark.parametrize("trigger", ["init", "login", "authenticate"])
@pytest.mark.parametrize(("fault", "error"), FAILURES, ids=[str(f) for f, _ in FAILURES])
def test_failed_call_leaves_state_unchanged(
    new_session: Factory,
    sb: Sandbox,
    logs: LogCapture,
    trigger: str,
    fault: dict[str, Any],
    error: type[KSError],
) -> None:
    s = new_session(timeout=(1.0, 0.3) if "delay" in fault else (2.0, 2.0))
    start = table.sources(trigger)[0]
    drive_to(s, start)
    snap = s.snapshot()
    path = {
        "init": contract.SESSION_INIT,
        "login": contract.LOGIN_USERID,
        "authenticate": contract.TWO_FA_ACCESSCODE,
    }[trigger][1]
    sb.control.fault(path, **fault)
    with pytest.raises(error):
        getattr(s, trigger)()
    assert s.snapshot() == snap
    last = [e for e in logs.events() if e["event"] == "transition"][-1]
    assert (last["trigger"], last["outcome"], last["dst"]) == (trigger, "failed", start.value)
    assert last["error"] == s.history[-1].error


def test_logout_failure_still_forgets_tokens(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    s.connect()
    token = s.snapshot().session_token
    sb.control.fault(contract.SESSION_LOGOUT[1], status=500)
    with pytest.raises(ServiceUnavailable):
        s.logout()
    assert s.state is State.LOGGED_OUT and s.snapshot().session_token is None
    assert s.history[-1].outcome == "failed" and token is not None


def test_logout_of_an_expired_session_is_success(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    s.connect()
    sb.control.expire()
    s.logout()  # the server says 99999: the session is gone, which is what logout wanted
    assert s.state is State.LOGGED_OUT and s.history[-1].outcome == "ok"


def test_guards(new_session: Factory, sb: Sandbox, clock: Clock) -> None:
    s = new_session(make_credentials(password=None), ott_ttl=60)
    s.init()
    assert not s.may("login")
    with pytest.raises(GuardFailed) as info:
        s.login()
    assert info.value.guard == "has_password" and "password" in str(info.value)
    assert calls(sb) == {INIT: 1}

    s = new_session(ott_ttl=60)
    drive_to(s, State.OTT_ISSUED)
    assert s.may("authenticate")
    clock.advance(61)
    assert not s.may("authenticate")
    before = calls(sb)
    with pytest.raises(GuardFailed) as info:
        s.authenticate()
    assert info.value.guard == "ott_fresh" and "login()" in str(info.value)
    assert calls(sb) == before and s.state is State.OTT_ISSUED
    s.connect()  # mends the stale token with the table's remedy (login) and goes on
    assert s.state is State.AUTHENTICATED
    assert [r.trigger for r in s.history[-2:]] == ["login", "authenticate"]

    s = new_session(make_credentials(access_code=OneShot("1234")))
    s.connect()
    s.logout()
    s.init()
    s.login()
    with pytest.raises(GuardFailed) as info:
        s.authenticate()
    assert info.value.guard == "has_access_code"


def test_may_is_pure(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    before = (s.snapshot(), s.history)
    assert [s.may(t) for t in table.USER_TRIGGERS] == [True, False, False, False]
    assert not s.may("session_expired")  # internal edges are not the user's to take
    assert (s.snapshot(), s.history) == before and calls(sb) == {}


def test_cooldown_after_wrong_password(new_session: Factory, sb: Sandbox, clock: Clock) -> None:
    s = new_session(make_credentials(password="wrong"), cooldown=120)
    s.init()
    with pytest.raises(LoginRejected):
        s.login()
    with pytest.raises(LoginRejected):
        s.login()
    assert calls(sb)[LOGIN] == 1  # the second attempt never reached the server
    assert s.history[-1].reason == "cooldown"
    clock.advance(121)
    with pytest.raises(LoginRejected):
        s.login()
    assert calls(sb)[LOGIN] == 2


def test_history_is_bounded_and_callbacks_observe(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    seen: list[tuple[Any, str]] = []
    s = new_session(history_size=3, on_transition=lambda who, r: seen.append((who, r.trigger)))

    def broken(_s: Any, _r: Any) -> None:
        raise RuntimeError("observer bug")

    class Observer:  # a callable object: it has no __name__
        def __call__(self, _s: Any, _r: Any) -> None:
            raise ValueError("observer bug")

    s.on_transition(broken)
    s.on_transition(Observer())
    s.connect()
    s.logout()
    assert seen == [(s, "init"), (s, "login"), (s, "authenticate"), (s, "logout")]
    assert [r.trigger for r in s.history] == ["login", "authenticate", "logout"]
    failed = [e for e in logs.events() if e["event"] == "callback_failed"]
    assert len(failed) == 8  # one per callback and transition; the session went on regardless
    assert {(e["level"], e["callback"], e["error"], e["session_id"]) for e in failed} == {
        ("error", "broken", "RuntimeError", s.session_id),
        ("error", "?", "ValueError", s.session_id),
    }


def test_triggers_serialised_across_threads(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    errors: list[BaseException] = []
    go = threading.Barrier(8)

    def worker() -> None:
        go.wait()
        try:
            s.connect()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and s.state is State.AUTHENTICATED
    assert sb.control.stats()["logins"] == 1 and sb.control.stats()["sessions"] == 1


def test_context_manager_logs_out_when_asked(new_session: Factory, sb: Sandbox) -> None:
    with new_session(logout_on_exit=True) as s:
        s.connect()
    assert s.state is State.LOGGED_OUT and sb.control.stats()["logouts"] == 1


def test_sessions_are_garbage_collected(sb: Sandbox) -> None:
    import gc
    import weakref

    s = KSSession(make_credentials(), host=sb.url)
    s.connect()
    ref = weakref.ref(s)
    s.close()
    del s
    gc.collect()
    assert ref() is None
    from session_fsm.core.machine import shared_machine

    assert shared_machine().models == []  # the shared machine never held a session


def test_attempt_counts_repeats_within_one_connect(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    sb.control.fault(contract.TWO_FA_ACCESSCODE[1], status=401, code=contract.FAULT_OTT_INVALID)
    s.connect()  # 2FA meets 50001, ott_rejected, then login and authenticate again
    assert [(r.trigger, r.attempt) for r in s.history if not r.trigger.endswith("rejected")] == [
        ("init", 1),
        ("login", 1),
        ("authenticate", 1),
        ("login", 2),
        ("authenticate", 2),
    ]


def test_connect_gives_up_on_a_login_held_elsewhere(new_session: Factory, sb: Sandbox) -> None:
    store = MemoryStore()
    s = new_session(store=store, relogin_timeout=0.01)
    with store.lock(s.store_key(), 1.0) as got:  # another process is logging this user in
        assert got
        with pytest.raises(SessionExpired, match="another process") as info:
            s.connect()
    assert "relogin_timeout" in info.value.hint and calls(sb) == {}


def test_cooldown_lasts_exactly_its_length(new_session: Factory, sb: Sandbox, clock: Clock) -> None:
    password = ["wrong"]
    s = new_session(make_credentials(password=FromCallable(lambda: password[0])), cooldown=1)
    s.init()
    with pytest.raises(LoginRejected):
        s.login()
    with pytest.raises(LoginRejected):
        s.login()  # even a one-second cool-down holds the next attempt back
    assert calls(sb)[LOGIN] == 1
    clock.advance(1)  # exactly its length: the cool-down is over
    password[0] = "demo-password"
    s.login()
    s.authenticate()  # and it is forgotten: later triggers are not held back either
    assert calls(sb)[LOGIN] == 2 and s.state is State.AUTHENTICATED
