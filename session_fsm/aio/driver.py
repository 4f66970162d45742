"""Runs the core's flows on asyncio: performs each effect with ``await`` (the async wire, the
async token store, an ``asyncio.Lock``) and sends the result back in (or throws the error in).

The same flows as the sync driver's (:mod:`session_fsm.sync.driver`); only how an effect is
performed differs. The session's lock is an ``asyncio.Lock``, which any task may release, so a
flow resumed in another task (as httpx does with an auth flow) keeps its single flight. A task
cancelled in the middle of a flow has the cancellation thrown into the flow, whose ``finally``
clauses give back what it holds; the driver releases anything still held as a last resort.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..core import effects as fx
from ..core.calls import SessionCall
from ..core.effects import STORE_OPS, Held, release
from ..credentials import produce_awaited
from ..errors import Call
from .stores import AsyncTokenStore, acquire_within, free
from .wire import AsyncWire

T = TypeVar("T")
SendFn = Callable[[fx.Send], Awaitable[fx.Reply]]


class AsyncDriver:
    """The effects of one session, awaited (shareable between the tasks of one loop)."""

    def __init__(self, wire: AsyncWire, store: AsyncTokenStore) -> None:
        self.wire = wire
        self.store = store
        self.lock = asyncio.Lock()
        #: The store's records as a sync store whose operations never block (the memory
        #: store's), performed right in the loop below; None: every store operation is awaited.
        self.immediate: Any = getattr(store, "immediate", None)
        #: The event loop the last flow ran on: the session's (its lock and pool are there).
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Tasks waiting now for a re-login (``Lock(waiter=True)``).
        self.waiting: list[object] = []

    async def run(self, flow: fx.Flow[T], send: SendFn | None = None) -> T:
        """Run ``flow`` to its end; ``send`` performs its trading Send effects."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop and self.loop is not None:
            home = self.loop
            if home.is_running() and not home.is_closed():
                # The session's loop runs in another thread: the flow runs there, single
                # flight with its tasks (an asyncio lock serves one loop), and this task waits.
                done = asyncio.run_coroutine_threadsafe(self.run(flow, send), home)
                return await asyncio.wrap_future(done)
            if not self.lock.locked():  # that loop has ended: this one is the session's now;
                self.lock = asyncio.Lock()  # a lock that waited there is bound to it for good
        self.loop = loop
        steps = fx.Steps(flow)
        held = steps.held
        immediate = self.immediate
        try:
            for effect in steps:
                try:  # the common effects are performed here: one coroutine less per effect
                    kind = type(effect)
                    if kind is SessionCall:
                        steps.value = await self.wire.exchange(effect)
                    elif immediate is not None and kind in STORE_OPS:
                        steps.value = effect.apply(immediate)
                    else:
                        steps.value = await self.perform(effect, held, send)
                except BaseException as exc:  # thrown into the flow (cancellation too)
                    steps.error = exc
            return steps.result  # type: ignore[no-any-return]
        finally:
            for _, release_held in reversed(held):  # a flow closed half-way: nothing stays held
                await release_held()

    async def perform(self, effect: Any, held: list[Held], send: SendFn | None) -> Any:
        """Perform one effect (see :mod:`session_fsm.core.effects`)."""
        kind = type(effect)
        if kind is SessionCall:
            return await self.wire.exchange(effect)
        if kind is fx.Send:
            assert send is not None, "a trading request needs a send function"
            return await send(effect)
        if isinstance(effect, fx.StoreOp):
            return await getattr(self.store, effect.op)(*effect.args())
        if kind is fx.ReadAnswer:
            return effect.reply.handle.answer(Call.TRADING, self.wire.config.max_answer_bytes)
        if kind is fx.Discard:
            return None  # the async wire reads every answer whole: nothing to give back
        if kind is fx.Lock:
            return await self._lock(effect, held)
        if kind is fx.StoreLock:
            manager = self.store.lock(effect.key, effect.timeout)
            if not await manager.__aenter__():
                await manager.__aexit__(None, None, None)
                return False
            held.append((effect.key, functools.partial(manager.__aexit__, None, None, None)))
            return True
        if kind in (fx.Unlock, fx.StoreUnlock):
            await release(held, getattr(effect, "key", None))()
            return None
        if kind is fx.Ask:  # the application's code: awaited, or in a worker thread
            return await produce_awaited(effect.provider, effect.what)
        raise TypeError(f"no driver for effect {kind.__name__}")

    async def _unlock(self) -> None:
        self.lock.release()

    async def _lock(self, effect: fx.Lock, held: list[Held]) -> bool:
        lock = self.lock
        if not effect.wait:
            got = free(lock) and await lock.acquire()
        elif not effect.waiter or free(lock):
            got = await acquire_within(lock, effect.timeout)
        else:
            me = object()
            self.waiting.append(me)
            try:
                got = await acquire_within(lock, effect.timeout)
            finally:
                self.waiting.remove(me)
        if got:
            held.append((None, self._unlock))
        return got
