"""The async session's heartbeat: :class:`AsyncHeartbeat`, an asyncio task per session.

``AsyncKSSession(..., heartbeat=SECONDS)``: every decision (when a beat is due, whether there is
anything to check, the call it makes, what it records and logs) is the shared
:class:`~session_fsm.heartbeat.Pulse`'s, as for the sync session's thread; this task only
sleeps and awaits the call. It starts on the running loop: at construction inside a coroutine,
else at the session's first awaited call or ``async with``. ``close()`` and ``logout()`` stop
it (cancelling a beat under way, which leaves the session consistent: see the driver).

It sleeps on a *waiter*: ``await wait(timeout) -> stopped?`` and ``set()``. The default sleeps
with ``asyncio.sleep``; tests pass one they step by hand, with an injected clock.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from ..heartbeat import BEAT_IDLE, Pulse

if TYPE_CHECKING:
    from .session import AsyncKSSession

#: Heartbeat tasks running now: asyncio keeps only weak references to tasks.
_RUNNING: set[asyncio.Task[None]] = set()


class AsyncWaiter(Protocol):
    """How the heartbeat task sleeps."""

    async def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds; True when :meth:`set` was called (stop)."""

    def set(self) -> None:
        """Stop: the next :meth:`wait` (or the one under way) returns True."""


class SleepWaiter:
    """The default waiter: ``asyncio.sleep`` (the task is cancelled to stop it sooner)."""

    def __init__(self) -> None:
        self.stopped = False

    async def wait(self, timeout: float | None = None) -> bool:
        """Sleep ``timeout`` seconds; True once :meth:`set` was called."""
        if not self.stopped:
            await asyncio.sleep(timeout or 0)
        return self.stopped

    def set(self) -> None:
        """Stop."""
        self.stopped = True


class AsyncHeartbeat(Pulse["AsyncKSSession"]):
    """The heartbeat task of one async session (see the module docstring)."""

    def __init__(
        self, session: AsyncKSSession, interval: float, waiter: AsyncWaiter | None = None
    ) -> None:
        super().__init__(session, interval)
        self._waiter: AsyncWaiter = waiter if waiter is not None else SleepWaiter()
        self._name = f"session-fsm-heartbeat-{session.session_id}"
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the task is running."""
        return self.task is not None and not self.task.done()

    def ensure(self) -> None:
        """Start the task on the running loop unless it runs or was stopped (no loop: later).
        A task that ended with its loop (``asyncio.run`` returned) is started again."""
        task = self.task
        if self._stopped or (task is not None and not task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.task = task = loop.create_task(self._run(), name=self._name)
        _RUNNING.add(task)
        task.add_done_callback(_RUNNING.discard)

    async def stop(self) -> None:
        """Stop the task and wait for it to end (a beat under way is cancelled). Idempotent."""
        self._stopped = True
        self._waiter.set()
        task = self.task
        if task is None or task.done() or task is asyncio.current_task():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            return  # another loop's task: it ends there, at its next wake
        task.cancel()
        await asyncio.wait({task})

    async def _run(self) -> None:
        while (pause := self._pause()) is not None:
            if pause > 0:
                if await self._waiter.wait(pause):
                    return
                continue
            await self.beat()

    async def beat(self) -> str:
        """Check the session once now (the task calls this when a beat is due); the shared
        rules of :meth:`Heartbeat.beat <session_fsm.heartbeat.Heartbeat.beat>`."""
        begun = self._begin()
        if begun is None:
            return BEAT_IDLE
        session, method, path = begun
        try:
            await session.request(method, path)
        except Exception as exc:  # a KSError, or anything else: the task must live on
            return self._end(session, exc)
        return self._end(session, None)
