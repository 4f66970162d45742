"""Behaviour of the sans-IO core that the mutation run (docs/mutation.md) found untested.

Each test pins something a mutant of ``session_fsm/core`` changed while every other test still
passed: through the public API, against the sandbox over real loopback HTTP.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from session_fsm import (
    ConfigurationError,
    GatewayAuthError,
    InvalidTransition,
    KSError,
    KSSession,
    LoginRejected,
    MemoryStore,
    OneShot,
    ReloginNeedsHuman,
    SessionExpired,
    State,
    contract,
    table,
)
from session_fsm.diagrams import mermaid
from session_fsm.masking import mask_url
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.stores import StoredSession
from tests.conftest import Clock, make_credentials

Factory = Callable[..., KSSession]
ORDERS = contract.ORDERS_REPORT[1]
LOGIN = " ".join(contract.LOGIN_USERID)
INIT = " ".join(contract.SESSION_INIT)
TWO_FA = contract.TWO_FA_ACCESSCODE[1]
A = State.AUTHENTICATED


def calls(sb: Sandbox) -> dict[str, int]:
    return dict(sb.control.stats()["calls"])


# --- the cool-down another session left in the store ----------------------------------------------


def _wrong_password(sb: Sandbox) -> dict[str, Any]:
    return {"password": "wrong"}


def _gateway_rejects_login(sb: Sandbox) -> dict[str, Any]:
    sb.control.fault(contract.LOGIN_USERID[1], status=401, code=900901)
    return {}


@pytest.mark.parametrize(
    ("make_it_fail", "error"),
    [(_wrong_password, LoginRejected), (_gateway_rejects_login, GatewayAuthError)],
    ids=["wrong-password", "gateway-token-rejected"],
)
def test_a_cooldown_kept_in_the_store_holds_back_another_session(
    new_session: Factory,
    sb: Sandbox,
    clock: Clock,
    make_it_fail: Callable[[Sandbox], dict[str, Any]],
    error: type[KSError],
) -> None:
    store = MemoryStore()
    first = new_session(make_credentials(**make_it_fail(sb)), store=store, cooldown=120)
    first.init()
    with pytest.raises(error) as failed:
        first.login()
    second = new_session(store=store, cooldown=120)  # another process, with the right password
    with pytest.raises(error) as held:
        second.connect()  # init is a login trigger too: held back before any call
    until = time.strftime("%H:%M:%S UTC", time.gmtime(clock.now + 120))
    assert str(held.value).startswith(
        f"not sent: an earlier login was rejected ({error.__name__}) and the cool-down lasts "
        f"until {until}"
    )
    assert held.value.hint == (
        "fix the password or access code (KS_PASSWORD, KS_ACCESS_CODE), then run "
        "`session-fsm login --reset-cooldown` or call reset_cooldown()"
    )
    assert (held.value.status, held.value.fault_code) == (
        failed.value.status,
        failed.value.fault_code,
    )
    assert calls(sb)[LOGIN] == 1 and calls(sb)[INIT] == 1  # the second one sent nothing
    assert second.snapshot().cooldown is None  # read from the store, not copied: refused, unchanged
    assert second.history[-1].reason == "cooldown"


# --- what a session shows -------------------------------------------------------------------------


def test_repr_names_the_session_and_masks_its_host(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    assert repr(s) == (
        f"KSSession(id={s.session_id}, userid='demo-user', state=Uninitialised, "
        f"host={mask_url(sb.url)!r}, generation=0)"
    )
    s.connect()
    assert repr(s).endswith("state=Authenticated, " f"host={mask_url(sb.url)!r}, generation=1)")


def test_the_diagram_marks_the_last_transition(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    assert s.diagram() == mermaid(highlight=State.UNINITIALISED, last=None)
    s.connect()
    last = s.history[-1]
    assert last.trigger == "authenticate"
    assert s.diagram() == mermaid(highlight=State.AUTHENTICATED, last=last)
    assert s.diagram() != mermaid(highlight=State.AUTHENTICATED, last=s.history[-2])


def test_a_request_hook_hears_other_for_an_error_not_of_the_library(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    seen: list[str] = []
    s.on_request(lambda _s, outcome: seen.append(outcome))
    s.connect()
    with pytest.raises(Exception) as info:
        s.get(ORDERS, no_such_option=1)
    assert not isinstance(info.value, KSError)
    sb.control.fault(ORDERS, status=503, count=10)
    with pytest.raises(KSError) as mapped:
        s.get(ORDERS)
    assert seen == ["other", type(mapped.value).__name__]


def test_session_ids_are_a_random_prefix_and_a_counter_made_again_in_a_forked_child(
    new_session: Factory,
) -> None:
    parent = new_session().session_id
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9]+", parent)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first session, then straight out
        try:
            ids = [KSSession(make_credentials(), host="https://127.0.0.1:1/apim").session_id]
            os.write(write, ",".join(ids).encode())
        finally:
            os._exit(0)
    os.close(write)
    got = os.read(read, 1000).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{8}-1", got), got  # a new prefix, and the counter from 1
    assert got.split("-")[0] != parent.split("-")[0]


# --- waiting for the session's lock ---------------------------------------------------------------


class Holder:
    """Holds the session's lock from another thread: an ``on_transition`` callback that blocks
    on the record of ``trigger`` (records are made with the lock held), until released."""

    def __init__(self, s: KSSession, trigger: str, start: Callable[[], object]) -> None:
        self.trigger, self.start = trigger, start
        self.entered, self.released = threading.Event(), threading.Event()
        s.on_transition(self._callback)
        self.thread = threading.Thread(target=self._run)

    def _callback(self, _s: KSSession, rec: Any) -> None:
        if rec.trigger == self.trigger and not self.released.is_set():
            self.entered.set()
            self.released.wait(10)

    def _run(self) -> None:
        with contextlib.suppress(KSError):
            self.start()

    def __enter__(self) -> Holder:
        self.thread.start()
        assert self.entered.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        self.released.set()
        self.thread.join(10)


def test_a_first_request_gives_up_on_a_lock_held_past_relogin_timeout(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(relogin_timeout=0.2)  # never used yet: its first request loads the store
    record = StoredSession(sb.url, "demo-user", Secret("made-elsewhere"), 1, 0.0)
    with Holder(s, "restore", lambda: s.adopt(record, "test")):
        t0 = time.monotonic()
        with pytest.raises(SessionExpired) as info:
            s.get(ORDERS)
        waited = time.monotonic() - t0
    assert str(info.value).startswith("gave up after 0.2s waiting for another thread's re-login")
    assert 0.15 < waited < 3 and calls(sb) == {}


def test_a_rejected_bearer_token_waits_relogin_timeout_for_the_lock_counted_as_a_waiter(
    new_session: Factory, sb: Sandbox
) -> None:
    asked: list[int] = []

    def provider() -> str:
        asked.append(1)
        return "demo-access-token"

    s = new_session(make_credentials(access_token_provider=provider), relogin_timeout=0.3)
    s.connect()
    sb.control.fault(ORDERS, status=401, code=900901)
    errors: list[BaseException] = []

    def request() -> None:
        try:
            s.get(ORDERS)
        except BaseException as exc:  # (the test reads it)
            errors.append(exc)

    with Holder(s, "login", s.login):  # a refused login() holds the lock in its callback
        t = threading.Thread(target=request)
        t.start()
        waiters = 0
        for _ in range(200):
            waiters = max(waiters, s.renewal_waiters)
            if waiters or not t.is_alive():
                break
            time.sleep(0.005)
        t.join(10)
    assert waiters == 1  # the Bearer refresh counts as waiting on a renewal
    assert len(errors) == 1 and isinstance(errors[0], KSError), errors
    texts = [str(errors[0]), str(errors[0].__context__)]
    assert any(
        x.startswith("gave up after 0.3s waiting for another thread's gateway token refresh")
        for x in texts
    ), texts
    assert asked == [] and s.state is A  # nothing was decided without the lock


# --- the gateway token's provider -----------------------------------------------------------------


def test_each_refresh_of_the_bearer_token_is_one_generation(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(make_credentials(access_token_provider=lambda: "demo-access-token"))
    s.connect()
    for n in (1, 2):
        sb.control.fault(ORDERS, status=401, code=900901)
        assert s.get(ORDERS).status_code == 200
        assert s.snapshot().bearer_generation == n
        assert s.identity().access_token.reveal() == "demo-access-token"


@pytest.mark.parametrize(
    ("provider", "error", "text"),
    [
        (lambda: 1 / 0, GatewayAuthError, "access_token_provider failed: ZeroDivisionError"),
        (lambda: 42, ConfigurationError, "access_token_provider must give a non-empty string"),
        (lambda: "bad\ntoken", ConfigurationError, "access_token_provider's token"),
    ],
    ids=["raises", "not-a-string", "not-header-safe"],
)
def test_a_failing_token_provider_is_named(
    new_session: Factory, sb: Sandbox, provider: Any, error: type[KSError], text: str
) -> None:
    s = new_session(make_credentials(access_token_provider=provider))
    s.connect()
    sb.control.fault(ORDERS, status=401, code=900901)
    with pytest.raises(KSError) as info:
        s.get(ORDERS)
    found = [e for e in (info.value, info.value.__cause__, info.value.__context__) if e]
    assert any(isinstance(e, error) and str(e).startswith(text) for e in found), found
    assert s.snapshot().bearer_generation == 0


# --- re-login and the proactive refresh -----------------------------------------------------------


def test_with_auto_relogin_off_an_expired_session_asks_for_connect(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(auto_relogin=False)
    s.connect()
    sb.control.expire()
    with pytest.raises(SessionExpired):
        s.get(ORDERS)
    assert s.state is not A and s.generation == 1
    with pytest.raises(InvalidTransition) as info:
        s.get(ORDERS)
    assert str(info.value).startswith(
        f"requests need Authenticated, session is {s.state.value}: call connect() first"
    )
    assert stats_logins(sb) == 1


def stats_logins(sb: Sandbox) -> int:
    return int(sb.control.stats()["logins"])


def test_a_relogin_missing_both_secrets_names_both(new_session: Factory, sb: Sandbox) -> None:
    creds = make_credentials(password=OneShot("demo-password"), access_code=OneShot("1234"))
    s = new_session(creds)
    s.connect()
    sb.control.expire()
    with pytest.raises(ReloginNeedsHuman) as info:
        s.get(ORDERS)
    needs = [table.GUARDS[g].needs for g in ("has_password", "has_access_code")]
    assert str(info.value).startswith(f"automatic re-login needs {needs[0]} and {needs[1]}")


def _aged(new_session: Factory, clock: Clock, **opts: Any) -> KSSession:
    s = new_session(max_session_age=1000, soft_window=100, **opts)
    s.connect()
    return s


def test_a_failed_soft_refresh_is_tried_again_exactly_at_its_retry_time(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = _aged(new_session, clock)
    clock.advance(950)
    sb.control.fault(contract.LOGIN_USERID[1], status=503, count=10)
    assert s.get(ORDERS).status_code == 200
    assert s.history[-1].outcome == "failed" and s.snapshot().refresh_retry_at == clock.now + 12.5
    clock.advance(12.5)  # a quarter of the 50 s left: exactly the retry time
    sb.control.fault(contract.LOGIN_USERID[1], status=503, count=10)
    assert s.get(ORDERS).status_code == 200
    assert [r.outcome for r in s.history if r.trigger == "refresh"] == ["failed", "failed"]


def test_a_soft_refresh_adopts_the_session_another_process_renewed(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    store = MemoryStore()
    first = _aged(new_session, clock, store=store)
    second = _aged(new_session, clock, store=store)  # adopts the first's session
    assert stats_logins(sb) == 1 and second.generation == 1
    clock.advance(950)
    assert first.get(ORDERS).status_code == 200 and first.generation == 2
    assert second.get(ORDERS).status_code == 200
    assert second.generation == 2 and stats_logins(sb) == 2  # adopted, no login of its own
    last = second.history[-1]
    assert (last.trigger, last.src, last.dst, last.reason) == ("restore", A, A, "store")


def test_a_bearer_rejection_met_during_a_refresh_leaves_the_new_session_alone(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = _aged(new_session, clock, timeout=(5.0, 5.0))
    clock.advance(950)
    sb.control.fault(TWO_FA, delay=1.0)
    t = threading.Thread(target=lambda: s.get(ORDERS))
    t.start()
    for _ in range(500):  # until the refresh's 2FA reached the sandbox (the lock is held)
        if sb.control.stats()["calls"].get(f"POST {TWO_FA}", 0) == 2:
            break
        time.sleep(0.01)
    sb.control.fault(ORDERS, status=401, code=900901)
    with pytest.raises(GatewayAuthError):
        s.get(ORDERS)  # sent with the old session; by the time it may act, a new one exists
    t.join(10)
    assert s.state is A and s.generation == 2
    assert "gateway_rejected" not in [r.trigger for r in s.history]
