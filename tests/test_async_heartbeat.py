"""The async session's heartbeat (issue 18, 3, for the async driver): an asyncio task that
finds a dead session and renews it before a trade does.

Against the sandbox over loopback HTTP, with the injected clock of conftest and a waiter the
test steps by hand (:class:`AsyncStepper`): the task is real, but it only moves when the test
says so, and no test sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from session_fsm import AsyncKSSession, ConfigurationError, contract
from session_fsm.aio.heartbeat import AsyncHeartbeat, SleepWaiter
from session_fsm.core.snapshot import TransitionRecord
from session_fsm.heartbeat import Heartbeat, Pulse
from session_fsm.sandbox import Sandbox
from session_fsm.table import State
from tests.conftest import FAST_RETRY, Clock, make_credentials

pytestmark = pytest.mark.anyio
ORDERS = contract.ORDERS_REPORT[1]
POSITIONS = contract.POSITIONS_TODAY[1]
Factory = Callable[..., AsyncKSSession]



class AsyncStepper:
    """A heartbeat waiter stepped by the test: ``wait`` parks the task until :meth:`step`."""

    def __init__(self) -> None:
        self._parked = asyncio.Semaphore(0)
        self._go = asyncio.Semaphore(0)
        self.stopped = False
        self.asked: list[float | None] = []

    async def wait(self, timeout: float | None = None) -> bool:
        self.asked.append(timeout)
        self._parked.release()
        await self._go.acquire()
        return self.stopped

    def set(self) -> None:
        self.stopped = True
        self._go.release()

    async def parked(self) -> float | None:
        """Until the task waits; the timeout it asked for (how long until a beat)."""
        await asyncio.wait_for(self._parked.acquire(), 10)
        return self.asked[-1]

    async def step(self) -> float | None:
        """Let the task run once (a beat if one is due by the clock) and park again."""
        self._go.release()
        return await self.parked()



def beating(new_async: Factory, seconds: float = 30.0, **options: Any) -> tuple[
    AsyncKSSession, AsyncStepper
]:  # fmt: skip
    stepper = AsyncStepper()
    return new_async(heartbeat=seconds, heartbeat_waiter=stepper, **options), stepper


def beats(s: AsyncKSSession) -> int:
    assert s.heartbeat is not None
    return s.heartbeat.beats


def test_the_thread_and_the_task_share_one_set_of_decisions() -> None:
    assert issubclass(Heartbeat, Pulse) and issubclass(AsyncHeartbeat, Pulse)
    for name in ("_pause", "_begin", "_end", "due", "_used"):
        assert name not in vars(Heartbeat) and name not in vars(AsyncHeartbeat), name


async def test_an_expired_session_is_renewed_by_the_heartbeat_task(
    sb: Sandbox, new_async: Factory, clock: Clock
) -> None:
    s, w = beating(new_async)  # made inside the running loop: the task starts at once
    await s.connect()
    assert await w.parked() == 30.0
    sb.control.expire()  # the server drops the session; the bot is idle
    logins = sb.control.stats()["logins"]
    clock.advance(30)
    assert await w.step() == 30.0  # one beat, then a full interval until the next
    assert beats(s) == 1 and s.heartbeat is not None and s.heartbeat.last_outcome == "ok"
    assert s.state is State.AUTHENTICATED and s.generation == 2
    assert sb.control.stats()["logins"] == logins + 1
    assert [(r.trigger, r.reason) for r in s.history if r.trigger == "session_expired"] == [
        ("session_expired", "expired")
    ]
    calls = sb.control.stats()["calls"]
    assert any(ORDERS in str(k) for k in calls), calls  # the default call: the orders report
    before = sb.control.stats()["logins"]
    await s.get(POSITIONS)  # the order path finds a live session: no login on its way
    assert sb.control.stats()["logins"] == before


async def test_a_request_postpones_the_beat(new_async: Factory, clock: Clock) -> None:
    s, w = beating(new_async)
    await s.connect()
    await w.parked()
    clock.advance(20)
    await s.get(ORDERS)
    clock.advance(15)
    assert await w.step() == pytest.approx(15.0)  # 30 s after the request, not the start
    assert beats(s) == 0


async def test_nothing_is_sent_before_the_first_login(
    sb: Sandbox, new_async: Factory, clock: Clock
) -> None:
    s, w = beating(new_async)
    await w.parked()
    clock.advance(31)
    assert await w.step() == 30.0
    assert beats(s) == 0 and sb.control.stats()["calls"] == {}


async def test_a_session_that_cannot_be_renewed_is_heard_at_once(
    sb: Sandbox, new_async: Factory, clock: Clock
) -> None:
    heard: list[TransitionRecord] = []
    s, w = beating(new_async, on_transition=lambda _s, rec: heard.append(rec))
    await s.connect()
    await w.parked()
    sb.control.expire()
    sb.control.fault(contract.LOGIN_USERID[1], status=401, code=contract.FAULT_WRONG_PASSWORD)
    heard.clear()
    clock.advance(30)
    await w.step()
    failed = [r for r in heard if r.outcome == "failed"]
    assert [(r.trigger, r.error, r.fault_code) for r in failed] == [
        ("login", "LoginRejected", contract.FAULT_WRONG_PASSWORD)
    ]
    assert s.state is not State.AUTHENTICATED
    assert s.heartbeat is not None and s.heartbeat.last_outcome == "LoginRejected"
    assert s.heartbeat.running  # the task lives on: the cool-down keeps it from hammering


async def test_a_custom_call_is_used(sb: Sandbox, new_async: Factory, clock: Clock) -> None:
    s, w = beating(new_async, heartbeat_call=("GET", POSITIONS))
    await s.connect()
    await w.parked()
    clock.advance(30)
    await w.step()
    calls = sb.control.stats()["calls"]
    assert any(POSITIONS in str(k) for k in calls) and not any(ORDERS in str(k) for k in calls)


@pytest.mark.parametrize("stop", ["close", "logout"])
async def test_close_and_logout_stop_the_task(new_async: Factory, stop: str) -> None:
    s, w = beating(new_async)
    await s.connect()
    await w.parked()
    assert s.heartbeat is not None and s.heartbeat.running
    await getattr(s, stop)()
    assert not s.heartbeat.running and w.stopped
    assert s.heartbeat.task is not None and s.heartbeat.task.done()
    await s.get(ORDERS) if stop == "close" else None  # a request does not start it again
    assert not s.heartbeat.running


async def test_a_beat_under_way_is_cancelled_by_close_and_nothing_stays_held(
    sb: Sandbox, new_async: Factory, clock: Clock
) -> None:
    s, w = beating(new_async)
    await s.connect()
    await w.parked()
    sb.control.fault(ORDERS, delay=5.0, count=1)  # the beat's call hangs in the sandbox
    clock.advance(30)
    w._go.release()  # let the task beat, without waiting for it to park again
    while sb.control.stats()["calls"].get(f"GET {ORDERS}", 0) == 0:
        await asyncio.sleep(0)  # (yield to the loop until the call reached the sandbox)
    await asyncio.wait_for(s.close(), 2)  # far less than the call's 5 s
    assert s.heartbeat is not None and not s.heartbeat.running
    assert not s._driver.lock.locked() and s.state is State.AUTHENTICATED


def test_made_outside_a_loop_it_starts_at_the_first_awaited_call(
    sb: Sandbox, clock: Clock
) -> None:
    w = AsyncStepper.__new__(AsyncStepper)  # its semaphores are made inside the loop below
    s = AsyncKSSession(make_credentials(), host=sb.url, clock=clock, heartbeat=30,
                       heartbeat_waiter=w, retry=FAST_RETRY)  # fmt: skip
    assert s.heartbeat is not None and not s.heartbeat.running

    async def main() -> tuple[bool, bool]:
        AsyncStepper.__init__(w)
        async with s:  # entering starts it
            started = s.heartbeat is not None and s.heartbeat.running
            await s.connect()
            await w.parked()
        return started, s.heartbeat is not None and s.heartbeat.running

    assert asyncio.run(main()) == (True, False)  # leaving (close) stopped it


async def test_off_by_default_and_bad_settings_are_named(new_async: Factory) -> None:
    assert new_async().heartbeat is None
    with pytest.raises(ConfigurationError, match="heartbeat must be > 0"):
        new_async(heartbeat=0)
    with pytest.raises(ConfigurationError, match="heartbeat_call"):
        new_async(heartbeat=5, heartbeat_call=("GET", "reports"))


async def test_the_default_waiter_is_stopped_at_once(new_async: Factory) -> None:
    s = new_async(heartbeat=3600)
    assert s.heartbeat is not None and s.heartbeat.running
    assert isinstance(s.heartbeat._waiter, SleepWaiter)
    await asyncio.wait_for(s.close(), 2)  # the hour-long sleep is cancelled, not waited out
    assert not s.heartbeat.running


async def test_a_session_dropped_without_close_is_collected_and_its_task_ends(
    sb: Sandbox, clock: Clock
) -> None:
    w = AsyncStepper()
    s = AsyncKSSession(make_credentials(), host=sb.url, clock=clock, heartbeat=30,
                       heartbeat_waiter=w)  # fmt: skip
    await w.parked()
    heartbeat = s.heartbeat
    assert heartbeat is not None and heartbeat.task is not None
    gone = weakref.ref(s)
    del s
    gc.collect()
    assert gone() is None  # the heartbeat task did not keep the session alive
    clock.advance(31)
    w._go.release()  # wake the task once: it finds no session and ends
    await asyncio.wait_for(asyncio.wait({heartbeat.task}), 5)
    assert not heartbeat.running
