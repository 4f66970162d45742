"""Tests written for the survivors of the fourth mutation run of the sans-IO core
(docs/mutation.md): what a session call's error names when its answer is no success, and a
token store without the optional cool-down methods.

Each pins one behaviour a user can see: the call an error names (``where`` and its text), the
server's fault texts kept apart from the library's words, the reason a malformed error answer
is refused, and a user's minimal store.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from session_fsm import (
    BadRequest,
    GuardFailed,
    KSSession,
    LoginRejected,
    MalformedAnswer,
    MemoryStore,
    Secret,
    SessionExpired,
    State,
    StoreError,
    contract,
)
from session_fsm.core.snapshot import TransitionRecord
from session_fsm.sandbox import Sandbox
from session_fsm.stores import StoredSession
from tests.answer_server import AnswerServer, answer_server
from tests.conftest import FAST_RETRY, Clock, make_credentials
from tests.test_refresh_providers import Answers

Factory = Callable[..., KSSession]
LOGIN = contract.LOGIN_USERID
TWO_FA = contract.TWO_FA_ACCESSCODE
ORDERS = contract.ORDERS_REPORT[1]
E = TypeVar("E", bound=Exception)


@pytest.fixture
def api() -> Iterator[AnswerServer]:
    with answer_server() as server:
        yield server


def _connect_fails(api: AnswerServer, kind: type[E]) -> E:
    """What connect() on the answer server raises (it must raise ``kind``)."""
    s = KSSession(make_credentials(), host=api.url, timeout=(2.0, 5.0), retry=FAST_RETRY)
    try:
        with pytest.raises(kind) as info:
            s.connect()
    finally:
        s.close()
    return info.value


# --- the call a session call's error names -------------------------------------------------------


@pytest.mark.parametrize("call", [LOGIN, TWO_FA], ids=["login", "2fa"])
def test_a_session_calls_error_names_its_method_and_path(
    api: AnswerServer, call: tuple[str, str]
) -> None:
    api.script(*call, 400, b"{}")  # no fault at all: the error's words are the library's
    error = _connect_fails(api, BadRequest)
    method, path = call
    assert error.where == f"{method} {path}"
    assert f": {method} {path} -> HTTP 400" in str(error)
    # No fault: no server text is made up, and no description.
    assert (error.explanation, error.description) == ("", "")


def test_a_fault_description_is_kept_on_the_error(api: AnswerServer) -> None:
    fault = {"fault": {"code": 900, "message": "Bad thing", "description": "user is locked"}}
    api.script(*LOGIN, 401, json.dumps(fault).encode())
    error = _connect_fails(api, LoginRejected)
    assert error.description == "user is locked"
    assert "Bad thing" in error.explanation and "user is locked" in error.explanation


def test_an_error_answer_nested_too_deeply_is_refused_with_that_reason(api: AnswerServer) -> None:
    api.script(*LOGIN, 401, b"[" * 200 + b"]" * 200)
    error = _connect_fails(api, MalformedAnswer)
    assert "nested too deeply" in str(error)
    assert error.status == 401


# --- a user's store without the optional cool-down methods ----------------------------------------


class RecordsOnly:
    """A user's token store with the four required methods only (no cool-down methods): what
    the sync TokenStore protocol asks for."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    def load(self, key: str) -> Any:
        return self.inner.load(key)

    def save(self, key: str, record: Any) -> Any:
        return self.inner.save(key, record)

    def delete(self, key: str, generation: int | None = None) -> Any:
        return self.inner.delete(key, generation)

    def lock(self, key: str, timeout: float) -> Any:
        return self.inner.lock(key, timeout)


def test_a_store_without_cooldown_methods_keeps_the_sessions_own_cooldown(
    new_session: Factory, sb: Sandbox
) -> None:
    """The cool-down was marked as kept in the store, so the next login read the store, found
    none and took it as reset there: the rejected password was sent again at once."""
    s = new_session(store=RecordsOnly())
    sb.control.fault(LOGIN[1], status=401)  # a wrong password: a cool-down starts
    with pytest.raises(LoginRejected):
        s.connect()
    with pytest.raises(LoginRejected) as again:  # the cool-down's error, nothing sent
        s.connect()
    assert s.history[-1].reason == "cooldown" and s.history[-1].outcome == "refused"
    assert again.value.status == 401
    assert s.state is not State.AUTHENTICATED


# --- the connect walk counts each remedy's attempts -----------------------------------------------


def test_a_remedy_taken_twice_in_one_connect_counts_its_attempts(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    """The one-time token goes stale again while connect() is logging in again for it (a slow
    login): the walk's second remedy is the login's second attempt."""
    stale_again = [True]

    def slow(_s: object, rec: TransitionRecord) -> None:
        if rec.trigger == "login" and rec.outcome == "ok" and rec.attempt == 1 and stale_again:
            stale_again.clear()
            clock.advance(300 + 1)

    s = new_session()
    s.init()
    s.login()
    clock.advance(300 + 1)  # past ott_ttl: connect() logs in again first
    s.on_transition(slow)
    n = len(s.history)
    s.connect()
    taken = [(r.trigger, r.outcome, r.attempt) for r in s.history[n:]]
    assert taken == [("login", "ok", 1), ("login", "ok", 2), ("authenticate", "ok", 1)]
    assert s.state is State.AUTHENTICATED


# --- a new session's generation, the store's lock, a kept refresh wait ----------------------------


def test_a_new_session_outnumbers_a_stored_one_it_did_not_adopt(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    """A stored session of generation 5 on a host off the allow-list is not adopted; the
    session's own login is stored as generation 6, so it supersedes that record (a lower
    generation would be refused by the store's fencing and never shared)."""
    store = MemoryStore()
    s = new_session(store=store)
    foreign = StoredSession("https://evil.example/apim", "demo-user", Secret("t0k"), 5, clock.now)
    store.save(s.store_key(), foreign)
    s.connect()
    assert s.generation == 6
    kept = store.load(s.store_key())
    assert kept is not None and (kept.generation, kept.host) == (6, sb.url)


class LockedElsewhere(MemoryStore):
    """A store whose lock is never had: another process holds it past relogin_timeout."""

    def lock(self, key: str, timeout: float) -> Any:
        return contextlib.nullcontext(False)


def test_a_store_lock_never_had_says_what_to_do(new_session: Factory) -> None:
    s = new_session(store=LockedElsewhere(), relogin_timeout=0.5)
    with pytest.raises(SessionExpired) as info:
        s.connect()
    assert "waiting for another process's login" in str(info.value)
    assert info.value.hint == "raise relogin_timeout, or check the token store"


def test_a_bearer_refresh_keeps_a_failed_soft_refreshs_wait(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    """Replacing the Bearer token is an Authenticated -> Authenticated edge of the same
    generation: the wait before a failed soft refresh is tried again stays, so the next
    request does not try it again at once."""
    creds = make_credentials(
        password=Answers("demo-password", "  "),  # the soft refresh's password is blank
        access_token_provider=lambda: "demo-access-token",
    )
    s = new_session(creds, max_session_age=1000, soft_window=100)
    s.connect()
    clock.advance(950)  # in the soft window: the refresh is tried, fails, is due again later

    def refreshes() -> int:
        return sum(r.trigger == "refresh" and r.outcome == "failed" for r in s.history)

    assert s.get(ORDERS).status_code == 200 and refreshes() == 1
    wait = s.snapshot().refresh_retry_at
    assert wait is not None and wait > clock.now
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    assert s.get(ORDERS).status_code == 200  # the Bearer token replaced, the call replayed
    assert s.snapshot().bearer_generation == 1 and s.generation == 1
    assert s.snapshot().refresh_retry_at == wait
    assert s.get(ORDERS).status_code == 200 and refreshes() == 1


def test_a_soft_refresh_that_succeeds_after_failing_forgets_the_retry_time(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    creds = make_credentials(password=Answers("demo-password", "  ", "demo-password"))
    s = new_session(creds, max_session_age=1000, soft_window=100)
    s.connect()
    clock.advance(950)
    assert s.get(ORDERS).status_code == 200  # the refresh fails: tried again later
    wait = s.snapshot().refresh_retry_at
    assert wait is not None and s.generation == 1
    clock.advance(wait - clock.now)
    assert s.get(ORDERS).status_code == 200  # tried again, and it succeeds
    assert s.generation == 2 and s.snapshot().refresh_retry_at is None


def test_a_rejected_access_code_keeps_the_one_time_token(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    """A wrong access code (401 to the 2FA call) starts a cool-down in OTT-issued; the one-time
    token and its time stay in the snapshot beside it, for the retry once the cool-down ends."""
    s = new_session()
    s.init()
    s.login()
    issued = s.snapshot()
    sb.control.fault(TWO_FA[1], status=401)
    with pytest.raises(LoginRejected):
        s.authenticate()
    snap = s.snapshot()
    assert snap.state is State.OTT_ISSUED and snap.cooldown is not None
    assert snap.one_time_token is issued.one_time_token is not None
    assert snap.ott_time == issued.ott_time is not None


class CooldownsUnreadable(MemoryStore):
    """A memory store whose cool-downs cannot be read once ``broken`` (a store outage)."""

    broken = False

    def load_cooldown(self, key: str) -> Any:
        if self.broken:
            raise StoreError("the store is unreachable")
        return super().load_cooldown(key)


def test_a_cooldown_holds_while_the_store_cannot_be_read(new_session: Factory, sb: Sandbox) -> None:
    """An unreadable store is no reset of the cool-down: this session's own still refuses the
    login (a None read from the failing store would have been taken as one)."""
    store = CooldownsUnreadable()
    s = new_session(store=store)
    sb.control.fault(LOGIN[1], status=401)  # a wrong password: a cool-down, kept in the store
    with pytest.raises(LoginRejected):
        s.connect()
    logins = sb.control.stats()["logins"]
    store.broken = True
    with pytest.raises(LoginRejected):
        s.connect()
    assert s.history[-1].reason == "cooldown" and s.state is not State.AUTHENTICATED
    assert sb.control.stats()["logins"] == logins


def test_a_cooldown_reset_in_the_store_is_over_here_too(new_session: Factory, sb: Sandbox) -> None:
    """Another process (or ``session-fsm`` reset) clears the stored cool-down: this session's own
    ends with it, the login goes ahead, and the refused attempt before named its error."""
    store = MemoryStore()
    s = new_session(store=store)
    sb.control.fault(LOGIN[1], status=401)
    with pytest.raises(LoginRejected):
        s.connect()
    with pytest.raises(LoginRejected):
        s.connect()  # refused by the cool-down, nothing sent
    refused = s.history[-1]
    assert (refused.outcome, refused.reason, refused.error) == (
        "refused",
        "cooldown",
        "LoginRejected",
    )
    store.clear_cooldown(s.store_key())
    s.connect()
    assert s.state is State.AUTHENTICATED and s.snapshot().cooldown is None


# --- fifth run's survivors: what a record and its event carry ----------------------------------


def test_a_refused_transitions_record_lists_the_guards_it_read(
    new_session: Factory, clock: Clock
) -> None:
    """(``fire`` 71: the guards left out of a refusal's record.)"""
    s = new_session()
    s.init()
    s.login()
    clock.advance(400)  # past the one-time token's life
    with pytest.raises(GuardFailed):
        s.authenticate()
    rec = s.history[-1]
    assert (rec.trigger, rec.outcome, rec.reason) == ("authenticate", "refused", "guard ott_fresh")
    assert dict(rec.guards) == {"has_ott": True, "ott_fresh": False}
    assert rec.as_event()["guards"] == {"has_ott": True, "ott_fresh": False}


def test_a_records_duration_is_in_milliseconds(new_session: Factory) -> None:
    """(``SessionCore.record`` 43: x 1001.) A record whose attempt began half a second ago."""
    s = new_session()
    t0 = time.perf_counter() - 0.5
    s._core.record("init", State.UNINITIALISED, "failed", t0=t0, reason="test")
    assert abs(s.history[-1].duration_ms - 500.0) < 0.3


def test_an_events_duration_is_rounded_to_the_microsecond() -> None:
    """(``TransitionRecord.as_event`` 21: rounded to 4 places.)"""
    rec = TransitionRecord(
        time=1.0, trigger="init", src=State.UNINITIALISED, dst=State.INITIALISED,
        outcome="ok", duration_ms=1.23456,
    )  # fmt: skip
    assert rec.as_event()["duration_ms"] == 1.235


def test_every_call_sends_one_accept_header_for_json(api: AnswerServer) -> None:
    """The contract: every call sends ``Accept: application/json`` (``Identity.plain_headers``
    1 to 5), once: through connect(), s.get's fast path and its general path, and logout."""
    s = KSSession(make_credentials(), host=api.url, timeout=(2.0, 5.0), retry=FAST_RETRY)
    with s:
        s.connect()
        s.get(ORDERS)
        s.get(ORDERS, params={"page": "1"}, stream=True).close()  # (the general path)
        s.logout()
    paths = [contract.SESSION_INIT, LOGIN, TWO_FA, contract.ORDERS_REPORT,
             contract.SESSION_LOGOUT]  # fmt: skip
    assert {f"{m} {p}": api.accepts.get(f"{m} {p}") for m, p in paths} == {
        f"{m} {p}": ["application/json"] for m, p in paths
    }
