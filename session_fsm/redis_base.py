"""What the sync and the async Redis token stores share, so one Redis serves both kinds.

:class:`~session_fsm.redis_store.RedisStore` (redis-py) and
:class:`~session_fsm.aio.stores.AsyncRedisStore` (``redis.asyncio``) only carry out I/O; every
decision is here, once: the key names, the record encoding, the fenced-save Lua script, the
lock token, the option checks and URL parsing, the error wording, the warnings, and when the
lock watchdog renews, gives up or carries on. A sync process and an async process using one
Redis therefore read each other's records and wait on each other's locks.
"""

from __future__ import annotations

import json
import math
import threading
import time
import traceback
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ConfigurationError
from .logs import emit, get_logger
from .models import too_deep
from .stores import StoredCooldown, StoredSession, StoreError, cooldown_key

#: Default seconds after which a re-login lock held by a dead (or stuck) process expires: below
#: the default ``relogin_timeout`` (30 s), so waiters outlive a dead holder's lock.
DEFAULT_LOCK_TTL = 20.0
#: Default longest time the watchdog keeps a live holder's lock: a holder stuck (alive) for
#: longer lets the others in ``lock_ttl`` later. Above any login the session's timeouts allow.
DEFAULT_MAX_HOLD = 120.0
#: redis-py client options the stores set unless the URL says otherwise: a dead Redis is a
#: StoreError in seconds, not a hang.
CLIENT_DEFAULTS: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
#: The store URL's own query options (the others are redis-py's).
URL_OPTIONS = ("lock_ttl", "max_hold")

#: Compare-and-set of a session record: KEYS[1] the key, ARGV[1] the JSON record, ARGV[2] its
#: generation. Writes and returns 1 unless the stored record (if it is one) has a generation
#: at least as high; then returns 0 and leaves it. An unreadable stored value is replaced.
FENCED_SAVE = """
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


def relogin_lock_name(key: str) -> str:
    """The Redis key of ``key``'s re-login lock (redis-py's ``Lock``, sync or async)."""
    return key + ":relogin"


def new_lock_token() -> bytes:
    """A fresh lock token: random, so it names no host or time, and known to the taker before
    the ``SET NX`` is sent (a cancelled acquire can then remove exactly its own lock)."""
    return uuid.uuid4().hex.encode("ascii")


def redis_errors() -> tuple[type[BaseException], ...]:
    """redis-py's errors (the asyncio client raises the same classes)."""
    import redis

    return (redis.RedisError,)


def lock_errors() -> tuple[type[BaseException], ...]:
    """The errors of a lock that is no longer ours."""
    from redis.exceptions import LockError

    return (LockError,)


def split_store_url(url: str, options: dict[str, Any]) -> str:
    """The redis-py URL of a store URL, its own options (``lock_ttl``, ``max_hold``) moved into
    ``options`` (unless given there already). ConfigurationError naming a bad option.

    Also checks that redis-py is installed (the error says how to install it).
    """
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "redis:// stores need the redis package", hint="pip install 'session_fsm[redis]'"
        ) from None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    for name, value in query:
        if name in URL_OPTIONS and name not in options:
            try:
                options[name] = float(value)
            except ValueError:
                raise ConfigurationError(
                    f"{name} in the store URL must be a number of seconds"
                ) from None
    rest = urlencode([(k, v) for k, v in query if k not in URL_OPTIONS])
    return urlunsplit(parts._replace(query=rest))


class _Talking:
    """A talk with Redis (``with store._talking("save"):``): its Redis error becomes a
    StoreError with nothing chained to it, and anything passing through (a cancellation, an
    interrupt) goes on; either way redis-py's frames below lose their locals first, which hold
    the values sent (a record's JSON, its session token). (A class, not a generator: the
    frame of contextlib's ``__exit__`` would keep the Redis error and its traceback.)"""

    __slots__ = ("store", "what")

    def __init__(self, store: RedisStoreBase, what: str) -> None:
        self.store = store
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: Any) -> None:
        if kind is None:
            return
        traceback.clear_frames(tb)  # (the talking frame itself runs on: it is skipped)
        if not issubclass(kind, redis_errors()):
            return  # passed on
        error = StoreError(
            f"token store Redis at {self.store.where()} failed to {self.what}: {kind.__name__}"
        )
        del exc, tb
        error.unchained()


class RedisStoreBase:
    """The settings, codec, error mapping and warnings of a Redis store; I/O is the subclass's.

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

    def _fenced_script(self) -> Any:
        """The fenced-save script registered with the client (no I/O: sent on first use)."""
        if self._fenced_save is None:
            self._fenced_save = self.client.register_script(FENCED_SAVE)
        return self._fenced_save

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
        return f"{type(self).__name__}({self.where()}, lock_ttl={self.lock_ttl:g})"

    def _talking(self, what: str) -> _Talking:
        """Redis errors become a StoreError naming the store and the error class only (a
        redis-py message may quote a URL, a password or a value); see :class:`_Talking`."""
        return _Talking(self, what)

    def _warn(self, kind: str, **fields: Any) -> None:
        with self._guard:
            if kind in self._warned:
                return
            self._warned.add(kind)
        emit(get_logger(), "warning", "token_store_ignored", store="redis", where=self.where(),
             **fields)  # fmt: skip

    # --- records -------------------------------------------------------------------------------

    @staticmethod
    def _session_value(session: StoredSession) -> list[Any]:
        """The fenced-save script's arguments for ``session``: its JSON and its generation."""
        return [json.dumps(session.to_json()), session.generation]

    def _session_from(self, key: str, raw: bytes | str | None) -> StoredSession | None:
        """The session in a stored value, or None (warned once) when it is not one."""
        if raw is None:
            return None
        try:
            if too_deep(raw):  # refused, not decoded into the recursion limit
                raise ValueError("nested too deeply")
            data = json.loads(raw)
        except (ValueError, RecursionError):  # JSON/UTF-8 error (its text quotes the bytes)
            self._warn("bad-entry", key=key, why="not JSON", action="treated as absent")
            return None
        try:
            return StoredSession.from_json(data)
        except ValueError as exc:  # names fields, never values
            self._warn("bad-entry", key=key, why=str(exc), action="treated as absent")
            return None

    def _saved(self, key: str, session: StoredSession, stored: object) -> bool:
        """What a fenced save returns, from the script's answer (a refusal is warned)."""
        if stored:
            return True
        emit(get_logger(), "warning", "token_store_save_refused", store="redis",
             where=self.where(), key=key, generation=session.generation,
             why="a session as new or newer is stored")  # fmt: skip
        return False

    @staticmethod
    def _cooldown_value(cooldown: StoredCooldown) -> tuple[str, int]:
        """A cool-down's stored value and its expiry in ms (Redis deletes it when it ends)."""
        ttl_ms = max(1, math.ceil((cooldown.until - time.time()) * 1000))
        return json.dumps(cooldown.to_json()), ttl_ms

    def _cooldown_from(self, key: str, raw: bytes | str | None) -> StoredCooldown | None:
        """The cool-down in a stored value, or None (warned once) when it is not one."""
        if raw is None:
            return None
        try:
            if too_deep(raw):  # refused, not decoded into the recursion limit
                raise ValueError("nested too deeply")
            return StoredCooldown.from_json(json.loads(raw))
        except (ValueError, RecursionError) as exc:  # JSON, UTF-8, depth or field errors
            self._warn("bad-cooldown", key=cooldown_key(key), why=type(exc).__name__,
                       action="treated as absent")  # fmt: skip
            return None

    # --- the re-login lock ---------------------------------------------------------------------

    def _lock_options(self, key: str, timeout: float) -> dict[str, Any]:
        """Arguments of ``client.lock`` for ``key``'s re-login lock. ``thread_local=False``: the
        watchdog (another thread, or another task) extends the token its taker acquired; the
        Lock object is made per hold and never shared with another holder."""
        return {"name": relogin_lock_name(key), "timeout": self.lock_ttl,
                "blocking_timeout": timeout, "thread_local": False}  # fmt: skip

    def _release_failed(self, exc: BaseException) -> None:
        """A release found the lock gone: expired, and maybe taken by another process since."""
        emit(get_logger(), "warning", "relogin_lock_expired", store="redis", where=self.where(),
             lock_ttl=self.lock_ttl, error=type(exc).__name__)  # fmt: skip


class LockRenewal:
    """The watchdog's decisions for one held lock, for the thread (sync) or task (async) that
    carries them out: renew every third of ``lock_ttl``, stop at ``max_hold`` or when the lock
    is found lost, and ride out Redis being unreachable for a tick (the TTL still runs)."""

    def __init__(self, store: RedisStoreBase, now: float) -> None:
        self.store = store
        self.interval = store.lock_ttl / 3
        self._give_up = now + store.max_hold

    def may_renew(self, now: float) -> bool:
        """Whether to renew at ``now`` (False, warned: ``max_hold`` is reached)."""
        if now < self._give_up:
            return True
        self._warn("relogin_lock_hold_limit", "max_hold reached; the lock expires")
        return False

    def carry_on(self, exc: Exception) -> bool:
        """After a renewal raised ``exc``: whether to try again next tick (re-raises what is
        neither a lost lock nor a Redis error)."""
        if isinstance(exc, lock_errors()):
            self._warn("relogin_lock_lost", "lost before it could be extended")
            return False
        if isinstance(exc, redis_errors()):
            return True
        raise exc

    def _warn(self, event: str, why: str) -> None:
        store = self.store
        emit(get_logger(), "warning", event, store="redis", where=store.where(),
             lock_ttl=store.lock_ttl, max_hold=store.max_hold, why=why)  # fmt: skip
