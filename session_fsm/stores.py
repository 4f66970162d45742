"""Token stores: where a live session token is kept so restarts and other processes can use it.

A store holds at most one :class:`StoredSession` per (host, userid) key and offers a lock under
which one process at a time re-logs in. Chosen by object or by URL-like string:
``memory:`` (default), ``file:PATH``, ``redis://host:port/db``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError
from .secret import Secret


@dataclass(frozen=True)
class StoredSession:
    """What a store keeps: enough to resume a session without any HTTP call."""

    host: str
    userid: str
    session_token: Secret
    generation: int
    login_time: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (reveals the token: for the store's own medium only)."""
        return {
            "host": self.host,
            "userid": self.userid,
            "session_token": self.session_token.reveal(),
            "generation": self.generation,
            "login_time": self.login_time,
        }

    @classmethod
    def from_json(cls, data: Any) -> StoredSession:
        """Parse what :meth:`to_json` wrote; raises ValueError on anything else."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        try:
            return cls(
                host=str(data["host"]),
                userid=str(data["userid"]),
                session_token=Secret(str(data["session_token"])),
                generation=int(data["generation"]),
                login_time=float(data["login_time"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad field: {type(exc).__name__}") from None


@runtime_checkable
class TokenStore(Protocol):
    """Where sessions are persisted and how re-login is made single-flight across processes."""

    def load(self, key: str) -> StoredSession | None:
        """The stored session for ``key``, or None."""
        ...

    def save(self, key: str, session: StoredSession) -> None:
        """Store ``session`` under ``key`` (replacing any)."""
        ...

    def delete(self, key: str) -> None:
        """Forget ``key``'s session."""
        ...

    def lock(self, key: str, timeout: float) -> contextlib.AbstractContextManager[bool]:
        """Hold the re-login lock for ``key``; yields False if not acquired within ``timeout``."""
        ...


class MemoryStore:
    """In-process store (the default): survives nothing, shares within one process."""

    def __init__(self) -> None:
        self._data: dict[str, StoredSession] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def load(self, key: str) -> StoredSession | None:
        return self._data.get(key)

    def save(self, key: str, session: StoredSession) -> None:
        self._data[key] = session

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        got = lock.acquire(timeout=timeout)
        try:
            yield got
        finally:
            if got:
                lock.release()

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._data)})"


def store_key(host: str, userid: str) -> str:
    """The key a session is stored under."""
    return f"session_fsm:{host}:{userid}"


def open_store(spec: str | TokenStore | None) -> TokenStore:
    """A store from an object or a URL-like string (``memory:``, ``file:PATH``, ``redis://``)."""
    if spec is None or spec == "memory:":
        return MemoryStore()
    if isinstance(spec, TokenStore):
        return spec
    if isinstance(spec, str) and spec.startswith("file:"):
        from .file_store import FileStore

        file_store: TokenStore = FileStore(spec[len("file:") :])
        return file_store
    if isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://")):
        from .redis_store import RedisStore

        redis_store: TokenStore = RedisStore.from_url(spec)
        return redis_store
    raise ConfigurationError(
        f"unknown store {spec!r}", hint="use memory:, file:PATH or redis://host:port/db"
    )
