"""Behaviour of the sans-IO core that the third mutation run (docs/mutation.md) found untested.

A third companion of :mod:`tests.test_core_mutants`: each test pins something a surviving
mutant of ``session_fsm/core`` changed while every other test of the selection still passed.
Through the public API, against the sandbox over real loopback HTTP.
"""

from __future__ import annotations

from collections.abc import Callable

import requests

from session_fsm import KSSession, MemoryStore, State, contract
from session_fsm.sandbox import Sandbox
from session_fsm.stores import StoredSession, StoreError
from tests.conftest import Clock, LogCapture

Factory = Callable[..., KSSession]
ORDERS = contract.ORDERS_REPORT[1]
LOGIN = contract.LOGIN_USERID[1]


# --- the requests auth when no usable session can be had --------------------------------------


def test_the_auths_unrenewed_request_is_logged_with_its_session(
    new_session: Factory, sb: Sandbox, clock: Clock, logs: LogCapture
) -> None:
    s = new_session(max_session_age=3600.0, soft_window=60.0)
    s.connect()
    clock.advance(3600 + 1)  # past the hard deadline: the auth renews before sending
    sb.control.fault(LOGIN, status=500, count=100)  # and the renewal fails
    r = requests.get(s.snapshot().host + ORDERS, auth=s.auth, timeout=5)
    assert r.status_code == 401
    events = [e for e in logs.events() if e["event"] == "request_not_renewed"]
    assert [(e["session_id"], e["method"], e["error"]) for e in events] == [
        (s.session_id, "GET", "ServiceUnavailable")
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
