"""The async token stores: round trips, one medium shared with sync stores and sync processes,
cancellation while taking a lock, release from another task, a loop never blocked.

Against a real ``redis-server`` (tests/redis_server.py), real files and real separate processes
(tests/store_child.py). The Redis store's renewal, lock loss and secrets: test_async_redis_store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from session_fsm.aio.redis_store import AsyncRedisStore
from session_fsm.aio.stores import (
    AsyncFileStore,
    AsyncMemoryStore,
    AsyncThreadedStore,
    AsyncTokenStore,
    open_async_store,
)
from session_fsm.errors import ConfigurationError
from session_fsm.file_store import FileStore
from session_fsm.secret import Secret
from session_fsm.stores import (
    MemoryStore,
    StoredCooldown,
    StoredSession,
    open_store,
    store_key,
)
from tests import redis_server

pytestmark = pytest.mark.anyio

TOKEN = "tok-9c1e7a20b4d35f68"  # a stand-in session token no log, repr or error may show
KEY = store_key("http://127.0.0.1:1/apim", "demo-user")
CHILD = str(Path(__file__).with_name("store_child.py"))

redis_url = redis_server.redis_url  # fixtures: a module's redis-server, an emptied db
redis_db = redis_server.redis_db


def record(generation: int = 1, token: str = TOKEN) -> StoredSession:
    return StoredSession("http://127.0.0.1:1/apim", "demo-user", Secret(token), generation, 1.5)


@pytest.fixture(params=["memory", "file", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_db")
    return str(request.param)


@contextlib.asynccontextmanager
async def async_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Any]:
    """An async store of ``kind`` (file and redis: on the test's shared medium)."""
    if kind == "memory":
        yield AsyncMemoryStore()
    elif kind == "file":
        yield AsyncFileStore(tmp_path / "tokens.json")
    else:
        store = AsyncRedisStore.from_url(request.getfixturevalue("redis_url"))
        try:
            yield store
        finally:
            await store.aclose()


def sync_spec(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "file":
        return f"file:{tmp_path / 'tokens.json'}"
    return str(request.getfixturevalue("redis_url"))


async def free_within(store: Any, seconds: float) -> bool:
    async with store.lock(KEY, seconds) as got:
        return bool(got)


# --- each store on its own -----------------------------------------------------------------


async def test_round_trip(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    async with async_store(kind, request, tmp_path) as store:
        assert isinstance(store, AsyncTokenStore)
        assert await store.load(KEY) is None
        assert await store.save(KEY, record(1)) in (None, True)
        loaded = await store.load(KEY)
        assert loaded is not None and loaded.session_token.reveal() == TOKEN
        assert loaded.generation == 1
        cooldown = StoredCooldown(time.time() + 60, "LoginRejected", 401, None)
        await store.save_cooldown(KEY, cooldown)
        assert await store.load_cooldown(KEY) == cooldown
        await store.clear_cooldown(KEY)
        assert await store.load_cooldown(KEY) is None
        await store.delete(KEY)
        assert await store.load(KEY) is None
        async with store.lock(KEY, 1.0) as got:
            assert got
            async with store.lock(KEY, 0.05) as second:
                assert not second  # exclusive
            async with store.lock(KEY + "-other", 0.05) as other:
                assert other  # per key
        assert await free_within(store, 0.05)
        assert TOKEN not in repr(store)


async def test_open_async_store_by_spec(redis_url: str, tmp_path: Path) -> None:
    assert isinstance(open_async_store(None), AsyncMemoryStore)
    assert isinstance(open_async_store("memory:"), AsyncMemoryStore)
    file_store = open_async_store(f"file:{tmp_path / 't.json'}")
    assert isinstance(file_store, AsyncFileStore) and file_store.path == tmp_path / "t.json"
    assert isinstance(open_async_store(f"file://{tmp_path}/u.json"), AsyncFileStore)
    redis_store = open_async_store(redis_url + "?lock_ttl=3&max_hold=9")
    assert isinstance(redis_store, AsyncRedisStore)
    assert (redis_store.lock_ttl, redis_store.max_hold) == (3.0, 9.0)
    await redis_store.aclose()
    mine = AsyncMemoryStore()
    assert open_async_store(mine) is mine
    wrapped = open_async_store(MemoryStore())  # a user's sync store: run in threads
    assert isinstance(wrapped, AsyncThreadedStore) and isinstance(wrapped.sync_store, MemoryStore)
    with pytest.raises(ConfigurationError) as err:
        open_async_store("redis:/:pw-in-typo@host/0")
    assert "pw-in-typo" not in str(err.value)
    with pytest.raises(ConfigurationError, match="lock_ttl"):
        open_async_store(redis_url + "?lock_ttl=0")
    with pytest.raises(ConfigurationError, match="another host"):
        open_async_store("file://elsewhere/t.json")


async def test_a_sync_session_refuses_an_async_store() -> None:
    with pytest.raises(ConfigurationError, match="async token store"):
        open_store(AsyncMemoryStore())  # type: ignore[arg-type]


async def test_a_users_sync_store_without_cooldowns_works_through_threads() -> None:
    class Minimal:  # the TokenStore protocol only: no cool-down methods
        def __init__(self) -> None:
            self.inner = MemoryStore()
            self.threads: set[str] = set()

        def load(self, key: str) -> StoredSession | None:
            self.threads.add(threading.current_thread().name)
            return self.inner.load(key)

        def save(self, key: str, session: StoredSession) -> None:
            self.inner.save(key, session)

        def delete(self, key: str) -> None:
            self.inner.delete(key)

        def lock(self, key: str, timeout: float) -> Any:
            return self.inner.lock(key, timeout)

    minimal = Minimal()
    store = open_async_store(minimal)
    await store.save(KEY, record(3))
    loaded = await store.load(KEY)
    assert loaded is not None and loaded.generation == 3
    assert threading.current_thread().name not in minimal.threads  # ran in a worker thread
    await store.save_cooldown(KEY, StoredCooldown(time.time() + 5, "LoginRejected"))
    assert await store.load_cooldown(KEY) is None  # kept nowhere, and no error
    assert await free_within(store, 0.1)


# --- one medium, sync and async --------------------------------------------------------------


@pytest.mark.parametrize("medium", ["file", "redis"])
async def test_sync_and_async_stores_read_each_others_records(
    medium: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sync = open_store(sync_spec(medium, request, tmp_path))
    if medium == "redis":
        request.getfixturevalue("redis_db")
    async with async_store(medium, request, tmp_path) as store:
        sync.save(KEY, record(1, "tok-from-sync"))
        loaded = await store.load(KEY)
        assert loaded is not None and loaded.session_token.reveal() == "tok-from-sync"
        await store.save(KEY, record(2, "tok-from-async"))
        back = sync.load(KEY)
        assert back is not None and (back.generation, back.session_token.reveal()) == (
            2, "tok-from-async")  # fmt: skip
        cooldown = StoredCooldown(time.time() + 60, "GatewayAuthError", 401, 900901)
        await store.save_cooldown(KEY, cooldown)
        assert sync.load_cooldown(KEY) == cooldown  # type: ignore[attr-defined]
        sync.clear_cooldown(KEY)  # type: ignore[attr-defined]
        assert await store.load_cooldown(KEY) is None
        if medium == "redis":  # fenced by generation, whoever saved the newer record
            assert await store.save(KEY, record(2, "tok-late")) is False
            assert sync.save(KEY, record(3, "tok-three")) is True
            assert await store.save(KEY, record(3, "tok-late")) is False
            kept = await store.load(KEY)
            assert kept is not None and kept.session_token.reveal() == "tok-three"


class Child:
    """A separate sync process using the store (tests/store_child.py)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, CHILD, *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)  # fmt: skip
        return cls(process)

    async def line(self) -> str:
        assert self.process.stdout is not None
        return (await asyncio.wait_for(self.process.stdout.readline(), 30)).decode().strip()

    async def tell(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()

    async def finish(self) -> int:
        return await asyncio.wait_for(self.process.wait(), 30)


@pytest.mark.parametrize("medium", ["file", "redis"])
async def test_a_sync_process_and_an_async_store_exclude_each_other(
    medium: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    spec = sync_spec(medium, request, tmp_path)
    if medium == "redis":
        request.getfixturevalue("redis_db")
    async with async_store(medium, request, tmp_path) as store:
        holder = await Child.start(spec, KEY, "hold")  # a sync process holds it
        assert await holder.line() == "held"
        async with store.lock(KEY, 0.3) as got:
            assert not got
        await holder.tell()
        assert await holder.line() == "released"
        assert await holder.finish() == 0

        async with store.lock(KEY, 5.0) as got:  # the async store holds it
            assert got
            tryer = await Child.start(spec, KEY, "try", "0.3")
            assert await tryer.line() == "busy"
            assert await tryer.finish() == 0
        tryer = await Child.start(spec, KEY, "try", "5")
        assert await tryer.line() == "got"
        assert await tryer.finish() == 0

        await store.save(KEY, record(4))
        reader = await Child.start(spec, KEY, "load")
        assert await reader.line() == "4"
        assert await reader.finish() == 0


# --- cancellation and cross-task release -----------------------------------------------------


async def test_cancelled_while_waiting_for_the_lock_leaves_nothing_held(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with async_store(kind, request, tmp_path) as store, \
            async_store(kind, request, tmp_path) as other:  # fmt: skip
        holder = store if kind == "memory" else other  # memory: one process, one store
        async with holder.lock(KEY, 1.0) as got:
            assert got
            waiter = asyncio.create_task(free_within(store, 30.0))
            await asyncio.sleep(0.2)  # it is waiting (a lock wait cannot be observed otherwise)
            assert not waiter.done()
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert await free_within(holder, 2.0)
        assert await free_within(store, 2.0)


async def test_cancelled_at_any_step_of_taking_the_lock_leaves_nothing_held(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async def hold_for_ever(store: Any) -> None:
        async with store.lock(KEY, 5.0):
            await asyncio.Event().wait()

    async with async_store(kind, request, tmp_path) as store:
        for steps in range(12):  # cancel after 0, 1, ... turns of the loop: before, during and
            task = asyncio.create_task(hold_for_ever(store))  # after the acquire's I/O
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):  # (a lost cancel: TimeoutError)
                await asyncio.wait_for(task, 10)
            assert await free_within(store, 2.0), f"held after a cancel at step {steps}"
        if kind == "redis":
            db: redis.Redis = request.getfixturevalue("redis_db")
            assert db.exists(KEY + ":relogin") == 0


async def test_a_lock_taken_in_one_task_is_released_from_another(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with async_store(kind, request, tmp_path) as store:
        hold = store.lock(KEY, 1.0)
        assert await asyncio.create_task(hold.__aenter__()) is True
        assert not await free_within(store, 0.05)
        await asyncio.create_task(hold.__aexit__(None, None, None))
        assert await free_within(store, 0.5)
        if kind != "memory":  # and another process's store sees it free at once
            sync = open_store(sync_spec(kind, request, tmp_path))
            with sync.lock(KEY, 0) as free:
                assert free


# --- the event loop is never blocked -------------------------------------------------------


class SlowCallbacks(logging.Handler):
    """Collects asyncio's debug-mode warnings of callbacks that held the loop too long."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Executing"):
            self.seen.append(record.getMessage())


@contextlib.contextmanager
def watching_the_loop(limit: float) -> Iterator[SlowCallbacks]:
    loop = asyncio.get_running_loop()
    handler = SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    debug, slow = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = limit
    try:
        yield handler
    finally:
        loop.set_debug(debug)
        loop.slow_callback_duration = slow
        logger.removeHandler(handler)


#: A step that holds the loop this long is a blocking call (the lock waits below are 0.6 s);
#: well above a busy shared machine's scheduling jitter.
SLOW = 0.4


async def test_no_store_blocks_the_loop_even_waiting_on_a_lock_held_elsewhere(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with async_store(kind, request, tmp_path) as store:
        release = asyncio.Event()
        if kind == "memory":  # another task holds it
            held = asyncio.Event()

            async def hold() -> None:
                async with store.lock(KEY, 1.0):
                    held.set()
                    await release.wait()

            holder_task = asyncio.create_task(hold())
            await held.wait()
        else:  # another process holds it
            holder = await Child.start(sync_spec(kind, request, tmp_path), KEY, "hold")
            assert await holder.line() == "held"
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        with watching_the_loop(SLOW) as slow:
            ticker = asyncio.create_task(tick())
            async with store.lock(KEY, 0.6) as got:  # held elsewhere: we wait 0.6 s
                assert not got
            for generation in range(1, 30):
                await store.save(KEY, record(generation))
                assert await store.load(KEY) is not None
            ticker.cancel()
        if kind == "memory":
            release.set()
            await holder_task
        else:
            await holder.tell()
            assert await holder.finish() == 0
    assert slow.seen == []
    assert ticks >= 5  # the loop kept turning while the lock was waited for (blocked: 0 or 1)


async def test_the_loop_check_does_catch_a_blocking_lock_wait(tmp_path: Path) -> None:
    # The check above can fail: the sync store's lock waited for on the loop is reported.
    spec = f"file:{tmp_path / 'tokens.json'}"
    holder = await Child.start(spec, KEY, "hold")
    assert await holder.line() == "held"
    with watching_the_loop(SLOW) as slow:

        async def blocking() -> None:
            with FileStore(tmp_path / "tokens.json").lock(KEY, 0.6) as got:
                assert not got

        await asyncio.create_task(blocking())
    await holder.tell()
    assert await holder.finish() == 0
    assert len(slow.seen) == 1
