"""Async token stores for asyncio programs: memory, file, Redis, and any sync store by threads.

The same records in the same media as the sync stores (:mod:`session_fsm.stores`), so a sync
process and an async process can share one file or one Redis, and wait on each other's locks:

- :class:`AsyncMemoryStore`: in-process, per-key ``asyncio`` locks.
- :class:`AsyncFileStore`: the sync :class:`~session_fsm.file_store.FileStore` run in worker
  threads, so the event loop never waits on the disk or on another process's lock.
- :class:`~session_fsm.aio.redis_store.AsyncRedisStore` (in its own module): ``redis.asyncio``
  with the sync store's keys, codec, fenced-save script, lock token and lock renewal (a task
  instead of a thread); see :mod:`session_fsm.redis_base`, which both use.
- :class:`AsyncThreadedStore`: any sync :class:`~session_fsm.stores.TokenStore` (a user's
  own) in worker threads.

A re-login lock is an ``async with store.lock(key, timeout) as got:``. It may be released by
another task than the one that took it (nothing in it is bound to a task or a thread), and a
task cancelled while waiting for it leaves nothing held.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..file_store import FileStore
from ..stores import (
    MemoryStore,
    StoredCooldown,
    StoredSession,
    TokenStore,
    clear_cooldown,
    is_async_store,
    load_cooldown,
    parse_store_spec,
    save_cooldown,
)

T = TypeVar("T")


@runtime_checkable
class AsyncTokenStore(Protocol):
    """The async form of :class:`~session_fsm.stores.TokenStore`, cool-downs included.

    ``load``/``save``/``delete`` raise :class:`~session_fsm.stores.StoreError` when the medium
    fails. ``lock(key, timeout)`` is an async context manager yielding whether the re-login
    lock was got within ``timeout`` seconds; it must be releasable from another task and leave
    nothing held when the waiting task is cancelled.
    """

    async def load(self, key: str) -> StoredSession | None:
        """The stored session for ``key``, or None."""
        ...

    async def save(self, key: str, session: StoredSession) -> bool | None:
        """Store ``session`` under ``key``; False when a fenced store refused it (a record as
        new or newer is stored)."""
        ...

    async def delete(self, key: str) -> None:
        """Forget ``key``'s session."""
        ...

    def lock(self, key: str, timeout: float) -> contextlib.AbstractAsyncContextManager[bool]:
        """Hold the re-login lock for ``key``; yields False if not acquired within ``timeout``."""
        ...

    async def load_cooldown(self, key: str) -> StoredCooldown | None:
        """The login cool-down kept for ``key``, or None."""
        ...

    async def save_cooldown(self, key: str, cooldown: StoredCooldown) -> None:
        """Keep a login cool-down for ``key``."""
        ...

    async def clear_cooldown(self, key: str) -> None:
        """Forget ``key``'s login cool-down."""
        ...


async def to_the_end(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if this task is cancelled meanwhile, then re-raise the
    cancellation: a lock release cut in half would leave the lock held."""
    future = asyncio.ensure_future(step)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():  # the step itself was cancelled, not us
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


class AsyncThreadedStore:
    """Any sync :class:`~session_fsm.stores.TokenStore` for async code: each operation runs in
    a worker thread (``asyncio.to_thread``), each lock is held by a thread of its own from
    acquire to release, so the event loop never blocks on the store's I/O or lock waits."""

    def __init__(self, sync_store: TokenStore) -> None:
        self.sync_store = sync_store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sync_store!r})"

    async def _call(self, operation: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(operation, *args)

    async def load(self, key: str) -> StoredSession | None:
        """The stored session for ``key``, or None."""
        return await self._call(self.sync_store.load, key)

    async def save(self, key: str, session: StoredSession) -> bool | None:
        """Store ``session`` under ``key`` (what the sync store's save returns)."""
        return await self._call(self.sync_store.save, key, session)

    async def delete(self, key: str) -> None:
        """Forget ``key``'s session."""
        await self._call(self.sync_store.delete, key)

    async def load_cooldown(self, key: str) -> StoredCooldown | None:
        """The login cool-down kept for ``key`` (None also when the sync store keeps none)."""
        return await self._call(load_cooldown, self.sync_store, key)

    async def save_cooldown(self, key: str, cooldown: StoredCooldown) -> None:
        """Keep a login cool-down for ``key``, if the sync store keeps cool-downs."""
        await self._call(save_cooldown, self.sync_store, key, cooldown)

    async def clear_cooldown(self, key: str) -> None:
        """Forget ``key``'s login cool-down."""
        await self._call(clear_cooldown, self.sync_store, key)

    @contextlib.asynccontextmanager
    async def lock(self, key: str, timeout: float) -> AsyncIterator[bool]:
        """Hold ``key``'s re-login lock (the sync store's, in a thread of its own); yields
        False if not acquired within ``timeout``."""
        hold = _ThreadHold(self.sync_store, key, timeout)
        got = await hold.take()
        try:
            yield got
        finally:
            await hold.let_go()


_hold_ids = itertools.count(1)


class _ThreadHold:
    """One hold of a sync store's lock, in a thread that enters its ``with`` and leaves it when
    told: a thread-bound lock (filelock's) is then taken and released by the same thread, while
    the async side may let go from any task."""

    def __init__(self, store: TokenStore, key: str, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._taken: asyncio.Future[bool] = self._loop.create_future()
        self._ended: asyncio.Future[None] = self._loop.create_future()
        # An error with nobody left to await it (the taker was cancelled) is marked retrieved,
        # so asyncio does not log it (with its traceback's text) when the future is collected.
        self._ended.add_done_callback(_retrieved)
        self._let_go = threading.Event()
        self._holding = threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(store, key, timeout),
                                        name=f"session_fsm-store-lock-{next(_hold_ids)}",
                                        daemon=True)  # fmt: skip

    def _hold(self, store: TokenStore, key: str, timeout: float) -> None:
        told = False
        failure: BaseException | None = None
        try:
            with store.lock(key, timeout) as got:
                if got:
                    self._holding.set()
                self._settle(self._taken, got)
                told = True
                if got:
                    self._let_go.wait()
        except BaseException as exc:
            failure = exc
        self._holding.clear()
        if failure is not None and not told:
            self._settle(self._taken, failure)  # the taker raises it
            failure = None
        self._settle(self._ended, failure)  # the release raises what came after the take

    def _settle(self, future: asyncio.Future[Any], outcome: object) -> None:
        """Hand ``outcome`` (a value or an exception) to ``future`` on the loop's thread."""

        def settle() -> None:
            if future.done():  # cancelled: the taker stopped waiting
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(settle)

    async def take(self) -> bool:
        """Start the thread and wait for its lock. Cancelled, this returns at once and the
        thread lets go of the lock as soon as it gets it (or gives up after ``timeout``)."""
        self._thread.start()
        try:
            return await self._taken
        except asyncio.CancelledError:
            self._let_go.set()
            if self._holding.is_set():  # got it just now: see it released before going
                with contextlib.suppress(Exception):
                    await to_the_end(self._ended)
            raise

    async def let_go(self) -> None:
        """Tell the thread to leave its ``with`` (releasing the lock) and wait until it has."""
        self._let_go.set()
        await to_the_end(self._ended)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class AsyncFileStore(AsyncThreadedStore):
    """Sessions in a JSON file (the sync :class:`~session_fsm.file_store.FileStore`'s file and
    locks, shared with sync processes), its I/O and lock waits in worker threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file_store = FileStore(path)
        super().__init__(self.file_store)

    @property
    def path(self) -> Path:
        """The token file."""
        return self.file_store.path


class AsyncMemoryStore(AsyncThreadedStore):
    """In-process store: the records of a :class:`~session_fsm.stores.MemoryStore` (read and
    written on the loop: they never block) and a per-key ``asyncio.Lock`` (one event loop)."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self._locks: dict[str, asyncio.Lock] = {}
        #: The records' store: its operations never block, so a driver may perform them
        #: right away on the loop instead of awaiting the methods below (not for a subclass,
        #: which may have its own methods).
        self.immediate = self.sync_store if type(self) is AsyncMemoryStore else None

    async def _call(self, operation: Callable[..., T], *args: Any) -> T:
        return operation(*args)

    def lock(  # type: ignore[override]  # (the base's is typed as its generator's manager)
        self, key: str, timeout: float
    ) -> contextlib.AbstractAsyncContextManager[bool]:
        """A per-key asyncio lock; yields whether it was acquired within ``timeout``."""
        lock = self._locks.get(key)
        if lock is None or _bound_to_an_ended_loop(lock):
            lock = self._locks[key] = asyncio.Lock()
        return _Hold(lock, timeout)


def _bound_to_an_ended_loop(lock: asyncio.Lock) -> bool:
    """Whether ``lock`` is free and bound to an event loop that has ended: an asyncio lock
    binds to the loop of its first waiter for good, and refuses any other loop's waiter (a
    store used in one ``asyncio.run`` and then in another)."""
    loop = getattr(lock, "_loop", None)
    return loop is not None and loop.is_closed() and not lock.locked()


class _Hold(contextlib.AbstractAsyncContextManager[bool]):
    """One hold of an asyncio lock: taken on entry within ``timeout`` (entry answers whether
    it was), released on exit if it was taken. (A class, not a generator: a connect takes one.)"""

    __slots__ = ("_got", "_lock", "_timeout")

    def __init__(self, lock: asyncio.Lock, timeout: float) -> None:
        self._lock, self._timeout, self._got = lock, timeout, False

    async def __aenter__(self) -> bool:
        self._got = await acquire_within(self._lock, self._timeout)
        return self._got

    async def __aexit__(self, *exc: object) -> None:
        if self._got:
            self._got = False
            self._lock.release()


def free(lock: asyncio.Lock) -> bool:
    """Whether ``lock.acquire()`` takes ``lock`` now, without suspending: it is unlocked and
    no waiter is queued for it. (A released lock goes to its first waiter, which takes it when
    its task next runs: ``locked()`` is False meanwhile, yet an ``acquire()`` then waits,
    without bound, behind that waiter's whole hold.)"""
    return not lock.locked() and not getattr(lock, "_waiters", None)


async def acquire_within(lock: asyncio.Lock, timeout: float) -> bool:
    """Acquire ``lock`` within ``timeout`` seconds; a cancelled or timed-out wait holds nothing."""
    if free(lock):
        return await lock.acquire()  # taken without suspending, so never cut short
    waiter = asyncio.ensure_future(lock.acquire())
    try:
        await asyncio.wait({waiter}, timeout=max(timeout, 0.0))
    except BaseException:
        if _won(waiter):  # taken just as we were cancelled
            lock.release()
        waiter.cancel()
        raise
    if _won(waiter):
        return True
    waiter.cancel()  # an acquire cancelled before it returns never holds the lock
    return False


def _won(waiter: asyncio.Future[Any]) -> bool:
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None


def open_async_store(spec: str | AsyncTokenStore | TokenStore | None) -> AsyncTokenStore:
    """An async store from an object or the strings :func:`~session_fsm.stores.open_store`
    takes (``memory:``, ``file:PATH``, ``redis://...``). A sync store object is run in threads
    (:class:`AsyncThreadedStore`). No I/O happens here."""
    if spec is None:
        return AsyncMemoryStore()
    if is_async_store(spec) and isinstance(spec, AsyncTokenStore):
        return spec
    if isinstance(spec, TokenStore) and not is_async_store(spec):
        return AsyncThreadedStore(spec)
    kind, where = parse_store_spec(spec)
    if kind == "file":
        return AsyncFileStore(where)
    if kind == "redis":
        from .redis_store import AsyncRedisStore

        return AsyncRedisStore.from_url(where)
    return AsyncMemoryStore()
