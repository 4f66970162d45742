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
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from ..core import effects as fx
from ..core.calls import SessionCall
from ..errors import Call
from .stores import AsyncTokenStore, acquire_within
from .wire import AsyncWire

T = TypeVar("T")
SendFn = Callable[[fx.Send], Awaitable[fx.Reply]]


class AsyncDriver:
    """The effects of one session, awaited (shareable between the tasks of one loop)."""

    def __init__(self, wire: AsyncWire, store: AsyncTokenStore) -> None:
        self.wire = wire
        self.store = store
        self.lock = asyncio.Lock()
        #: Tasks waiting now for a re-login (``Lock(waiter=True)``).
        self.waiting: list[object] = []

    async def run(self, flow: fx.Flow[T], send: SendFn | None = None) -> T:
        """Run ``flow`` to its end; ``send`` performs its trading Send effects."""
        held: list[Callable[[], Awaitable[None]]] = []
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                done, effect = fx.advance(flow, value, error)
                if done:
                    return effect  # type: ignore[no-any-return]
                error = None
                try:
                    value = await self.perform(effect, held, send)
                except BaseException as exc:  # cancellation too: the flow's finally runs
                    value, error = None, exc
        finally:
            error = None
            for release in reversed(held):  # a flow closed half-way: nothing stays held
                await release()

    async def perform(
        self, effect: Any, held: list[Callable[[], Awaitable[None]]], send: SendFn | None
    ) -> Any:
        kind = type(effect)
        if kind is SessionCall:
            return await self.wire.exchange(effect)
        if kind is fx.Send:
            assert send is not None, "a trading request needs a send function"
            return await send(effect)
        if kind is fx.ReadAnswer:
            return effect.reply.handle.answer(Call.TRADING, self.wire.config.max_answer_bytes)
        if kind is fx.Discard:
            return None  # the async wire reads every answer whole: nothing to give back
        if kind is fx.Lock:
            return await self._lock(effect, held)
        if kind is fx.Unlock:
            held.remove(self._release)
            self.lock.release()
            return None
        if kind is fx.StoreLock:
            return await self._store_lock(effect, held)
        if kind is fx.StoreUnlock:
            for release in reversed(held):
                if getattr(release, "key", None) == effect.key:
                    held.remove(release)
                    await release()
                    break
            return None
        store = self.store
        if kind is fx.Load:
            return await store.load(effect.key)
        if kind is fx.Save:
            return await store.save(effect.key, effect.record)
        if kind is fx.Delete:
            return await store.delete(effect.key)
        if kind is fx.LoadCooldown:
            return await store.load_cooldown(effect.key)
        if kind is fx.SaveCooldown:
            return await store.save_cooldown(effect.key, effect.cooldown)
        if kind is fx.ClearCooldown:
            return await store.clear_cooldown(effect.key)
        raise TypeError(f"no driver for effect {kind.__name__}")

    async def _release(self) -> None:
        self.lock.release()

    async def _lock(self, effect: fx.Lock, held: list[Callable[[], Awaitable[None]]]) -> bool:
        lock = self.lock
        if not effect.wait:
            got = not lock.locked() and await lock.acquire()
        elif not effect.waiter or not lock.locked():
            got = await acquire_within(lock, effect.timeout)
        else:
            me = object()
            self.waiting.append(me)
            try:
                got = await acquire_within(lock, effect.timeout)
            finally:
                self.waiting.remove(me)
        if got:
            held.append(self._release)
        return got

    async def _store_lock(
        self, effect: fx.StoreLock, held: list[Callable[[], Awaitable[None]]]
    ) -> bool:
        manager = self.store.lock(effect.key, effect.timeout)
        got = bool(await manager.__aenter__())
        if not got:
            await manager.__aexit__(None, None, None)
            return False
        held.append(_Release(effect.key, manager))
        return True


class _Release:
    """Leaves an async store lock's context manager (a held store lock)."""

    __slots__ = ("key", "manager")

    def __init__(self, key: str, manager: AbstractAsyncContextManager[bool]) -> None:
        self.key = key
        self.manager = manager

    async def __call__(self) -> None:
        await self.manager.__aexit__(None, None, None)
