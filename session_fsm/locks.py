"""Locks that survive ``fork()`` and never wait without bound.

A child made by ``fork()`` (``multiprocessing`` with the fork method, gunicorn-style workers)
inherits every lock in the state it had at that instant: one held by another parent thread
stays held forever in the child, whose copy of that thread does not exist. A
:class:`ForkSafeLock` is made afresh in the child on its first use after the fork, so the
child starts with it free (the state it guards is immutable snapshots, published atomically,
so the child sees either the old or the new value). ``with lock:`` waits at most ``timeout``
seconds, then raises the error ``on_timeout(timeout)`` makes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

#: Bumped in a child after each fork: a lock made in an earlier epoch is made afresh.
_epoch = 0
_renew = threading.Lock()  # serialises the re-making of locks in a child (made afresh too)


def _after_fork_in_child() -> None:
    global _epoch, _renew
    _epoch += 1
    _renew = threading.Lock()  # only the forking thread exists now: no one can hold it


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ForkSafeLock:
    """A (re-entrant, if asked) lock made afresh in a forked child, with a bounded ``with``.

    ``acquire``/``release`` behave as ``threading.Lock``'s (or ``RLock``'s) do; ``with`` waits
    up to ``timeout`` seconds (``None``: as long as it takes) and then raises
    ``on_timeout(timeout)``.
    """

    __slots__ = ("_epoch", "_lock", "_on_timeout", "_reentrant", "timeout")

    def __init__(
        self,
        timeout: float | None = None,
        on_timeout: Callable[[float], Exception] | None = None,
        *,
        reentrant: bool = False,
    ) -> None:
        self.timeout = timeout
        self._on_timeout = on_timeout
        self._reentrant = reentrant
        # Made at the first acquire (as in a forked child): a session that is made and never
        # used (100,000 sessions in one process) carries no lock object, one GC-tracked
        # object less for every full collection to walk.
        self._lock: Any = None
        self._epoch = -1

    def _current(self) -> Any:
        if self._epoch != _epoch:  # first use in a forked child: a parent thread may hold it
            with _renew:
                if self._epoch != _epoch:
                    self._lock = threading.RLock() if self._reentrant else threading.Lock()
                    self._epoch = _epoch
        return self._lock

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As ``threading.Lock.acquire``."""
        if timeout > threading.TIMEOUT_MAX:
            timeout = -1
        return bool(self._current().acquire(blocking, timeout))

    def release(self) -> None:
        """As ``threading.Lock.release``."""
        lock = self._lock
        if lock is None:  # never acquired
            raise RuntimeError("release unlocked lock")
        lock.release()

    def __enter__(self) -> bool:
        timeout = self.timeout
        if timeout is None or timeout > threading.TIMEOUT_MAX:
            return self.acquire()
        if self.acquire(timeout=max(timeout, 0.0)):
            return True
        if self._on_timeout is None:
            raise TimeoutError(f"lock not acquired within {timeout:g}s")
        raise self._on_timeout(timeout)

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        kind = "RLock" if self._reentrant else "Lock"
        return f"ForkSafeLock({kind}, timeout={self.timeout})"
