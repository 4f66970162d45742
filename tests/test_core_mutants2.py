"""Behaviour of the sans-IO core that the full mutation run (docs/mutation.md) found untested.

A second companion of :mod:`tests.test_core_mutants`: each test pins something a surviving
mutant of ``session_fsm/core`` changed while every other test still passed. Through the public
API, against the sandbox over real loopback HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from session_fsm import (
    GatewayAuthError,
    KSSession,
    LoginRejected,
    MemoryStore,
    NotReplayable,
    OneShot,
    ReloginNeedsHuman,
    ServiceUnavailable,
    SessionExpired,
    State,
    WrongDomain,
    contract,
)
from session_fsm.core.effects import Held, release
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.stores import StoredCooldown, StoredSession, StoreError
from tests.conftest import Clock, LogCapture, make_credentials
from tests.test_core_mutants import Holder

Factory = Callable[..., KSSession]
ORDERS = contract.ORDERS_REPORT[1]
PLACE = contract.ORDER_NORMAL[1]
A = State.AUTHENTICATED


# --- a replay the gateway refuses --------------------------------------------------------------


def test_a_replay_answered_with_a_rejected_gateway_token_takes_its_edge(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(cooldown=60)
    s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_SESSION_EXPIRED)  # the first send
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)  # the replay
    with pytest.raises(GatewayAuthError) as info:
        s.get(ORDERS)
    assert info.value.response is not None and len(info.value.response.history) == 1
    # Renewed (generation 2), then the replay's 900901 took the gateway edge, like a first
    # answer's: the next request re-initialises instead of sending a rejected Bearer token.
    assert s.state is State.UNINITIALISED and s.generation == 2
    last = s.history[-1]
    assert (last.trigger, last.src, last.reason) == ("gateway_rejected", A, "GatewayAuthError")
    # The rejection is remembered for the cool-down, as the replay's own error (its request).
    with pytest.raises(GatewayAuthError) as held:
        s.get(ORDERS)
    assert str(held.value) == str(info.value)
    assert f"GET {ORDERS}" in str(held.value)
    assert s.history[-1].reason == "cooldown"


def test_a_replay_is_logged_with_its_session(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    s = new_session(logger=None)
    s.connect()
    sb.control.expire()
    assert s.get(ORDERS).status_code == 200
    replayed = [e for e in logs.events() if e["event"] == "request_replayed"]
    assert len(replayed) == 1
    e = replayed[0]
    assert (e["session_id"], e["method"], e["path"]) == (s.session_id, "GET", f"/apim{ORDERS}")
    assert (e["reason"], e["generation"]) == ("session renewed", 2)


# --- a request that may not be sent again -------------------------------------------------------


def test_a_post_not_replayed_says_replay_posts_is_off(new_session: Factory, sb: Sandbox) -> None:
    s = new_session(replay_posts=False)
    s.connect()
    sb.control.expire()
    with pytest.raises(NotReplayable) as info:
        s.post(PLACE, data="jData={}")  # a str body: sent twice as well as once
    assert str(info.value).startswith(
        "session renewed, but the POST was not sent again (replay_posts is off)"
    )
    assert s.state is A and s.generation == 2


def test_a_streamed_body_not_replayed_says_so(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()  # replay_posts on: only the stream stops the replay
    s.connect()
    sb.control.expire()
    with pytest.raises(NotReplayable) as info:
        s.put(PLACE, data=iter([b"jData={}"]))
    assert str(info.value).startswith(
        "session renewed, but the PUT was not sent again (its body is a stream)"
    )


# --- what is recorded when a re-login needs a person ------------------------------------------


def test_a_relogin_that_needs_a_person_is_recorded_as_a_failed_connect(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(make_credentials(password=OneShot("demo-password")))
    s.connect()
    sb.control.expire()
    with pytest.raises(ReloginNeedsHuman):
        s.get(ORDERS)
    last = s.history[-1]
    assert (last.trigger, last.outcome, last.reason, last.error) == (
        "connect", "failed", "needs_human", "ReloginNeedsHuman",
    )  # fmt: skip
    assert last.src is last.dst is State.INITIALISED and s.history[-2].trigger == "session_expired"


# --- waiting for a call another thread is making -----------------------------------------------


def test_a_call_waiting_past_relogin_timeout_says_what_it_waited_for(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(relogin_timeout=0.2)
    with Holder(s, "init", s.connect), pytest.raises(SessionExpired) as info:
        s.logout()
    assert str(info.value) == (
        "gave up after 0.2s waiting for another thread's call on this session "
        "(connect, re-login or logout): raise relogin_timeout, or retry"
    )
    assert info.value.hint == "raise relogin_timeout, or retry"


# --- observers ----------------------------------------------------------------------------------


def test_a_request_hook_that_raises_is_named_in_its_event(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    s = new_session(logger=None)

    def broken_hook(_s: Any, _outcome: str) -> None:
        raise LookupError("no")

    s.on_request(broken_hook)
    s.connect()
    assert s.get(ORDERS).status_code == 200
    failed = [e for e in logs.events() if e["event"].endswith("_failed")]
    assert [(e["event"], e["request_hook"], e["error"]) for e in failed] == [
        ("request_hook_failed", "broken_hook", "LookupError")
    ]


# --- a soft refresh cut by a non-library error --------------------------------------------------


def test_a_soft_refresh_cut_by_a_foreign_error_is_not_left_under_way(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    vault = {"open": True}

    def password() -> str:
        if not vault["open"]:
            raise LookupError("the vault is closed")
        return "demo-password"

    s = new_session(
        make_credentials(password=password), max_session_age=1000, soft_window=100
    )
    s.connect()
    vault["open"] = False
    clock.advance(950)
    # The refresh's password could not be had (a ConfigurationError naming the provider's
    # error class, recorded on the refresh): the still-good token serves this request.
    assert s.get(ORDERS).status_code == 200
    snap = s.snapshot()
    assert snap.refreshing is False and snap.state is A and snap.generation == 1
    assert s.history[-1].trigger == "refresh" and s.history[-1].error == "ConfigurationError"
    vault["open"] = True  # the next request once the retry is due refreshes
    assert snap.refresh_retry_at is not None
    clock.advance(snap.refresh_retry_at - clock())
    assert s.get(ORDERS).status_code == 200
    assert s.generation == 2 and s.history[-1].trigger == "refresh"


# --- a renewal that finds another process's session ---------------------------------------------


def test_a_renewal_adopts_the_session_another_process_stored(
    new_session: Factory, sb: Sandbox
) -> None:
    store = MemoryStore()
    first, second = new_session(store=store), new_session(store=store)
    first.connect()
    second.connect()  # adopts the first's session from the store
    sb.control.expire()
    assert first.get(ORDERS).status_code == 200 and first.generation == 2
    logins = sb.control.stats()["logins"]
    assert second.get(ORDERS).status_code == 200 and second.generation == 2
    assert sb.control.stats()["logins"] == logins  # no login of its own
    last = second.history[-1]
    assert (last.trigger, last.src, last.dst, last.reason) == ("restore", A, A, "store")


# --- another host's answer while the session's lock is held ------------------------------------


def test_a_wrong_domain_answer_waits_relogin_timeout_for_the_lock(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(relogin_timeout=0.2)
    s.connect()
    record = StoredSession(sb.url, "demo-user", Secret("made-elsewhere"), 5, 0.0)
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_WRONG_DOMAIN)
    with Holder(s, "restore", lambda: s.adopt(record, "test")):
        t0 = time.monotonic()
        with pytest.raises(SessionExpired) as info:
            s.get(ORDERS)  # answered "another host": the internal edge needs the lock
        waited = time.monotonic() - t0
    assert str(info.value).startswith("gave up after 0.2s waiting for another thread's re-login")
    assert 0.15 < waited < 3
    assert s.state is A and s.generation == 5  # the edge was not taken without the lock


def test_an_expiry_met_by_a_request_records_its_cause_and_the_request(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    sb.control.expire()
    assert s.get(ORDERS).status_code == 200
    expired = [r for r in s.history if r.trigger == "session_expired"]
    assert len(expired) == 1
    r = expired[0]
    expected = (401, contract.FAULT_SESSION_EXPIRED, "SessionExpired")
    assert (r.status, r.fault_code, r.error) == expected
    assert (r.call, r.reason, r.outcome) == (f"GET {ORDERS}", "expired", "ok")


def test_a_bearer_refresh_that_waited_too_long_says_what_to_do(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(
        make_credentials(access_token_provider=lambda: "demo-access-token"), relogin_timeout=0.2
    )
    s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    with Holder(s, "login", s.login), pytest.raises(GatewayAuthError) as info:
        s.get(ORDERS)  # a refused login() holds the lock in its callback
    assert str(info.value) == (
        "gave up after 0.2s waiting for another thread's gateway token refresh"
        ": raise relogin_timeout, or retry"
    )
    assert info.value.hint == "raise relogin_timeout, or retry"
    assert info.value.response is not None and info.value.response.status_code == 401


def test_a_replay_answered_with_another_host_takes_that_edge_once(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_SESSION_EXPIRED)  # the first send
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_WRONG_DOMAIN)  # the replay
    with pytest.raises(WrongDomain):
        s.get(ORDERS)
    assert s.state is State.UNINITIALISED
    assert [r.trigger for r in s.history].count("redirect_changed") == 1


def test_a_request_not_renewed_is_logged_with_its_path(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    s = new_session(replay_posts=False, logger=None)
    s.connect()
    sb.control.expire()
    with pytest.raises(NotReplayable):
        s.post(PLACE, data="jData={}")
    events = [e for e in logs.events() if e["event"] == "request_not_renewed"]
    assert [(e["session_id"], e["method"], e["path"], e["error"]) for e in events] == [
        (s.session_id, "POST", f"/apim{PLACE}", "NotReplayable")
    ]


# --- the snapshot and the effects, as pure values -----------------------------------------------


def test_a_snapshot_outside_authenticated_has_no_refresh_under_way(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    s.logout()
    snap = s.snapshot()
    assert (snap.state, snap.session_token, snap.refreshing, snap.refresh_retry_at) == (
        State.LOGGED_OUT, None, False, None,
    )  # fmt: skip


def test_releasing_what_a_flow_does_not_hold_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError, match=r"does not hold \(the session lock\)"):
        release([], None)
    held: list[Held] = [("key", lambda: "store"), (None, lambda: "session")]
    assert release(held, "key")() == "store" and held[0][0] is None
    with pytest.raises(RuntimeError, match=r"does not hold \(key\)"):
        release(held, "key")


def test_a_request_to_an_absolute_url_maps_its_answer_to_a_typed_error(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    sb.control.fault(ORDERS, status=503, count=10)  # past the retries
    with pytest.raises(ServiceUnavailable) as info:
        s.get(s.snapshot().host + ORDERS)  # not the hot path: the core's request flow
    assert info.value.response is not None and info.value.response.status_code == 503


class _NoCooldownStore(MemoryStore):
    """A token store whose cool-down records cannot be written."""

    def save_cooldown(self, key: str, cooldown: StoredCooldown) -> None:
        raise StoreError("the store is read-only")


def test_a_cooldown_the_store_refuses_is_logged_and_the_login_error_raised(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    s = new_session(
        make_credentials(password="wrong"), store=_NoCooldownStore(), cooldown=60, logger=None
    )
    s.init()
    with pytest.raises(LoginRejected):
        s.login()  # the login's error, not the store's
    events = [e for e in logs.events() if e["event"] == "cooldown_not_stored"]
    assert [(e["level"], e["session_id"], e["error"]) for e in events] == [
        ("warning", s.session_id, "StoreError")
    ]
    kept = s.snapshot().cooldown
    assert kept is not None and kept.error == "LoginRejected" and not kept.stored
