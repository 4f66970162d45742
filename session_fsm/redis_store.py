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
#: Default longest time the watchdog keeps a live holder's lock: a holder stuck (alive) for
#: longer lets the others in ``lock_ttl`` later. Above any login the session's timeouts allow.
DEFAULT_MAX_HOLD = 120.0
#: Seconds a release waits for the watchdog thread to end (it may be inside one Redis call).
WATCHDOG_JOIN_TIMEOUT = 10.0

#: Compare-and-set of a session record: KEYS[1] the key, ARGV[1] the JSON record, ARGV[2] its
#: generation. Writes and returns 1 unless the stored record (if it is one) has a generation
#: at least as high; then returns 0 and leaves it. An unreadable stored value is replaced.
_FENCED_SAVE = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' and type(record['generation']) == 'number'
      and record['generation'] >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError,)


class RedisStore:
    """Store sessions in Redis through ``client`` (a ``redis.Redis``).

    ``lock_ttl``: seconds after which a re-login lock whose holder died expires. Keep it below
    ``relogin_timeout``, so a waiter outlives a dead holder's lock instead of giving up first.
    A live holder's lock is extended while it works, for at most ``max_hold`` seconds.
    """

    def __init__(
        self, client: Any, *, lock_ttl: float = DEFAULT_LOCK_TTL, max_hold: float = DEFAULT_MAX_HOLD
    ) -> None:
        for name, value in (("lock_ttl", lock_ttl), ("max_hold", max_hold)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"{name} must be a number of seconds")
            if not (value > 0 and math.isfinite(value)):
                raise ConfigurationError(f"{name} must be a positive, finite number of seconds")
        self.client = client
        self.lock_ttl = float(lock_ttl)
        self.max_hold = float(max_hold)
        self._warned: set[str] = set()
        self._guard = threading.Lock()
        self._fenced_save: Any = None  # the registered script, made on first save

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """Connect lazily to ``redis://[:password@]host:port/db[?lock_ttl=S&max_hold=S]``.

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
        ours = ("lock_ttl", "max_hold")
        for name, value in query:
            if name in ours and name not in kwargs:
                try:
                    kwargs[name] = float(value)
                except ValueError:
                    raise ConfigurationError(
                        f"{name} in the store URL must be a number of seconds"
                    ) from None
        rest = urlencode([(k, v) for k, v in query if k not in ours])
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
        except (ValueError, RecursionError):  # JSON/UTF-8 error (its text quotes the bytes)
            self._warn("bad-entry", key=key, why="not JSON", action="treated as absent")
            return None
        try:
            return StoredSession.from_json(data)
        except ValueError as exc:  # names fields, never values
            self._warn("bad-entry", key=key, why=str(exc), action="treated as absent")
            return None

    def save(self, key: str, session: StoredSession) -> bool:
        """Store ``session`` under ``key`` unless the stored one is as new or newer.

        One atomic compare-and-set in Redis: returns False (and stores nothing) when the record
        under ``key`` has a generation >= ``session.generation``; the caller's login lost a
        race it should not have run (its lock lapsed) and the stored session is the one to use.
        """
        with self._talking("save"):
            script = self._fenced_save
            if script is None:
                script = self._fenced_save = self.client.register_script(_FENCED_SAVE)
            stored = script(keys=[key], args=[json.dumps(session.to_json()), session.generation])
        if stored:
            return True
        emit(get_logger(), "warning", "token_store_save_refused", store="redis",
             where=self.where(), key=key, generation=session.generation,
             why="a session as new or newer is stored")  # fmt: skip
        return False

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
        except (ValueError, RecursionError) as exc:  # JSON, UTF-8, depth or field errors
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
        """Hold ``key``'s re-login lock; False if not got within ``timeout``.

        While held, a watchdog thread extends it to ``lock_ttl`` every third of ``lock_ttl``
        (for at most ``max_hold`` s); it is stopped and joined before the lock is released.
        """
        # thread_local=False: the watchdog thread extends the token this thread acquired (this
        # Lock object is made per call and never shared with another holder).
        lock = self.client.lock(
            key + ":relogin", timeout=self.lock_ttl, blocking_timeout=timeout, thread_local=False
        )
        with self._talking("lock"):
            got = bool(lock.acquire())
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
                    emit(get_logger(), "warning", "relogin_lock_expired", store="redis",
                         where=self.where(), lock_ttl=self.lock_ttl,
                         error=type(exc).__name__)  # fmt: skip


class _Watchdog:
    """Extends a held redis-py ``Lock`` from a daemon thread until stopped or ``max_hold``."""

    def __init__(self, lock: Any, store: RedisStore) -> None:
        self._lock = lock
        self._store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"session_fsm-lock-watchdog-{lock.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        store = self._store
        interval = store.lock_ttl / 3
        give_up = time.monotonic() + store.max_hold
        while not self._stop.wait(interval):
            if time.monotonic() >= give_up:
                self._warn("relogin_lock_hold_limit", "max_hold reached; the lock expires")
                return
            try:
                self._lock.reacquire()  # its TTL back to lock_ttl, if we still own it
            except _lock_errors():
                self._warn("relogin_lock_lost", "lost before it could be extended")
                return
            except _redis_errors():
                continue  # Redis unreachable for now: try again next tick (the TTL still runs)

    def _warn(self, event: str, why: str) -> None:
        store = self._store
        emit(get_logger(), "warning", event, store="redis", where=store.where(),
             lock_ttl=store.lock_ttl, max_hold=store.max_hold, why=why)  # fmt: skip

    def stop(self) -> None:
        """Stop extending; returns once the thread ended (or after the join timeout)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(WATCHDOG_JOIN_TIMEOUT)


def _lock_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import LockError

    return (LockError,)
