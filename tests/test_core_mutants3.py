"""Behaviour of the sans-IO core that the third mutation run (docs/mutation.md) found untested.

A third companion of :mod:`tests.test_core_mutants`: each test pins something a surviving
mutant of ``session_fsm/core`` changed while every other test of the selection still passed.
Through the public API, against the sandbox over real loopback HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from urllib.parse import urlsplit

import pytest
import requests

from session_fsm import (
    ConfigurationError,
    GatewayAuthError,
    InvalidTransition,
    KSSession,
    LoginRejected,
    MemoryStore,
    NotReplayable,
    ServiceUnavailable,
    State,
    contract,
)
from session_fsm.core.edges import redirect_url
from session_fsm.sandbox import Sandbox, SandboxConfig, run_sandbox
from session_fsm.secret import Secret
from session_fsm.stores import StoredSession, StoreError
from tests.conftest import FAST_RETRY, Clock, LogCapture, make_credentials

Factory = Callable[..., KSSession]
ORDERS = contract.ORDERS_REPORT[1]
LOGIN = contract.LOGIN_USERID[1]
PLACE = contract.ORDER_NORMAL[1]


# --- the requests auth when no usable session can be had --------------------------------------


def test_the_auths_unrenewed_request_is_logged_with_its_session(
    new_session: Factory, sb: Sandbox, clock: Clock, logs: LogCapture
) -> None:
    s = new_session(max_session_age=3600.0, soft_window=60.0)
    s.connect()
    clock.advance(3600 + 1)  # past the hard deadline: the auth renews before sending
    sb.control.fault(LOGIN, status=500, count=100)  # and the renewal fails
    host = s.snapshot().host
    r = requests.get(host + ORDERS + "?q=1", auth=s.auth, timeout=5)
    assert r.status_code == 401
    events = [e for e in logs.events() if e["event"] == "request_not_renewed"]
    # the path of the absolute URL asked for (not the host's path again, nor the query)
    path = urlsplit(host).path + ORDERS
    assert [(e["session_id"], e["method"], e["path"], e["error"]) for e in events] == [
        (s.session_id, "GET", path, "ServiceUnavailable")
    ]


class _UnreadableStore(MemoryStore):
    """A token store that cannot be read (Redis down)."""

    def load(self, key: str) -> StoredSession | None:
        raise StoreError("the store is down")


def test_a_store_that_cannot_be_read_before_the_first_send_gives_the_servers_answer(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    """The auth's contract holds before the first connect() too: a store error (not the
    program's mistake) is logged and the server answers the request without session headers;
    only InvalidTransition, which says "call connect()", is raised."""
    s = new_session(store=_UnreadableStore())
    r = requests.get(sb.url + ORDERS, auth=s.auth, timeout=5)
    assert r.status_code == 401
    assert contract.H_SESSION_TOKEN not in r.request.headers
    events = [e for e in logs.events() if e["event"] == "request_not_renewed"]
    assert [(e["session_id"], e["error"]) for e in events] == [(s.session_id, "StoreError")]
    assert s.state is State.UNINITIALISED


# --- a failed soft refresh ---------------------------------------------------------------------


def test_a_failed_soft_refresh_leaves_no_refresh_under_way(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = new_session(max_session_age=1000, soft_window=100)
    s.connect()
    clock.advance(950)  # in the soft window
    sb.control.fault(LOGIN, status=503, count=10)  # the refresh fails
    assert s.get(ORDERS).status_code == 200  # the old token still serves
    snap = s.snapshot()
    assert s.history[-1].trigger == "refresh" and s.history[-1].outcome == "failed"
    assert snap.state is State.AUTHENTICATED and snap.generation == 1
    assert snap.refreshing is False  # a bool, cleared (not merely falsy)
    assert snap.refresh_retry_at == clock.now + 12.5


# --- failed re-logins are counted -------------------------------------------------------------


def test_each_failed_relogin_is_counted_and_its_error_kept(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    assert (s.snapshot().relogins_failed, s.snapshot().relogin_error) == (0, None)
    sb.control.fault(LOGIN, status=503, count=100)  # every re-login fails
    for n in (1, 2):
        sb.control.expire()
        with pytest.raises(ServiceUnavailable):
            s.get(ORDERS)
        snap = s.snapshot()
        assert snap.relogins_failed == n
        assert isinstance(snap.relogin_error, ServiceUnavailable)


# --- a request not replayed after the Bearer token was refreshed ---------------------------------


def test_a_post_not_replayed_after_a_bearer_refresh_says_so_with_the_answer(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(
        make_credentials(access_token_provider=lambda: "demo-access-token"), replay_posts=False
    )
    s.connect()
    sb.control.fault(PLACE, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    with pytest.raises(NotReplayable) as info:
        s.post(PLACE, data="jData={}")
    assert str(info.value).startswith(
        "gateway token refreshed, but the POST was not sent again (replay_posts is off)"
    )
    assert (info.value.status, info.value.fault_code) == (401, contract.FAULT_GATEWAY_TOKEN)
    assert s.state is State.AUTHENTICATED and s.snapshot().bearer_generation == 1


# --- the cool-down a rejected login leaves ------------------------------------------------------


def test_a_rejected_login_keeps_its_status_and_fault_code_in_the_cooldown(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    store = MemoryStore()
    s = new_session(make_credentials(password="wrong"), store=store, cooldown=60)
    s.init()
    with pytest.raises(LoginRejected) as info:
        s.login()
    kept = s.snapshot().cooldown
    assert kept is not None and kept.stored
    want = (clock.now + 60, "LoginRejected", info.value.status, info.value.fault_code)
    assert info.value.status is not None
    assert (kept.until, kept.error, kept.status, kept.fault_code) == want
    stored = store.load_cooldown(s.store_key())
    assert stored is not None
    assert (stored.until, stored.error, stored.status, stored.fault_code) == want


def test_no_cooldown_is_kept_when_it_is_off(new_session: Factory, sb: Sandbox) -> None:
    store = MemoryStore()
    s = new_session(make_credentials(password="wrong"), store=store, cooldown=0)
    s.init()
    with pytest.raises(LoginRejected):
        s.login()
    assert s.snapshot().cooldown is None
    assert store.load_cooldown(s.store_key()) is None


def test_connect_adopts_a_newer_session_another_process_stored(
    new_session: Factory, sb: Sandbox
) -> None:
    store = MemoryStore()
    one, two = new_session(store=store, cooldown=0), new_session(store=store, cooldown=0)
    one.connect()
    two.connect()  # adopts generation 1 from the store
    last = two.history[-1]
    assert (last.trigger, last.reason, last.generation) == ("restore", "store", 1)
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    with pytest.raises(GatewayAuthError):
        two.get(ORDERS)  # no provider: back to Uninitialised
    sb.control.expire()
    assert one.get(ORDERS).status_code == 200  # renewed: generation 2, stored
    logins = sb.control.stats()["calls"].get(f"POST {LOGIN}", 0)
    two.connect()
    assert sb.control.stats()["calls"].get(f"POST {LOGIN}", 0) == logins  # no login of its own
    last = two.history[-1]
    assert (last.trigger, last.reason, last.generation) == ("restore", "store", 2)
    assert two.state is State.AUTHENTICATED


# --- the connect walk's remedies ----------------------------------------------------------------


def test_a_remedy_taken_by_connect_is_its_triggers_first_attempt(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    s = new_session()
    s.init()
    s.login()
    clock.advance(300 + 1)  # the one-time token is past ott_ttl: connect() logs in again first
    n = len(s.history)
    s.connect()
    taken = [(r.trigger, r.outcome, r.attempt) for r in s.history[n:]]
    assert taken == [("login", "ok", 1), ("authenticate", "ok", 1)]
    assert s.state is State.AUTHENTICATED


class _FencedStore:
    """A token store that refuses every new session, as a fencing store does when another
    process saved a newer one while this one's lock had lapsed."""

    def __init__(self) -> None:
        self._inner = MemoryStore()

    def load(self, key: str) -> StoredSession | None:
        return self._inner.load(key)

    def save(self, key: str, session: StoredSession) -> bool | None:
        return False

    def delete(self, key: str) -> None:
        self._inner.delete(key)

    def lock(self, key: str, timeout: float) -> AbstractContextManager[bool]:
        return self._inner.lock(key, timeout)


def test_a_new_session_the_store_refuses_is_logged_and_used(
    new_session: Factory, sb: Sandbox, logs: LogCapture
) -> None:
    s = new_session(store=_FencedStore(), logger=None)
    s.connect()
    assert s.state is State.AUTHENTICATED and s.get(ORDERS).status_code == 200
    refused = [e for e in logs.events() if e["event"] == "session_save_refused"]
    assert [(e["level"], e["session_id"], e["generation"]) for e in refused] == [
        ("warning", s.session_id, 1)
    ]


class _LeapingClock(Clock):
    """A clock that leaps past ott_ttl at every reading: every one-time token is stale."""

    def __call__(self) -> float:
        self.now += 301.0
        return self.now


def test_connect_gives_up_after_its_steps_when_it_goes_round_in_circles(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session(clock=_LeapingClock())
    with pytest.raises(InvalidTransition) as info:
        s.connect()  # login, stale, login again, ... never authenticate
    assert str(info.value).startswith("connect() did not reach Authenticated")
    assert (info.value.state, info.value.trigger) == ("OTT-issued", "connect")


class _Blank:
    """A secret provider of its own that gives an empty access code."""

    repeatable = True

    def available(self) -> bool:
        return True

    def get(self) -> str:
        return ""


def test_an_access_code_provider_giving_nothing_is_named(new_session: Factory, sb: Sandbox) -> None:
    s = new_session(make_credentials(access_code=_Blank()))
    s.init()
    s.login()
    with pytest.raises(ConfigurationError) as info:
        s.authenticate()
    assert "the access_code (Credentials(access_code=...))" in str(info.value)


def test_no_refresh_is_under_way_after_each_login_step(new_session: Factory, sb: Sandbox) -> None:
    s = new_session()
    s.init()
    s.login()
    snap = s.snapshot()
    assert (snap.state, snap.refreshing, snap.refresh_retry_at) == (State.OTT_ISSUED, False, None)
    assert snap.refreshing is False  # a bool, not merely falsy
    s.authenticate()
    snap = s.snapshot()
    assert snap.refreshing is False and snap.refresh_retry_at is None


@pytest.mark.parametrize(
    ("host", "port", "base"),
    [
        ("https://h.example/apiX/", None, "https://h.example/apiX"),  # only the slashes go
        ("https://h.example/apim", 8443, "https://h.example/apim"),  # a URL: its port is in it
        ("h.example", None, "https://h.example/apim"),
        ("h.example", 443, "https://h.example/apim"),
        ("h.example", 8443, "https://h.example:8443/apim"),
    ],
)
def test_a_redirects_host_becomes_a_base_url(host: str, port: int | None, base: str) -> None:
    assert redirect_url(host, port) == base


def test_a_session_back_to_uninitialised_goes_back_to_its_origin_host() -> None:
    with run_sandbox(SandboxConfig(redirect_host="http://localhost:{port}/apim")) as sb:
        s = KSSession(make_credentials(), host=sb.url, retry=FAST_RETRY, cooldown=0)
        try:
            s.connect()
            assert s.snapshot().host != sb.url  # the login redirected it to another host
            sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
            with pytest.raises(GatewayAuthError):
                s.get(ORDERS)  # no provider: gateway_rejected, back to Uninitialised
            assert s.state is State.UNINITIALISED and s.snapshot().host == sb.url
        finally:
            s.close()


def test_init_takes_the_redirects_base_url_as_it_is() -> None:
    """Only a trailing slash is dropped from the redirect's URL (here one ending in "X")."""
    with run_sandbox(SandboxConfig(redirect_host="http://localhost:{port}/apiX/")) as sb:
        s = KSSession(make_credentials(), host=sb.url, retry=FAST_RETRY)
        try:
            s.init()
            assert s.snapshot().host == f"http://localhost:{sb.port}/apiX"
        finally:
            s.close()


def test_an_ended_cooldown_is_forgotten_by_the_next_login(
    new_session: Factory, sb: Sandbox, clock: Clock
) -> None:
    passwords = iter(["wrong", "demo-password"])
    s = new_session(make_credentials(password=lambda: next(passwords)), cooldown=60)
    s.init()
    with pytest.raises(LoginRejected):
        s.login()
    assert s.snapshot().cooldown is not None
    with pytest.raises(LoginRejected):
        s.login()  # refused during the cool-down, and recorded as such
    last = s.history[-1]
    assert (last.trigger, last.outcome, last.reason) == ("login", "refused", "cooldown")
    clock.advance(60)  # the cool-down has ended
    s.login()
    assert s.state is State.OTT_ISSUED and s.snapshot().cooldown is None


def test_a_stored_session_on_a_host_off_the_allow_list_is_ignored_and_logged(
    new_session: Factory, sb: Sandbox, clock: Clock, logs: LogCapture
) -> None:
    store = MemoryStore()
    s = new_session(store=store, logger=None)
    foreign = StoredSession("https://evil.example/apim", "demo-user", Secret("t0k"), 5, clock.now)
    store.save(s.store_key(), foreign)
    s.connect()  # logs in itself
    assert s.state is State.AUTHENTICATED and s.snapshot().host == sb.url
    ignored = [e for e in logs.events() if e["event"] == "stored_session_ignored"]
    assert [(e["level"], e["session_id"]) for e in ignored][:1] == [("warning", s.session_id)]
    # (load_usable survivors 13, 14, 19, 20 of the fourth mutation run: the event's fields)
    assert ignored[0]["host"] == "evil.example" and "allow-list" in ignored[0]["why"]


def test_a_trigger_with_no_edge_is_refused_and_recorded_as_such(
    new_session: Factory, sb: Sandbox
) -> None:
    s = new_session()
    with pytest.raises(InvalidTransition):
        s.authenticate()  # no authenticate edge from Uninitialised
    last = s.history[-1]
    assert (last.trigger, last.outcome, last.reason) == ("authenticate", "refused", "no edge")


def test_bad_constructor_arguments_are_named(sb: Sandbox) -> None:
    with pytest.raises(ConfigurationError, match=r"^on_transition must be callable"):
        KSSession(make_credentials(), host=sb.url, on_transition=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"^credentials "):
        KSSession("demo-user", host=sb.url)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"^host "):
        KSSession(make_credentials(), host=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"^clock "):
        KSSession(make_credentials(), host=sb.url, clock=5)  # type: ignore[arg-type]
