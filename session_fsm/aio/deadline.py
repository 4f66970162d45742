"""The async wire's total deadline: one event-loop timer for all the calls of one pool.

Each call of :class:`~session_fsm.aio.wire.AsyncWire` (connect, queueing for a pooled
connection, the whole answer, retries and their waits) is bounded by ``WireConfig.deadline``.
aiohttp's ``ClientTimeout(total=...)`` would bound one attempt with a loop timer and a timer
context of its own per request; here one :class:`Deadlines` per pool (and so per event loop)
keeps the calls in the order they started (one wire, one ``deadline``: that is also the order
of their deadlines) and holds a single timer, set for the oldest unfinished call. When it
fires, every call past its deadline has its task cancelled, as aiohttp's own total timeout and
``asyncio.timeout`` do; the call then sees :data:`EXPIRED` and raises the wire's
deadline error instead of the cancellation (another cancellation of the same task is passed
on, as ``asyncio.timeout`` passes it on).
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Any

#: ``Watch[STATE]`` of a call still running, finished, or expired by the timer.
RUNNING, FINISHED, EXPIRED = 0, 1, 2
#: The fields of a watch (a list: made on every request, so no class of its own).
DEADLINE, TASK, CANCELLING, STATE = 0, 1, 2, 3

#: ``[deadline, task, task.cancelling() when watched, state]``.
Watch = list[Any]

#: Tasks count their cancellation requests (Python 3.11+: ``cancelling``/``uncancel``).
_COUNTED = sys.version_info >= (3, 11)


class Deadlines:
    """The calls of one pool in the order they started, and the one timer that expires them."""

    __slots__ = ("_calls", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: deque[Watch] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, deadline: float) -> Watch | None:
        """Watch the current task's call until ``deadline`` (loop time, not before any watched
        so far); None outside a task (the caller bounds the call another way). The caller sets
        ``watch[STATE] = FINISHED`` when the call ends, however it ends."""
        task = asyncio.current_task(self._loop)
        if task is None:
            return None
        calls = self._calls
        while calls and calls[0][STATE]:  # finished calls at the front (their task let go): gone
            calls.popleft()
        counted = task.cancelling() if _COUNTED else 0  # type: ignore[attr-defined]
        watch: Watch = [deadline, task, counted, RUNNING]
        calls.append(watch)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)
        return watch

    @staticmethod
    def expired(watch: Watch) -> bool:
        """Whether the cancellation the watched task is in is this watch's expiry alone (then
        it is taken back: the caller raises its deadline error instead)."""
        if watch[STATE] != EXPIRED:
            return False
        if not _COUNTED:  # (as aiohttp's timer on Python 3.10: an expiry's cancellation)
            return True
        left: int = watch[TASK].uncancel()
        ours: bool = left <= watch[CANCELLING]
        return ours

    def _expire(self) -> None:
        self._timer = None
        calls, now = self._calls, self._loop.time()
        while calls:
            first = calls[0]
            if first[STATE] == RUNNING:
                if first[DEADLINE] > now:
                    self._timer = self._loop.call_at(first[DEADLINE], self._expire)
                    return
                first[STATE] = EXPIRED
                first[TASK].cancel()
            calls.popleft()
            if first[STATE] != EXPIRED:
                first[TASK] = None  # a finished task's result is not kept alive here
