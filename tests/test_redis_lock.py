"""The Redis re-login lock holds while its holder works, and saves are fenced by generation.

Against a real ``redis-server`` (tests/redis_server.py) and real separate processes
(tests/mp_worker.py): with ``lock_ttl`` shorter than a slow login, two processes meeting one
expiry still log in once; a save older than (or as old as) the stored record never lands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from session_fsm import KSSession, StoredSession, open_store
from session_fsm.redis_store import RedisStore
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.stores import store_key
from tests import redis_server
from tests.conftest import LogCapture
from tests.mp_worker import CTX, ORDERS, TWO_FA_PATH, Fleet

KEY = store_key("http://127.0.0.1:1/apim", "demo-user")
#: The sandbox's 2FA answer is held this long: well past the lock's TTL below.
SLOW_2FA = 2.5
LOCK_TTL = 1.0


redis_url = redis_server.redis_url  # fixtures: a module's redis-server, an emptied db
redis_db = redis_server.redis_db


def record(generation: int, token: str) -> StoredSession:
    return StoredSession("http://127.0.0.1:1/apim", "demo-user", Secret(token), generation, 1.5)


def watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("session_fsm-lock-watchdog")]


def test_two_processes_with_a_login_slower_than_the_lock_ttl_log_in_once(
    sb: Sandbox,
    children: Fleet,
    redis_url: str,
    redis_db: redis.Redis,
    new_session: Callable[..., KSSession],
) -> None:
    url = f"{redis_url}?lock_ttl={LOCK_TTL:g}"
    first = new_session(store=url)
    first.connect()
    sb.control.expire()
    sb.control.fault(TWO_FA_PATH, method="POST", delay=SLOW_2FA, count=2)
    barrier = CTX.Barrier(2)
    script = [("resume",), ("barrier",), ("get", ORDERS)]
    ids = [children.start(url, script, {"barrier": barrier}) for _ in range(2)]
    done = [children.reports(i, len(script), timeout=60) for i in ids]
    assert all(children.join(i) == 0 for i in ids)

    stats = sb.control.stats()
    assert stats["logins"] == 2 and stats["sessions"] == 2  # ours, then one re-login in all
    assert {steps[-1]["generation"] for steps in done} == {2}
    lasts = [steps[-1] for steps in done]
    relogins = [last for last in lasts if "authenticate" in [r[0] for r in last["records"]]]
    assert len(relogins) == 1
    slow = relogins[0]["t1"] - relogins[0]["t0"]
    assert slow > SLOW_2FA > LOCK_TTL  # the holder really worked past the lock's TTL
    stored = open_store(url).load(first.store_key())
    assert stored is not None and stored.generation == 2
    assert redis_db.exists(first.store_key() + ":relogin") == 0  # released, not left to expire


def test_a_fenced_save_never_overwrites_a_newer_or_equal_generation(
    redis_url: str, redis_db: redis.Redis, logs: LogCapture
) -> None:
    store = RedisStore.from_url(redis_url)
    assert store.save(KEY, record(2, "tok-second")) is True
    assert store.save(KEY, record(2, "tok-lapsed-holder")) is False  # same generation: refused
    assert store.save(KEY, record(1, "tok-stale")) is False
    kept = store.load(KEY)
    assert kept is not None and kept.session_token.reveal() == "tok-second"
    assert store.save(KEY, record(3, "tok-third")) is True
    kept = store.load(KEY)
    assert kept is not None and kept.generation == 3
    refused = [e for e in logs.events() if e["event"] == "token_store_save_refused"]
    assert [e["generation"] for e in refused] == [2, 1]
    assert "tok-" not in logs.text()


def test_a_lapsed_holder_cannot_overwrite_the_session_saved_after_it(
    redis_url: str, redis_db: redis.Redis
) -> None:
    # A holder whose lock lapsed (here: max_hold reached) computed generation 2; meanwhile a
    # second process took the lock and saved its own generation 2. The late save is refused.
    lapsed = RedisStore.from_url(redis_url + "?lock_ttl=0.2&max_hold=0.2")
    other = RedisStore.from_url(redis_url)
    with lapsed.lock(KEY, 1.0) as got:
        assert got
        with other.lock(KEY, 5.0) as got_too:
            assert got_too  # the first holder's lock lapsed while it was still inside
            assert other.save(KEY, record(2, "tok-winner")) is True
        assert lapsed.save(KEY, record(2, "tok-loser")) is False
    kept = other.load(KEY)
    assert kept is not None and kept.session_token.reveal() == "tok-winner"


def test_the_lock_is_extended_while_its_holder_works_and_the_watchdog_ends_with_it(
    redis_url: str, redis_db: redis.Redis, logs: LogCapture
) -> None:
    holder = RedisStore.from_url(redis_url + "?lock_ttl=0.6")
    waiter = RedisStore.from_url(redis_url)
    before = len(watchdogs())
    with holder.lock(KEY, 1.0) as got:
        assert got and len(watchdogs()) == before + 1
        t0 = time.monotonic()
        with waiter.lock(KEY, 2.5) as stolen:  # four TTLs: unextended, it would have lapsed
            assert not stolen
        assert time.monotonic() - t0 >= 2.4
        assert 0 < redis_db.pttl(KEY + ":relogin") <= 600
    assert len(watchdogs()) == before  # stopped and joined on release
    assert redis_db.exists(KEY + ":relogin") == 0
    with waiter.lock(KEY, 0.5) as free:
        assert free
    assert not [e for e in logs.events() if e.get("level") == "warning"]


def test_a_stuck_holder_keeps_the_lock_at_most_max_hold_plus_lock_ttl(
    redis_url: str, redis_db: redis.Redis, logs: LogCapture
) -> None:
    holder = RedisStore.from_url(redis_url + "?lock_ttl=0.3&max_hold=0.6")
    waiter = RedisStore.from_url(redis_url)
    with holder.lock(KEY, 1.0) as got:
        assert got
        t0 = time.monotonic()
        with waiter.lock(KEY, 10.0) as late:
            assert late
        waited = time.monotonic() - t0
        assert 0.6 <= waited < 0.6 + 0.3 + 1.5  # bound plus one TTL, with slack for the poll
    assert not watchdogs()
    events = [e["event"] for e in logs.events()]
    assert events == ["relogin_lock_hold_limit", "relogin_lock_expired"]


def test_a_lock_lost_under_the_holder_stops_its_watchdog(
    redis_url: str, redis_db: redis.Redis, logs: LogCapture
) -> None:
    holder = RedisStore.from_url(redis_url + "?lock_ttl=0.3")
    with holder.lock(KEY, 1.0) as got:
        assert got
        redis_db.delete(KEY + ":relogin")  # lapsed (e.g. Redis restarted, or a pause)
        deadline = time.monotonic() + 5
        while watchdogs() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not watchdogs()  # it noticed and ended, before the release
    assert [e["event"] for e in logs.events()][:1] == ["relogin_lock_lost"]


def test_store_url_options_are_checked() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0?lock_ttl=2&max_hold=9")
    assert (store.lock_ttl, store.max_hold) == (2.0, 9.0)
    from session_fsm.errors import ConfigurationError

    for bad in ("max_hold=x", "max_hold=0", "max_hold=nan", "lock_ttl=inf"):
        with pytest.raises(ConfigurationError) as err:
            RedisStore.from_url(f"redis://127.0.0.1:1/0?{bad}")
        assert bad.split("=")[0] in str(err.value)
