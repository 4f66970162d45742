"""A token store in Redis (redis-py): one key per (host, userid), a re-login lock with a TTL.

Processes on any machine that reach the same Redis share one session: the record carries the
session generation, so a process meeting an expired token adopts a newer one another process
saved instead of logging in again. The re-login lock is redis-py's ``Lock`` with an expiry
(``lock_ttl``): a process that dies holding it blocks the others for at most that long. While
its holder is alive and working, a watchdog thread extends it (every third of ``lock_ttl``, for
at most ``max_hold`` seconds), so a login slower than ``lock_ttl`` is not joined by a second one.

Saves are fenced by generation: one Lua script compares the stored record's generation with the
new one and writes only a newer one, so a holder whose lock lapsed anyway (a paused process, a
``max_hold`` reached) can never overwrite a newer session another process saved.

Key names, record encoding, the script and every decision are shared with the async store
(:mod:`session_fsm.redis_base`), so sync and async processes can share one Redis.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from .redis_base import (
    CLIENT_DEFAULTS,
    DEFAULT_LOCK_TTL,
    DEFAULT_MAX_HOLD,
    LockRenewal,
    RedisStoreBase,
    new_lock_token,
    split_store_url,
)
from .stores import StoredCooldown, StoredSession, cooldown_key

__all__ = ["DEFAULT_LOCK_TTL", "DEFAULT_MAX_HOLD", "WATCHDOG_JOIN_TIMEOUT", "RedisStore"]

#: Seconds a release waits for the watchdog thread to end (it may be inside one Redis call).
WATCHDOG_JOIN_TIMEOUT = 10.0


class RedisStore(RedisStoreBase):
    """Store sessions in Redis through ``client`` (a ``redis.Redis``).

    ``lock_ttl``: seconds after which a re-login lock whose holder died expires. Keep it below
    ``relogin_timeout``, so a waiter outlives a dead holder's lock instead of giving up first.
    A live holder's lock is extended while it works, for at most ``max_hold`` seconds.
    """

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """Connect lazily to ``redis://[:password@]host:port/db[?lock_ttl=S&max_hold=S]``.

        redis-py connects on the first command, so this does no I/O. Other query parameters
        are redis-py's own (``socket_timeout`` and so on).
        """
        client_url = split_store_url(url, kwargs)
        import redis

        # Defaults only: redis-py lets options in the URL override these.
        return cls(redis.Redis.from_url(client_url, **CLIENT_DEFAULTS), **kwargs)

    def load(self, key: str) -> StoredSession | None:
        """The session stored under ``key``, or None (also for a value that is not one)."""
        with self._talking("load"):
            raw = self.client.get(key)
        return self._session_from(key, raw)

    def save(self, key: str, session: StoredSession) -> bool:
        """Store ``session`` under ``key`` unless the stored one is as new or newer.

        One atomic compare-and-set in Redis: returns False (and stores nothing) when the record
        under ``key`` has a generation >= ``session.generation``; the caller's login lost a
        race it should not have run (its lock lapsed) and the stored session is the one to use.
        """
        with self._talking("save"):
            stored = self._fenced_script()(keys=[key], args=self._session_value(session))
        return self._saved(key, session, stored)

    def delete(self, key: str) -> None:
        """Forget ``key``'s session."""
        with self._talking("delete"):
            self.client.delete(key)

    # The login cool-down: its own key (``<key>:cooldown``), which Redis expires when it ends.

    def load_cooldown(self, key: str) -> StoredCooldown | None:
        """The login cool-down kept for ``key``, or None (also for a value that is not one)."""
        with self._talking("load"):
            raw = self.client.get(cooldown_key(key))
        return self._cooldown_from(key, raw)

    def save_cooldown(self, key: str, cooldown: StoredCooldown) -> None:
        """Keep a login cool-down for ``key``; Redis deletes it when it ends."""
        value, ttl_ms = self._cooldown_value(cooldown)
        with self._talking("save"):
            self.client.set(cooldown_key(key), value, px=ttl_ms)

    def clear_cooldown(self, key: str) -> None:
        """Forget ``key``'s login cool-down."""
        with self._talking("delete"):
            self.client.delete(cooldown_key(key))

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """Hold ``key``'s re-login lock; False if not got within ``timeout``.

        While held, a watchdog thread extends it to ``lock_ttl`` every third of ``lock_ttl``
        (for at most ``max_hold`` s); it is stopped and joined before the lock is released.
        """
        lock = self.client.lock(**self._lock_options(key, timeout))
        with self._talking("lock"):
            got = bool(lock.acquire(token=new_lock_token()))
        watchdog = _Watchdog(lock, self) if got else None
        try:
            yield got
        finally:
            if watchdog is not None:
                watchdog.stop()
            if got:
                try:
                    lock.release()
                except Exception as exc:  # expired and maybe taken by another process meanwhile
                    self._release_failed(exc)


class _Watchdog:
    """Extends a held redis-py ``Lock`` from a daemon thread until stopped or ``max_hold``."""

    def __init__(self, lock: Any, store: RedisStore) -> None:
        self._lock = lock
        self._renewal = LockRenewal(store, time.monotonic())
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"session_fsm-lock-watchdog-{lock.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        renewal = self._renewal
        while not self._stop.wait(renewal.interval) and renewal.may_renew(time.monotonic()):
            try:
                self._lock.reacquire()  # its TTL back to lock_ttl, if we still own it
            except Exception as exc:
                if not renewal.carry_on(exc):
                    return

    def stop(self) -> None:
        """Stop extending; returns once the thread ended (or after the join timeout)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(WATCHDOG_JOIN_TIMEOUT)
