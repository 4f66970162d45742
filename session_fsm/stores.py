"""Token stores: where a live session token is kept so restarts and other processes can use it.

A store holds at most one :class:`StoredSession` per (host, userid) key and offers a lock under
which one process at a time re-logs in. Chosen by object or by URL-like string:
``memory:`` (default), ``file:PATH``, ``redis://host:port/db`` (``?lock_ttl=SECONDS``).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError, KSError
from .models import valid_token
from .secret import Secret


class StoreError(KSError):
    """The token store could not be read or written (Redis down, disk full, bad path).

    Raised rather than ignored: a process that silently lost its shared store would log in on
    its own and, with one session per user at the broker, log the other processes out.
    """

    hint = "check the token store (is Redis running? is the file's folder writable?)"


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
        """Parse what :meth:`to_json` wrote; ValueError (naming no value) on anything else."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        texts = {k: data.get(k) for k in ("host", "userid", "session_token")}
        bad = sorted(k for k, v in texts.items() if not isinstance(v, str) or not v)
        token = texts["session_token"]
        if "session_token" not in bad and not valid_token(str(token)):
            bad.append("session_token")  # it goes into a header: visible ASCII only
        gen, when = data.get("generation"), data.get("login_time")
        if isinstance(gen, bool) or not isinstance(gen, int) or gen < 1:
            bad.append("generation")
            gen = 0
        if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
            bad.append("login_time")
            when = 0.0
        if bad:
            # Names only: the values may be a token.
            raise ValueError(f"missing or bad field(s): {', '.join(bad)}")
        return cls(
            host=str(texts["host"]),
            userid=str(texts["userid"]),
            session_token=Secret(str(texts["session_token"])),
            generation=gen,
            login_time=float(when),
        )


@runtime_checkable
class TokenStore(Protocol):
    """Where sessions are persisted and how re-login is made single-flight across processes.

    ``load``/``save``/``delete`` raise :class:`StoreError` when the medium fails; a record that
    is there but unreadable is reported once as a warning and treated as absent.
    """

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
        """The stored session for ``key``, or None."""
        return self._data.get(key)

    def save(self, key: str, session: StoredSession) -> None:
        """Store ``session`` under ``key``."""
        self._data[key] = session

    def delete(self, key: str) -> None:
        """Forget ``key``'s session."""
        self._data.pop(key, None)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """A per-key thread lock; yields whether it was acquired within ``timeout``."""
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
    """A store from an object or a URL-like string (``memory:``, ``file:PATH``, ``redis://``).

    ``file:PATH`` takes a plain path (``~`` expanded) or a ``file:///abs/path`` URL.
    ``redis://[:password@]host:port/db`` may carry ``?lock_ttl=SECONDS`` (default 20): how long
    a re-login lock outlives a process that died holding it. No I/O happens here.
    """
    if spec is None or spec == "memory:":
        return MemoryStore()
    if isinstance(spec, TokenStore):
        return spec
    if isinstance(spec, str) and spec.startswith("file:"):
        from .file_store import FileStore

        path = spec[len("file:") :]
        if path.startswith("//"):  # file:///abs/path or file://localhost/abs/path
            netloc, _, rest = path[2:].partition("/")
            if netloc not in ("", "localhost"):
                raise ConfigurationError(
                    f"file store on another host ({netloc!r})", hint="use file:/local/path"
                )
            path = "/" + rest
        if not path:
            raise ConfigurationError("file: store needs a path", hint="use file:/path/tokens.json")
        file_store: TokenStore = FileStore(path)
        return file_store
    if isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://")):
        from .redis_store import RedisStore

        redis_store: TokenStore = RedisStore.from_url(spec)
        return redis_store
    shown = spec.split("@")[-1] if isinstance(spec, str) else type(spec).__name__
    raise ConfigurationError(
        f"unknown store {shown!r}", hint="use memory:, file:PATH or redis://host:port/db"
    )
