"""An async token store in Redis (``redis.asyncio``), interchangeable with the sync one.

Everything but the I/O is :mod:`session_fsm.redis_base`'s, shared with
:class:`~session_fsm.redis_store.RedisStore`: key names, record encoding, the fenced-save
script, the lock token, option checks, error wording and the renewal decisions. So a sync
process and an async process on one Redis read each other's sessions and wait on each other's
re-login locks. The lock is renewed by a task while held; a task cancelled while taking it
leaves nothing held.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..redis_base import (
    CLIENT_DEFAULTS,
    LockRenewal,
    RedisStoreBase,
    new_lock_token,
    split_store_url,
)
from ..stores import StoredCooldown, StoredSession, cooldown_key
from .stores import to_the_end


class AsyncRedisStore(RedisStoreBase):
    """Sessions in Redis through ``client`` (a ``redis.asyncio.Redis``), interchangeable with
    the sync :class:`~session_fsm.redis_store.RedisStore` on the same Redis.

    ``lock_ttl``/``max_hold`` as the sync store's: a held lock is renewed by a task every
    third of ``lock_ttl`` for at most ``max_hold`` seconds; saves are fenced by generation.
    """

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> AsyncRedisStore:
        """A store for ``redis://[:password@]host:port/db[?lock_ttl=S&max_hold=S]``: the same
        URLs as the sync store's. No I/O happens here."""
        client_url = split_store_url(url, kwargs)
        import redis
        from redis import asyncio as redis_asyncio

        # Its version given, redis-py does not look it up (files read on the event loop) at
        # each new connection.
        try:
            from redis.driver_info import DriverInfo
        except ImportError:  # redis-py < 7.1
            known: dict[str, Any] = {"lib_version": redis.__version__}
        else:
            known = {"driver_info": DriverInfo(lib_version=redis.__version__)}
        client = redis_asyncio.Redis.from_url(client_url, **known, **CLIENT_DEFAULTS)
        return cls(client, **kwargs)

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()

    async def load(self, key: str) -> StoredSession | None:
        """The session stored under ``key``, or None (also for a value that is not one)."""
        with self._talking("load"):
            return self._session_from(key, await self.client.get(key))

    async def save(self, key: str, session: StoredSession) -> bool:
        """Store ``session`` unless the stored one is as new or newer (False, nothing stored:
        one atomic compare-and-set, the sync store's script)."""
        with self._talking("save"):
            answer = await self._fenced_script()(keys=[key], args=self._session_value(session))
        return self._saved(key, session, answer)

    async def delete(self, key: str) -> None:
        """Forget ``key``'s session."""
        with self._talking("delete"):
            await self.client.delete(key)

    async def load_cooldown(self, key: str) -> StoredCooldown | None:
        """The login cool-down kept for ``key``, or None (also for a value that is not one)."""
        with self._talking("load"):
            return self._cooldown_from(key, await self.client.get(cooldown_key(key)))

    async def save_cooldown(self, key: str, cooldown: StoredCooldown) -> None:
        """Keep a login cool-down for ``key``; Redis deletes it when it ends."""
        value, ttl_ms = self._cooldown_value(cooldown)
        with self._talking("save"):
            await self.client.set(cooldown_key(key), value, px=ttl_ms)

    async def clear_cooldown(self, key: str) -> None:
        """Forget ``key``'s login cool-down."""
        with self._talking("delete"):
            await self.client.delete(cooldown_key(key))

    @contextlib.asynccontextmanager
    async def lock(self, key: str, timeout: float) -> AsyncIterator[bool]:
        """Hold ``key``'s re-login lock; False if not got within ``timeout``. While held, a
        task renews it; the task is stopped before the lock is released."""
        lock = self.client.lock(**self._lock_options(key, timeout))
        token = new_lock_token()
        cancelling = _cancelling()  # (a task cleaning up after its cancellation: above 0)
        try:
            with self._talking("lock"):
                got = bool(await lock.acquire(token=token))
            if _cancelling() > cancelling:
                raise asyncio.CancelledError  # cancelled meanwhile, and redis-py swallowed it
        except asyncio.CancelledError:
            # Cancelled perhaps after Redis applied the SET NX: remove the lock if it is ours.
            await to_the_end(_drop_if_ours(lock, token))
            raise
        renewer = asyncio.create_task(self._renew(lock)) if got else None
        try:
            yield got
        finally:
            if got:
                await to_the_end(self._end_hold(lock, renewer))

    async def _renew(self, lock: Any) -> None:
        loop = asyncio.get_running_loop()
        renewal = LockRenewal(self, loop.time())
        while True:
            await asyncio.sleep(renewal.interval)
            if not renewal.may_renew(loop.time()):
                break
            try:
                await lock.reacquire()  # its TTL back to lock_ttl, if we still own it
            except Exception as exc:
                if not renewal.carry_on(exc):
                    break

    async def _end_hold(self, lock: Any, renewer: asyncio.Task[None] | None) -> None:
        if renewer is not None:
            renewer.cancel()
            await asyncio.wait({renewer})
        try:
            await lock.release()
        except Exception as exc:  # expired and maybe taken by another process meanwhile
            self._release_failed(exc)


def _cancelling() -> int:
    """How many cancellations of this task are pending (``Task.cancelling``). One that comes
    in while the lock is taken may be dropped: ``asyncio.wait_for`` (which redis-py uses for
    its socket timeouts) returns a result that came in with the cancellation and drops the
    cancellation (seen on Python 3.11); the count then rose while the task carries on. (Above
    0 before: a task that caught its cancellation and cleans up, which may still take the
    lock.) Python 3.10 has no ``Task.cancelling``: 0."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return int(cancelling()) if cancelling is not None else 0


async def _drop_if_ours(lock: Any, token: bytes) -> None:
    # The release script deletes the key only if it holds ``token``; any error leaves the TTL
    # to end it.
    with contextlib.suppress(Exception):
        await lock.do_release(token)
