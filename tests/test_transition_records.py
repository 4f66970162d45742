"""What each attempted transition records, and the public ways a session changes hands.

A ``TransitionRecord`` is what callbacks, ``history`` and the log events see: its time (the
session's clock), how long the edge's call took, which attempt within a ``connect()`` it was,
and the status, fault code and error of a failure. ``adopt()`` and ``identity()`` are the
session's hand-over points.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from session_fsm import (
    BadRequest,
    GuardFailed,
    InvalidTransition,
    KSSession,
    OneTimeTokenRejected,
    contract,
)
from session_fsm.sandbox import Sandbox
from session_fsm.stores import MemoryStore, StoredSession
from session_fsm.table import State, guard_hint
from tests.conftest import Clock, LogCapture, make_credentials

Factory = Callable[..., KSSession]


def test_guard_failure_names_state_trigger_and_guard(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = new_session(make_credentials(password=None))
    s.init()
    with pytest.raises(GuardFailed) as info:
        s.login()
    exc = info.value
    assert (exc.state, exc.trigger, exc.guard) == ("Initialised", "login", "has_password")
    assert str(exc).startswith(guard_hint("login", "has_password"))
    rec = s.history[-1]
    assert (rec.trigger, rec.outcome, rec.reason) == ("login", "refused", "guard has_password")
    assert rec.duration_ms > 0  # timed from the trigger, like every attempted edge
    assert rec.attempt == 1 and rec.time == clock.now  # the session's (injected) clock
    assert (rec.status, rec.fault_code, rec.error) == (None, None, None)


def test_a_trigger_failing_twice_in_one_connect_records_both_attempts(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    sb.control.fault(
        contract.TWO_FA_ACCESSCODE[1], status=401, code=contract.FAULT_OTT_INVALID, count=2
    )
    with pytest.raises(OneTimeTokenRejected):
        s.connect()  # recovers from the first 50001 once, not from the second
    failed = [
        (r.attempt, r.outcome, r.status, r.fault_code, r.error)
        for r in s.history
        if r.trigger == "authenticate"
    ]
    why = (401, contract.FAULT_OTT_INVALID, "OneTimeTokenRejected")
    assert failed == [(1, "failed", *why), (2, "failed", *why)]
    internal = [r for r in s.history if r.trigger == "ott_rejected"]
    assert [(r.attempt, r.reason, r.status) for r in internal] == [
        (1, "OneTimeTokenRejected", None)
    ] * 2


def test_durations_measure_the_edges_call(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    sb.control.fault(contract.LOGIN_USERID[1], delay=0.05)
    s.init()
    s.login()
    assert 50 <= s.history[-1].duration_ms < 5000  # milliseconds of this call, no more
    sb.control.fault(contract.TWO_FA_ACCESSCODE[1], status=400, delay=0.05)
    with pytest.raises(BadRequest):
        s.authenticate()
    rec = s.history[-1]
    assert rec.outcome == "failed" and 50 <= rec.duration_ms < 5000
    assert (rec.status, rec.fault_code, rec.error) == (
        400,
        contract.FAULT_BAD_REQUEST,
        "BadRequest",
    )


def test_adopting_on_a_fresh_session_takes_the_given_session(sb: Sandbox) -> None:
    store = MemoryStore()
    first = KSSession(make_credentials(), host=sb.url, store=store)
    first.connect()
    stored = store.load(first.store_key())
    assert stored is not None and stored.generation == 1
    handed = StoredSession(stored.host, stored.userid, stored.session_token, 5, stored.login_time)
    fresh = KSSession(make_credentials(), host=sb.url, store=store)
    fresh.adopt(handed, reason="handed over")  # the store holds an older one: not taken
    assert fresh.state is State.AUTHENTICATED and fresh.generation == 5
    assert [(r.trigger, r.reason) for r in fresh.history] == [("restore", "handed over")]
    first.close()
    fresh.close()


def test_identity_follows_the_bearer_token(sb: Sandbox) -> None:
    tokens = iter(["fresh-token-1", "fresh-token-2"])
    s = KSSession(make_credentials(access_token_provider=lambda: next(tokens)), host=sb.url)
    who = s.identity()
    assert s.identity() is who  # made once per Bearer token
    assert who.access_token.reveal() == "demo-access-token"
    assert s.refresh_bearer()
    assert s.identity() is not who and s.identity().access_token.reveal() == "fresh-token-1"
    s.close()


def test_event_levels_and_untimed_refusals(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    # A transition event is at info when the edge was taken, at warning when it was refused
    # or failed; a trigger the table refuses outright makes no call and takes no time.
    s = new_session()
    s.init()
    with pytest.raises(InvalidTransition):
        s.authenticate()
    sb.control.fault(contract.LOGIN_USERID[1], status=400)
    with pytest.raises(BadRequest):
        s.login()
    got = [(e["trigger"], e["outcome"], e["level"]) for e in logs.events()]
    assert got == [
        ("init", "ok", "info"),
        ("authenticate", "refused", "warning"),
        ("login", "failed", "warning"),
    ]
    refused = s.history[1]
    assert refused.outcome == "refused" and refused.duration_ms == 0.0
