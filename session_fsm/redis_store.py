"""A token store in Redis (redis-py): one key per (host, userid), a re-login lock with a TTL.

Processes on any machine that reach the same Redis share one session: the record carries the
session generation, so a process meeting an expired token adopts a newer one another process
saved instead of logging in again. The re-login lock is redis-py's ``Lock`` with an expiry
(``lock_ttl``): a process that dies holding it blocks the others for at most that long.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ConfigurationError
from .logs import emit, get_logger
from .stores import StoredCooldown, StoredSession, StoreError, cooldown_key

#: Default seconds after which a re-login lock held by a dead (or stuck) process expires: below
#: the default ``relogin_timeout`` (30 s), so waiters outlive a dead holder's lock.
DEFAULT_LOCK_TTL = 20.0


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError,)


class RedisStore:
    """Store sessions in Redis through ``client`` (a ``redis.Redis``).

    ``lock_ttl``: seconds after which a held re-login lock expires by itself. Keep it above the
    time a login takes (about a second) and below ``relogin_timeout``, so a waiter outlives a
    dead holder's lock instead of giving up first.
    """

    def __init__(self, client: Any, *, lock_ttl: float = DEFAULT_LOCK_TTL) -> None:
        if not (lock_ttl > 0 and math.isfinite(lock_ttl)):
            raise ConfigurationError(f"lock_ttl must be a positive number of seconds: {lock_ttl}")
        self.client = client
        self.lock_ttl = float(lock_ttl)
        self._warned: set[str] = set()
        self._guard = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """Connect lazily to ``redis://[:password@]host:port/db[?lock_ttl=SECONDS]``.

        redis-py connects on the first command, so this does no I/O. Other query parameters
        are redis-py's own (``socket_timeout`` and so on).
        """
        try:
            import redis
        except ImportError:
            raise ConfigurationError(
                "redis:// stores need the redis package", hint="pip install 'session_fsm[redis]'"
            ) from None
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        for name, value in query:
            if name == "lock_ttl" and "lock_ttl" not in kwargs:
                try:
                    kwargs["lock_ttl"] = float(value)
                except ValueError:
                    raise ConfigurationError(
                        "lock_ttl in the store URL must be a number of seconds"
                    ) from None
        rest = urlencode([(k, v) for k, v in query if k != "lock_ttl"])
        # Defaults only: redis-py lets options in the URL override these.
        client = redis.Redis.from_url(
            urlunsplit(parts._replace(query=rest)), socket_timeout=5.0, socket_connect_timeout=5.0
        )
        return cls(client, **kwargs)

    def where(self) -> str:
        """Where the store is, for messages: host, port and db (never a password)."""
        try:
            kw = self.client.connection_pool.connection_kwargs
        except AttributeError:
            return type(self.client).__name__
        if "path" in kw:
            return f"unix:{kw['path']}"
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"

    def __repr__(self) -> str:
        return f"RedisStore({self.where()}, lock_ttl={self.lock_ttl:g})"

    @contextlib.contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        try:
            yield
        except _redis_errors() as exc:
            raise StoreError(
                f"token store Redis at {self.where()} failed to {what}: {type(exc).__name__}"
            ) from None

    def _warn(self, kind: str, **fields: Any) -> None:
        with self._guard:
            if kind in self._warned:
                return
            self._warned.add(kind)
        emit(get_logger(), "warning", "token_store_ignored", store="redis", where=self.where(),
             **fields)  # fmt: skip

    def load(self, key: str) -> StoredSession | None:
        """The session stored under ``key``, or None (also for a value that is not one)."""
        with self._talking("load"):
            raw = self.client.get(key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:  # JSON or UTF-8 error: their messages quote the bytes, so not shown
            self._warn("bad-entry", key=key, why="not JSON", action="treated as absent")
            return None
        try:
            return StoredSession.from_json(data)
        except ValueError as exc:  # names fields, never values
            self._warn("bad-entry", key=key, why=str(exc), action="treated as absent")
            return None

    def save(self, key: str, session: StoredSession) -> None:
        """Store ``session`` under ``key``."""
        with self._talking("save"):
            self.client.set(key, json.dumps(session.to_json()))

    def delete(self, key: str) -> None:
        """Forget ``key``'s session."""
        with self._talking("delete"):
            self.client.delete(key)

    # The login cool-down: its own key (``<key>:cooldown``), which Redis expires when it ends.

    def load_cooldown(self, key: str) -> StoredCooldown | None:
        """The login cool-down kept for ``key``, or None (also for a value that is not one)."""
        with self._talking("load"):
            raw = self.client.get(cooldown_key(key))
        if raw is None:
            return None
        try:
            return StoredCooldown.from_json(json.loads(raw))
        except ValueError as exc:  # JSON, UTF-8 or field errors: no value is shown
            self._warn("bad-cooldown", key=cooldown_key(key), why=type(exc).__name__,
                       action="treated as absent")  # fmt: skip
            return None

    def save_cooldown(self, key: str, cooldown: StoredCooldown) -> None:
        """Keep a login cool-down for ``key``; Redis deletes it when it ends."""
        ttl_ms = max(1, math.ceil((cooldown.until - time.time()) * 1000))
        with self._talking("save"):
            self.client.set(cooldown_key(key), json.dumps(cooldown.to_json()), px=ttl_ms)

    def clear_cooldown(self, key: str) -> None:
        """Forget ``key``'s login cool-down."""
        with self._talking("delete"):
            self.client.delete(cooldown_key(key))

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        """Hold ``key``'s re-login lock (expires after ``lock_ttl``); False if not got in time."""
        lock = self.client.lock(key + ":relogin", timeout=self.lock_ttl, blocking_timeout=timeout)
        with self._talking("lock"):
            got = bool(lock.acquire())
        try:
            yield got
        finally:
            if got:
                try:
                    lock.release()
                except Exception as exc:  # expired and maybe taken by another process meanwhile
                    emit(get_logger(), "warning", "relogin_lock_expired", store="redis",
                         where=self.where(), lock_ttl=self.lock_ttl,
                         error=type(exc).__name__)  # fmt: skip
