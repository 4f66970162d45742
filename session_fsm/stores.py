"""Token stores: where a live session token is kept so restarts and other processes can use it.

A store holds at most one :class:`StoredSession` per (host, userid) key and offers a lock under
which one process at a time re-logs in. Chosen by object or by URL-like string:
``memory:`` (default), ``file:PATH``, ``redis://host:port/db`` (``?lock_ttl=SECONDS``).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError, KSError
from .frozen import quick_init
from .locks import ForkSafeLock
from .masking import mask_url
from .models import valid_token
from .secret import Secret


class StoreError(KSError):
    """The token store could not be read or written (Redis down, disk full, bad path).

    Raised rather than ignored: a process that silently lost its shared store would log in on
    its own and, with one session per user at the broker, log the other processes out.
    """

    hint = "check the token store (is Redis running? is the file's folder writable?)"


@quick_init
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


@dataclass(frozen=True)
class StoredCooldown:
    """A login failure the store remembers until ``until`` (epoch seconds): the wrong-password
    (or rejected gateway token) cool-down, kept beside the session so that other processes,
    restarts and cron runs of ``session-fsm login`` do not send a rejected secret again.

    Only names and numbers are kept (the error's class name, status and fault code), never a
    message or a secret: the error raised from it is rebuilt from these.
    """

    until: float
    error: str
    status: int | None = None
    fault_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the store's medium."""
        return {"until": self.until, "error": self.error, "status": self.status,
                "fault_code": self.fault_code}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> StoredCooldown:
        """Parse what :meth:`to_json` wrote; ValueError (naming no value) on anything else."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        until, error = data.get("until"), data.get("error")
        status, fault = data.get("status"), data.get("fault_code")
        bad = []
        if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(
            until
        ):
            bad.append("until")
        if error not in COOLDOWN_ERRORS:
            bad.append("error")
        for name, value in (("status", status), ("fault_code", fault)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                bad.append(name)
        if bad:
            raise ValueError(f"missing or bad field(s): {', '.join(bad)}")
        return cls(float(until), str(error), status, fault)  # type: ignore[arg-type]


#: The errors a cool-down may remember, by class name (what :class:`StoredCooldown` keeps).
COOLDOWN_ERRORS = ("LoginRejected", "NotAuthorized", "GatewayAuthError")


def cooldown_key(key: str) -> str:
    """Where a store keeps the cool-down of the session stored under ``key``."""
    return key + ":cooldown"


def load_cooldown(store: TokenStore, key: str) -> StoredCooldown | None:
    """The cool-down ``store`` keeps for ``key`` (None: none, or a store without cool-downs:
    they are optional for a :class:`TokenStore`)."""
    load = getattr(store, "load_cooldown", None)
    return None if load is None else load(key)


def save_cooldown(store: TokenStore, key: str, cooldown: StoredCooldown) -> None:
    """Keep ``cooldown`` for ``key`` in ``store``, if it keeps cool-downs."""
    save = getattr(store, "save_cooldown", None)
    if save is not None:
        save(key, cooldown)


def clear_cooldown(store: TokenStore, key: str) -> None:
    """Forget ``key``'s cool-down in ``store``, if it keeps cool-downs."""
    clear = getattr(store, "clear_cooldown", None)
    if clear is not None:
        clear(key)


@runtime_checkable
class TokenStore(Protocol):
    """Where sessions are persisted and how re-login is made single-flight across processes.

    ``load``/``save``/``delete`` raise :class:`StoreError` when the medium fails; a record that
    is there but unreadable is reported once as a warning and treated as absent.

    A store may also keep the login cool-down (:class:`StoredCooldown`) with the optional
    methods ``load_cooldown(key)``, ``save_cooldown(key, cooldown)`` and
    ``clear_cooldown(key)``; the library's stores all do. One without them still works: the
    cool-down is then kept by each session in memory only.
    """

    def load(self, key: str) -> StoredSession | None:
        """The stored session for ``key``, or None."""
        ...

    def save(self, key: str, session: StoredSession) -> bool | None:
        """Store ``session`` under ``key`` (replacing any).

        A store that fences by generation returns False, storing nothing, when the record under
        ``key`` is as new or newer (see :class:`~session_fsm.redis_store.RedisStore`).
        """
        ...

    def delete(self, key: str) -> None:
        """Forget ``key``'s session."""
        ...

    def lock(self, key: str, timeout: float) -> contextlib.AbstractContextManager[bool]:
        """Hold the re-login lock for ``key``; yields False if not acquired within ``timeout``."""
        ...


#: Serialises the making of MemoryStores' per-key locks (a dict lookup held for a moment):
#: one for all stores, so a store (one per session by default) carries no lock of its own.
_MEMORY_LOCKS_GUARD = ForkSafeLock()


class MemoryStore:
    """In-process store (the default): survives nothing, shares within one process."""

    def __init__(self) -> None:
        self._data: dict[str, StoredSession] = {}
        # Made afresh in a forked child (a parent thread may hold one at the fork): see locks.
        self._locks: dict[str, ForkSafeLock] = {}
        self._cooldowns: dict[str, StoredCooldown] = {}

    def load_cooldown(self, key: str) -> StoredCooldown | None:
        """The login cool-down kept for ``key``, or None."""
        return self._cooldowns.get(key)

    def save_cooldown(self, key: str, cooldown: StoredCooldown) -> None:
        """Keep a login cool-down for ``key``."""
        self._cooldowns[key] = cooldown

    def clear_cooldown(self, key: str) -> None:
        """Forget ``key``'s login cool-down."""
        self._cooldowns.pop(key, None)

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
        with _MEMORY_LOCKS_GUARD:
            lock = self._locks.setdefault(key, ForkSafeLock())
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


def is_async_store(store: object) -> bool:
    """Whether ``store`` is an async token store (its ``load`` is a coroutine function): one
    for :mod:`session_fsm.aio.stores`, not for a sync session."""
    return inspect.iscoroutinefunction(getattr(store, "load", None))


def parse_store_spec(spec: object) -> tuple[str, str]:
    """``("memory", "")``, ``("file", PATH)`` or ``("redis", URL)`` for a store string, or
    ConfigurationError (showing the spec masked: a misspelled redis URL may carry a password).

    ``file:PATH`` takes a plain path (``~`` expanded) or a ``file:///abs/path`` URL.
    """
    if spec == "memory:":
        return "memory", ""
    if isinstance(spec, str) and spec.startswith("file:"):
        path = spec[len("file:") :]
        if path.startswith("//"):  # file:///abs/path or file://localhost/abs/path
            netloc, _, rest = path[2:].partition("/")
            if netloc not in ("", "localhost"):
                raise ConfigurationError(
                    f"file store on another host ({mask_url(netloc)!r})",
                    hint="use file:/local/path",
                )
            path = "/" + rest
        if not path:
            raise ConfigurationError("file: store needs a path", hint="use file:/path/tokens.json")
        return "file", path
    if isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://")):
        return "redis", spec
    shown = mask_url(spec)  # a misspelled redis URL may carry a password anywhere
    raise ConfigurationError(
        f"unknown store {shown!r}", hint="use memory:, file:PATH or redis://host:port/db"
    )


def open_store(spec: str | TokenStore | None) -> TokenStore:
    """A store from an object or a URL-like string (``memory:``, ``file:PATH``, ``redis://``).

    ``file:PATH`` takes a plain path (``~`` expanded) or a ``file:///abs/path`` URL.
    ``redis://[:password@]host:port/db`` may carry ``?lock_ttl=SECONDS`` (default 20): how long
    a re-login lock outlives a process that died holding it. No I/O happens here. An async
    store (:mod:`session_fsm.aio.stores`) is refused: a sync session cannot await it.
    """
    if spec is None:
        return MemoryStore()
    if is_async_store(spec):
        raise ConfigurationError(
            f"{type(spec).__name__} is an async token store; a sync session needs a sync one",
            hint="give it to an async session, or use MemoryStore, FileStore or RedisStore",
        )
    if isinstance(spec, TokenStore):
        return spec
    kind, where = parse_store_spec(spec)
    if kind == "file":
        from .file_store import FileStore

        file_store: TokenStore = FileStore(where)
        return file_store
    if kind == "redis":
        from .redis_store import RedisStore

        redis_store: TokenStore = RedisStore.from_url(where)
        return redis_store
    return MemoryStore()
