"""A token store in Redis (redis-py): one key per (host, userid), a lock with a time-out.

The re-login lock is redis-py's ``Lock`` with an expiry (``lock_ttl``), so a process that dies
holding it blocks the others for at most that long.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from .errors import ConfigurationError
from .stores import StoredSession


class RedisStore:
    """Store sessions in Redis. ``lock_ttl``: seconds after which a held lock expires."""

    def __init__(self, client: Any, *, lock_ttl: float = 30.0) -> None:
        self.client = client
        self.lock_ttl = lock_ttl

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """Connect lazily to ``redis://host:port/db`` (redis-py connects on first command)."""
        try:
            import redis
        except ImportError:
            raise ConfigurationError(
                "redis:// stores need the redis package", hint="pip install 'session_fsm[redis]'"
            ) from None
        return cls(redis.Redis.from_url(url, socket_timeout=5.0), **kwargs)

    def __repr__(self) -> str:
        return f"RedisStore(lock_ttl={self.lock_ttl})"

    def load(self, key: str) -> StoredSession | None:
        raw = self.client.get(key)
        if raw is None:
            return None
        try:
            return StoredSession.from_json(json.loads(raw))
        except ValueError:
            return None

    def save(self, key: str, session: StoredSession) -> None:
        self.client.set(key, json.dumps(session.to_json()))

    def delete(self, key: str) -> None:
        self.client.delete(key)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float) -> Iterator[bool]:
        lock = self.client.lock(key + ":relogin", timeout=self.lock_ttl, blocking_timeout=timeout)
        got = bool(lock.acquire())
        try:
            yield got
        finally:
            if got:
                with contextlib.suppress(Exception):  # expired meanwhile: nothing to release
                    lock.release()
