"""The async Redis store: its lock renewed while held, a save after the lock was lost refused,
a stuck holder bounded by ``max_hold``, and no secret in a repr, an error or a log line.

Against a real ``redis-server`` (tests/redis_server.py), beside sync stores on the same Redis.
Redis expires a lock on its own clock, which a test cannot inject: these tests use a short real
``lock_ttl`` (0.3 s) and wait a few of them at most.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from session_fsm.aio.redis_store import AsyncRedisStore
from session_fsm.aio.stores import AsyncFileStore
from session_fsm.redis_store import RedisStore
from session_fsm.stores import StoreError
from tests import redis_server
from tests.conftest import LogCapture
from tests.test_async_stores import KEY, TOKEN, record

pytestmark = pytest.mark.anyio

LOCK_TTL = 0.3
# The renewal test asserts that no renewal came late, so its TTL leaves a loaded machine (CI ran
# it at a load average past 10) a full second of slack between renewals (every TTL / 3).
RENEWED_TTL = 1.5

redis_url = redis_server.redis_url  # fixtures: a module's redis-server, an emptied db
redis_db = redis_server.redis_db


# --- Redis: renewal, lock loss, fenced saves ---------------------------------------------------


def renewers() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "AsyncRedisStore._renew"]


async def test_redis_lock_renewal_keeps_it_past_its_ttl_while_held(
    redis_url: str, redis_db: redis.Redis, logs: LogCapture
) -> None:
    store = AsyncRedisStore.from_url(f"{redis_url}?lock_ttl={RENEWED_TTL}")
    sync_waiter = RedisStore.from_url(redis_url)

    def sync_wait(seconds: float) -> bool:
        with sync_waiter.lock(KEY, seconds) as got:
            return got

    async with store.lock(KEY, 1.0) as got:
        assert got and len(renewers()) == 1
        t0 = time.monotonic()
        # Three TTLs, waited for by a sync store in a thread: unrenewed, the lock would lapse.
        assert await asyncio.to_thread(sync_wait, 3 * RENEWED_TTL) is False
        assert time.monotonic() - t0 >= 2 * RENEWED_TTL  # well past the TTL
        assert 0 < redis_db.pttl(KEY + ":relogin") <= RENEWED_TTL * 1000
    assert renewers() == []  # stopped with the hold
    assert redis_db.exists(KEY + ":relogin") == 0  # released, not left to expire
    assert await asyncio.to_thread(sync_wait, 0.1) is True
    assert not [e for e in logs.events() if e.get("level") == "warning"]
    await store.aclose()


async def test_a_save_after_the_lock_was_lost_is_refused(
    redis_url: str, redis_db: redis.Redis, logs: LogCapture
) -> None:
    lapsed = AsyncRedisStore.from_url(f"{redis_url}?lock_ttl={LOCK_TTL}")
    other = RedisStore.from_url(redis_url)  # a sync process, say
    async with lapsed.lock(KEY, 1.0) as got:
        assert got
        redis_db.delete(KEY + ":relogin")  # lost under its holder (a pause, a Redis restart)
        with other.lock(KEY, 0.1) as got_too:
            assert got_too
            assert other.save(KEY, record(2, "tok-winner")) is True
        assert await lapsed.save(KEY, record(2, "tok-loser")) is False
        deadline = time.monotonic() + 5
        while renewers() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert renewers() == []  # it noticed the loss and stopped
    kept = other.load(KEY)
    assert kept is not None and kept.session_token.reveal() == "tok-winner"
    events = [e["event"] for e in logs.events()]
    assert events.count("token_store_save_refused") == 1
    assert "relogin_lock_lost" in events
    assert "tok-" not in logs.text()
    await lapsed.aclose()


async def test_a_stuck_async_holder_keeps_the_lock_at_most_max_hold_plus_ttl(
    redis_url: str, redis_db: redis.Redis, logs: LogCapture
) -> None:
    holder = AsyncRedisStore.from_url(f"{redis_url}?lock_ttl={LOCK_TTL}&max_hold=0.6")
    async with holder.lock(KEY, 1.0) as got:
        assert got
        t0 = time.monotonic()
        async with holder.lock(KEY, 10.0) as late:  # the same store: still excluded
            assert late
        assert 0.6 <= time.monotonic() - t0 < 0.6 + LOCK_TTL + 1.5
    events = [e["event"] for e in logs.events()]
    assert events[:1] == ["relogin_lock_hold_limit"]
    assert events.count("relogin_lock_expired") == 1  # our release found it gone
    await holder.aclose()


# --- secrets -------------------------------------------------------------------------------


async def test_secrets_stay_out_of_reprs_errors_and_logs(
    redis_url: str, redis_db: redis.Redis, tmp_path: Path, logs: LogCapture
) -> None:
    dead = AsyncRedisStore.from_url("redis://:pw-f00d5ec@127.0.0.1:1/0?socket_timeout=1")
    assert "pw-f00d5ec" not in repr(dead)
    with pytest.raises(StoreError) as err:
        await dead.save(KEY, record())
    shown = f"{err.value!s} {err.value!r} {err.value.__cause__!r} {err.value.__context__!r}"
    assert "pw-f00d5ec" not in shown and TOKEN not in shown
    with pytest.raises(StoreError):
        async with dead.lock(KEY, 0.1):
            pass
    await dead.aclose()

    store = AsyncRedisStore.from_url(redis_url)
    redis_db.set(KEY, '{"session_token": "' + TOKEN + '", "generation": "x"}')
    assert await store.load(KEY) is None  # not a record: warned, treated as absent
    await store.aclose()
    files = AsyncFileStore(tmp_path / "tokens.json")
    await files.save(KEY, record())
    assert TOKEN not in repr(files) and TOKEN not in repr(await files.load(KEY))
    assert [e["event"] for e in logs.events()] == ["token_store_ignored"]
    assert TOKEN not in logs.text()
