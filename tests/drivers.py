"""Both session drivers behind one sync-looking face, so one test runs against both (issue 16).

``SYNC.session(creds, host=..., **options)`` is a :class:`~session_fsm.KSSession`;
``ASYNC.session(...)`` is an :class:`~session_fsm.AsyncKSSession` seen through :class:`Blocking`:
every coroutine one of its methods returns is run to its end on one long-lived event loop (a
daemon thread of this process, shared by every async session of the run, so each wire keeps
its pool on that one loop) and its result returned, or its exception raised, in the caller's
thread. The readers (``state``, ``snapshot()``, ``history``, ``may()``, ...) are the session's
own. ``driver.memory_store()`` is the in-memory store of that driver (shared by the sessions
of one test, as two processes share a store).

The async session is only called between two of its awaited calls (each caller blocks until
its call is done), so the readers never see it half-way through a step.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from session_fsm import AsyncKSSession, KSSession, MemoryStore
from session_fsm.aio.stores import AsyncMemoryStore

T = TypeVar("T")
#: The longest one awaited call may take before the test fails (instead of hanging).
CALL_TIMEOUT = 120.0


class LoopThread:
    """An event loop running forever in a daemon thread; :meth:`run` awaits on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="tests-async-driver", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception) here."""
        assert threading.current_thread() is not self.thread, "called from the loop itself"
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise AssertionError(f"an async call took more than {timeout:g}s") from None


_LOOP: list[LoopThread] = []
_LOOP_MADE = threading.Lock()


def loop_thread() -> LoopThread:
    """The process's one loop thread (started at first use)."""
    with _LOOP_MADE:
        if not _LOOP:
            _LOOP.append(LoopThread())
        return _LOOP[0]


def _forget_the_loop_in_a_child() -> None:
    """A forked child (mutmut's workers fork the process that ran the tests once) inherits the
    loop but not its thread: nothing would run it, and every async call would wait
    CALL_TIMEOUT and fail. The child starts its own at first use."""
    global _LOOP_MADE
    _LOOP.clear()
    _LOOP_MADE = threading.Lock()


os.register_at_fork(after_in_child=_forget_the_loop_in_a_child)


class Blocking:
    """An :class:`AsyncKSSession` with sync-looking calls (see the module docstring)."""

    __slots__ = ("_loop", "_session")

    def __init__(self, session: AsyncKSSession, loop: LoopThread) -> None:
        self._session = session
        self._loop = loop

    @property
    def session(self) -> AsyncKSSession:
        """The async session itself."""
        return self._session

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._session, name)
        if not inspect.iscoroutinefunction(value):
            return value
        loop = self._loop

        def call(*args: Any, **kwargs: Any) -> Any:
            return loop.run(value(*args, **kwargs))

        return call

    def __repr__(self) -> str:
        return repr(self._session)


@dataclass(frozen=True)
class Driver:
    """How a test makes a session: ``sync`` (KSSession) or ``async`` (AsyncKSSession)."""

    name: str

    def session(self, *args: Any, **kwargs: Any) -> Any:
        """A session of this driver: the KSSession constructor's arguments."""
        if self.name == "sync":
            return KSSession(*args, **kwargs)
        return Blocking(AsyncKSSession(*args, **kwargs), loop_thread())

    def memory_store(self) -> Any:
        """A fresh in-memory token store for this driver's sessions."""
        return MemoryStore() if self.name == "sync" else AsyncMemoryStore()

    def __str__(self) -> str:
        return self.name


SYNC, ASYNC = Driver("sync"), Driver("async")
DRIVERS = (SYNC, ASYNC)


def concurrently(session: Any, method: str, path: str, n: int) -> list[Any]:
    """``n`` calls of ``session.<method>(path)`` at once: threads for a KSSession, tasks on
    the loop for an async one; the answers, or the first error raised."""
    if isinstance(session, Blocking):
        inner = session.session

        async def together() -> list[Any]:
            return list(await asyncio.gather(*(getattr(inner, method)(path) for _ in range(n))))

        return session._loop.run(together())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: getattr(session, method)(path), range(n)))


@contextmanager
def sessions_of(driver: Driver, url: str, clock: Callable[[], float]) -> Iterator[Any]:
    """A factory of ``driver``'s sessions on the sandbox at ``url``, with the defaults of the
    ``new_session`` fixture (fast retries, the injected clock); all closed on exit."""
    from tests.conftest import FAST_RETRY, make_credentials

    made: list[Any] = []

    def make(creds: Any = None, **options: Any) -> Any:
        options.setdefault("retry", FAST_RETRY)
        options.setdefault("timeout", (2.0, 2.0))
        options.setdefault("clock", clock)
        s = driver.session(creds or make_credentials(), host=url, **options)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.close()
