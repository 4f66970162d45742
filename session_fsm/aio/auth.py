"""``httpx.Auth`` for bots on httpx: ``httpx.AsyncClient(auth=session.auth)``, and
``httpx.Client(auth=session.auth)`` from the other threads of the program.

The flow is the one of :mod:`session_fsm.httpx_auth` (the session's headers; on an expired
session or a rejected Bearer token, the core's renewal with single flight and one replay by
the replay rule; answers returned, never raised). What is particular to an
:class:`~session_fsm.aio.session.AsyncKSSession` is where the core's flows run:

- ``httpx.AsyncClient``: awaited on the running loop. httpx may resume an auth flow in another
  task than the one that began it; the session's lock is an ``asyncio.Lock``, which any task
  may release, so single flight holds across tasks.
- ``httpx.Client`` (a worker thread of an asyncio bot, say): the headers come from the
  snapshot, read without blocking and without the loop; a renewal is run on the session's own
  event loop (the loop its last flow ran on), the thread waiting for it, so it is single flight
  with the session's tasks and its state and locks stay on that loop. On the loop's own thread
  (waiting there would stop the loop the renewal needs), or when no loop runs the session, it
  raises :class:`~session_fsm.errors.EventLoopUnavailable` instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, TypeVar

from ..core import effects as fx
from ..core.engine import SessionCore
from ..errors import EventLoopUnavailable
from ..httpx_auth import FlowAuth
from .driver import AsyncDriver

T = TypeVar("T")
#: How often a thread waiting for the loop's renewal checks that the loop still runs (s).
LOOP_CHECK_EVERY = 0.5


class HttpxAuth(FlowAuth):
    """The ``httpx.Auth`` of an :class:`~session_fsm.aio.session.AsyncKSSession` (see the
    module docstring): for ``httpx.AsyncClient``, and ``httpx.Client`` in other threads."""

    def __init__(self, core: SessionCore, driver: AsyncDriver, session: Any = None) -> None:
        self._core = core
        self._driver = driver
        self._session = session  # (kept alive with its auth: the core holds it weakly)

    def __repr__(self) -> str:
        return f"HttpxAuth(session={self._core.session_id})"

    async def arun(self, flow: fx.Flow[T]) -> T:
        return await self._driver.run(flow)

    def run(self, flow: fx.Flow[T]) -> T:
        """Run ``flow`` on the session's event loop and wait for it (``httpx.Client``)."""
        loop = self._driver.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            raise EventLoopUnavailable(
                "httpx.Client needs this AsyncKSSession's renewal, which runs on its event "
                "loop, and no event loop runs the session now"
            )
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            raise EventLoopUnavailable(
                "httpx.Client was used on the event loop thread of its AsyncKSSession, whose "
                "renewal must run on that loop: waiting for it there would stop the loop"
            )
        future = asyncio.run_coroutine_threadsafe(self._driver.run(flow), loop)
        try:
            while not future.done():
                concurrent.futures.wait((future,), timeout=LOOP_CHECK_EVERY)
                if not future.done() and (loop.is_closed() or not loop.is_running()):
                    raise EventLoopUnavailable(
                        "the event loop of this AsyncKSSession stopped before its renewal ended"
                    )
            if future.cancelled():  # the loop is shutting down (asyncio.run cancels its tasks)
                raise EventLoopUnavailable(
                    "the event loop of this AsyncKSSession cancelled the renewal (it is ending)"
                )
            return future.result()
        except BaseException:
            future.cancel()  # an interrupted thread: the flow on the loop is cancelled, and
            raise  # its finally clauses give back what it holds
