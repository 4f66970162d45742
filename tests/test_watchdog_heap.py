"""The sync wire's deadline watchdog holds the calls in flight, not every call of the last
``deadline`` seconds: a bot sending 1,000 requests a second with a 30 s deadline kept 30,000
finished calls on its heap (each until its deadline passed)."""

from __future__ import annotations

import time
from collections.abc import Callable

from session_fsm import KSSession, contract
from session_fsm.sandbox import Sandbox
from session_fsm.transport import _WATCHDOG, Call, _Watchdog

ORDERS = contract.ORDERS_REPORT[1]


def test_finished_calls_leave_the_deadline_heap() -> None:
    watchdog = _Watchdog()  # its own (the process's one serves the other tests' calls)
    for _ in range(50):
        call = Call(time.monotonic() + 60)
        watchdog.watch(call)
        watchdog.finish(call)
    assert len(watchdog._heap) == 1  # the last call; every earlier one left as the next came


def test_a_call_in_flight_stays_watched(new_session: Callable[..., KSSession], sb: Sandbox) -> None:
    watchdog = _Watchdog()
    slow = Call(time.monotonic() + 60)
    watchdog.watch(slow)  # in flight: never finished here
    for _ in range(5):
        call = Call(time.monotonic() + 60)
        watchdog.watch(call)
        watchdog.finish(call)
    assert watchdog._heap[0][2] is slow and not slow.expired
    s = new_session(deadline=60.0)  # and the wire's own watchdog still serves real calls
    s.connect()
    assert s.get(ORDERS).status_code == 200
    assert all(entry[2].deadline > time.monotonic() for entry in _WATCHDOG._heap)
