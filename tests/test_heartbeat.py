"""Heartbeat (issue 18, 3): a dead session is found and renewed in the background.

Against the sandbox over loopback HTTP, with the injected clock of conftest and a waiter the
test steps by hand (:class:`Stepper`): the heartbeat thread is real, but it only moves when the
test says so, and no test sleeps.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable

import pytest

from session_fsm import ConfigurationError, KSSession, contract
from session_fsm.core.snapshot import TransitionRecord
from session_fsm.sandbox import Sandbox
from session_fsm.table import State
from tests.conftest import Clock, make_credentials

ORDERS = contract.ORDERS_REPORT[1]
POSITIONS = contract.POSITIONS_TODAY[1]


class Stepper:
    """A heartbeat waiter stepped by the test: ``wait`` parks the loop until :meth:`step`."""

    def __init__(self) -> None:
        self._parked = threading.Semaphore(0)
        self._go = threading.Semaphore(0)
        self.stopped = False
        self.asked: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.asked.append(timeout)
        self._parked.release()
        self._go.acquire()
        return self.stopped

    def set(self) -> None:
        self.stopped = True
        self._go.release()

    def parked(self) -> float | None:
        """Block until the loop waits; the timeout it asked for (how long until a beat)."""
        assert self._parked.acquire(timeout=10), "the heartbeat loop never came back to wait"
        return self.asked[-1]

    def step(self) -> float | None:
        """Let the loop run once (a beat if one is due by the clock) and park again."""
        self._go.release()
        return self.parked()


Factory = Callable[..., KSSession]


def beating(new_session: Factory, seconds: float = 30.0, **options: object) -> tuple[
    KSSession, Stepper
]:
    stepper = Stepper()
    s = new_session(heartbeat=seconds, heartbeat_waiter=stepper, **options)
    return s, stepper


def test_an_expired_session_is_renewed_by_the_heartbeat_not_by_the_next_order(
    sb: Sandbox, new_session: Factory, clock: Clock
) -> None:
    s, w = beating(new_session)
    s.connect()
    assert w.parked() == 30.0
    sb.control.expire()  # the server drops the session; the bot is idle
    logins = sb.control.stats()["logins"]
    clock.advance(30)
    assert w.step() == 30.0  # one beat, then a full interval until the next
    assert s.heartbeat is not None and s.heartbeat.beats == 1
    assert s.state is State.AUTHENTICATED and s.generation == 2
    assert sb.control.stats()["logins"] == logins + 1
    assert [(r.trigger, r.reason) for r in s.history if r.trigger == "session_expired"] == [
        ("session_expired", "expired")
    ]
    calls = sb.control.stats()["calls"]
    assert any(ORDERS in str(k) for k in calls), calls  # the default call: the orders report
    before = dict(sb.control.stats())
    s.get(POSITIONS)  # the order path finds a live session: no login on its way
    assert sb.control.stats()["logins"] == before["logins"]


def test_a_request_postpones_the_beat(new_session: Factory, clock: Clock) -> None:
    s, w = beating(new_session)
    s.connect()
    w.parked()
    clock.advance(20)
    s.get(ORDERS)
    clock.advance(15)
    assert w.step() == pytest.approx(15.0)  # 30 s after the request, not after the start
    assert s.heartbeat is not None and s.heartbeat.beats == 0


def test_nothing_is_sent_before_the_first_login(sb: Sandbox, new_session: Factory,
                                                clock: Clock) -> None:  # fmt: skip
    s, w = beating(new_session)
    w.parked()
    clock.advance(31)
    assert w.step() == 30.0
    assert s.heartbeat is not None and s.heartbeat.beats == 0
    assert sb.control.stats()["calls"] == {}


def test_a_session_that_cannot_be_renewed_is_heard_at_once(
    sb: Sandbox, new_session: Factory, clock: Clock
) -> None:
    heard: list[TransitionRecord] = []
    s, w = beating(new_session, on_transition=lambda _s, rec: heard.append(rec))
    s.connect()
    w.parked()
    sb.control.expire()
    sb.control.fault(contract.LOGIN_USERID[1], status=401, code=contract.FAULT_WRONG_PASSWORD)
    heard.clear()
    clock.advance(30)
    w.step()
    failed = [r for r in heard if r.outcome == "failed"]
    assert [(r.trigger, r.error, r.fault_code) for r in failed] == [
        ("login", "LoginRejected", contract.FAULT_WRONG_PASSWORD)
    ]
    assert s.state is not State.AUTHENTICATED
    assert s.heartbeat is not None and s.heartbeat.last_outcome == "LoginRejected"


def test_a_custom_call_is_used(sb: Sandbox, new_session: Factory, clock: Clock) -> None:
    s, w = beating(new_session, heartbeat_call=("GET", POSITIONS))
    s.connect()
    w.parked()
    clock.advance(30)
    w.step()
    calls = sb.control.stats()["calls"]
    assert any(POSITIONS in str(k) for k in calls) and not any(ORDERS in str(k) for k in calls)


@pytest.mark.parametrize("stop", ["close", "logout"])
def test_close_and_logout_stop_the_thread(new_session: Factory, stop: str) -> None:
    s, w = beating(new_session)
    s.connect()
    w.parked()
    assert s.heartbeat is not None and s.heartbeat.running
    getattr(s, stop)()
    assert not s.heartbeat.running and w.stopped


def test_off_by_default_and_bad_settings_are_named(new_session: Factory) -> None:
    assert new_session().heartbeat is None
    with pytest.raises(ConfigurationError, match="heartbeat must be > 0"):
        new_session(heartbeat=0)
    with pytest.raises(ConfigurationError, match="heartbeat_call"):
        new_session(heartbeat=5, heartbeat_call=("GET", "reports"))


def test_default_waiter_stops_promptly(new_session: Factory) -> None:
    """With the real ``threading.Event``: close() wakes the sleeping thread at once."""
    s = new_session(heartbeat=3600)
    assert s.heartbeat is not None and s.heartbeat.running
    s.close()
    assert not s.heartbeat.running


def test_a_session_dropped_without_close_is_collected_and_its_thread_ends(
    sb: Sandbox, clock: Clock
) -> None:
    w = Stepper()
    s = KSSession(make_credentials(), host=sb.url, clock=clock, heartbeat=30,
                  heartbeat_waiter=w)  # fmt: skip
    w.parked()
    heartbeat = s.heartbeat
    assert heartbeat is not None
    gone = weakref.ref(s)
    del s
    gc.collect()
    assert gone() is None  # the heartbeat thread did not keep the session alive
    clock.advance(31)
    w._go.release()  # wake the loop once: it finds no session and ends
    heartbeat._thread.join(5)
    assert not heartbeat.running
