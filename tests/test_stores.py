"""Token stores: choosing one, the file store's guarantees, the Redis store, and the session's
use of a store (resume without HTTP, re-login over an expired stored token, logout deletes).
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from session_fsm import KSSession, MemoryStore, StoredSession, open_store
from session_fsm.errors import ConfigurationError
from session_fsm.file_store import FileStore
from session_fsm.redis_store import RedisStore
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.stores import StoreError, store_key
from session_fsm.table import State
from tests import redis_server
from tests.conftest import LogCapture
from tests.mp_worker import CTX, ORDERS, SESSION_CALLS, hammer_reads

Factory = Callable[..., KSSession]
TOKEN = "tok-5f2c9e71d0a84b6b"  # a stand-in session token the logs must never show
KEY = store_key("http://127.0.0.1:1/apim", "demo-user")


def record(generation: int = 1, token: str = TOKEN) -> StoredSession:
    return StoredSession("http://127.0.0.1:1/apim", "demo-user", Secret(token), generation, 1.5)


redis_url = redis_server.redis_url  # fixtures: a module's redis-server, an emptied db
redis_db = redis_server.redis_db


@pytest.fixture(params=["memory", "file", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str | MemoryStore:
    """One store of each kind; memory as an object (a ``memory:`` string is per session)."""
    if request.param == "memory":
        return MemoryStore()
    if request.param == "file":
        return f"file:{tmp_path / 'tokens.json'}"
    request.getfixturevalue("redis_db")
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture(params=["file", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store two sessions reach by the same string (what two processes would write)."""
    if request.param == "file":
        return f"file:{tmp_path / 'tokens.json'}"
    request.getfixturevalue("redis_db")
    url: str = request.getfixturevalue("redis_url")
    return url


def session_calls(sb: Sandbox) -> dict[str, int]:
    calls = sb.control.stats()["calls"]
    return {k: calls.get(k, 0) for k in SESSION_CALLS}


def warnings_of(logs: LogCapture) -> list[dict[str, object]]:
    return [e for e in logs.events() if e.get("event") == "token_store_ignored"]


# --- choosing a store ---------------------------------------------------------------------------


def test_open_store_by_spec(tmp_path: Path) -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store("memory:"), MemoryStore)
    mine = MemoryStore()
    assert open_store(mine) is mine
    f = open_store(f"file:{tmp_path}/t.json")
    assert isinstance(f, FileStore) and f.path == tmp_path / "t.json"
    g = open_store(f"file://{tmp_path}/t.json")
    assert isinstance(g, FileStore) and g.path == tmp_path / "t.json"
    r = open_store("redis://:hunter2@127.0.0.1:6390/3?lock_ttl=2.5")
    assert isinstance(r, RedisStore) and r.lock_ttl == 2.5
    assert repr(r) == "RedisStore(127.0.0.1:6390/3, lock_ttl=2.5)"  # no password
    for bad in ("file:", "file://elsewhere/t.json", "mongodb://x", "redis://h:1/0?lock_ttl=x"):
        with pytest.raises(ConfigurationError):
            open_store(bad)
    with pytest.raises(ConfigurationError) as err:
        open_store("redis+x://:hunter2@h/0")
    assert "hunter2" not in str(err.value)


def test_stored_session_round_trip_and_strict_parse() -> None:
    r = record(7)
    assert StoredSession.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert TOKEN not in repr(r)
    for bad in (
        [],
        {**r.to_json(), "session_token": None},
        {**r.to_json(), "session_token": ""},
        {**r.to_json(), "generation": "7"},
        {**r.to_json(), "generation": True},
        {**r.to_json(), "login_time": float("nan")},
        {k: v for k, v in r.to_json().items() if k != "host"},
    ):
        with pytest.raises(ValueError) as err:
            StoredSession.from_json(bad)
        assert TOKEN not in str(err.value)


# --- the file store -------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_store_is_0600_when_created_and_after_each_replace(tmp_path: Path) -> None:
    path = tmp_path / "new-folder" / "tokens.json"
    store = FileStore(path)
    old = os.umask(0)  # a permissive umask must not leak into the file's mode
    try:
        store.save(KEY, record(1))
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700
        path.chmod(0o644)  # say someone loosened it
        inode = path.stat().st_ino
        store.save(KEY, record(2))
        assert mode(path) == 0o600 and path.stat().st_ino != inode  # replaced, not rewritten
        with store.lock(KEY, 1.0) as got:
            assert got
        for lock_file in tmp_path.glob("new-folder/*.lock"):
            assert mode(lock_file) & 0o077 == 0, lock_file
    finally:
        os.umask(old)
    assert store.load(KEY) == record(2)
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_file_store_reader_in_another_process_never_sees_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = FileStore(path)
    store.save("v", record(1))
    stop, ready, out = CTX.Event(), CTX.Event(), CTX.Queue()
    reader = CTX.Process(target=hammer_reads, args=(str(path), stop, ready, out), daemon=True)
    reader.start()
    try:
        assert ready.wait(30), "reader did not start"
        for gen in range(2, 202):
            # Files of very different sizes (about 1 KB and 200 KB), so a torn write would show.
            store.save("v", record(gen, token="x" * (200_000 if gen % 2 else 1_000)))
        stop.set()
        seen = out.get(timeout=30)
    finally:
        stop.set()
        reader.join(10)
        if reader.is_alive():
            reader.kill()
            reader.join(5)
    assert seen["bad"] == 0 and seen["missing"] == 0, seen
    assert seen["good"] > 50 and seen["versions"] > 10, seen  # it really read during the writes


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\x00\x01garbage\xff", id="binary"),
        pytest.param(b"", id="empty"),
        pytest.param("TRUNCATED", id="truncated"),
        pytest.param(b'{"theme": "dark"}', id="foreign-json"),
        pytest.param(b"[1, 2, 3]", id="foreign-list"),
        pytest.param(b'{"format": "session_fsm/1", "sessions": []}', id="bad-sessions"),
        pytest.param("BAD-ENTRY", id="bad-entry"),
    ],
)
def test_file_store_bad_file_warns_once_and_reads_empty(
    tmp_path: Path, logs: LogCapture, content: bytes | str
) -> None:
    path = tmp_path / "tokens.json"
    good = {"format": "session_fsm/1", "sessions": {KEY: record(3).to_json()}}
    if content == "TRUNCATED":
        text = json.dumps(good)
        content = text[: text.index(TOKEN) + len(TOKEN) + 3].encode()  # the token is in it
    elif content == "BAD-ENTRY":
        bad = {**record(3).to_json(), "generation": "three"}
        content = json.dumps({"format": "session_fsm/1", "sessions": {KEY: bad}}).encode()
    assert isinstance(content, bytes)
    path.write_bytes(content)
    store = FileStore(path)
    assert store.load(KEY) is None
    assert store.load(KEY) is None
    events = warnings_of(logs)
    assert len(events) == 1, events
    assert events[0]["level"] == "warning" and events[0]["path"] == str(path)
    assert TOKEN not in logs.text()
    store.save(KEY, record(4))  # treated as empty: replaced by a good file
    assert store.load(KEY) == record(4)
    assert len(warnings_of(logs)) == 1


def test_session_over_a_corrupt_file_logs_in_and_repairs_it(
    new_session: Factory, sb: Sandbox, tmp_path: Path, logs: LogCapture
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"format": "session_fsm/1", "sess')
    s = new_session(store=f"file:{path}")
    assert s.resume() is False and s.state is State.UNINITIALISED
    s.connect()
    s.get(ORDERS)
    assert sb.control.stats()["logins"] == 1
    assert len(warnings_of(logs)) == 1
    assert FileStore(path).load(s.store_key()) is not None


def test_file_store_write_failure_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = FileStore(blocker / "tokens.json")  # its folder cannot be created
    with pytest.raises(StoreError) as err:
        store.save(KEY, record())
    assert TOKEN not in str(err.value)


def test_file_relogin_lock_is_per_key_and_exclusive_across_store_objects(tmp_path: Path) -> None:
    a, b = FileStore(tmp_path / "t.json"), FileStore(tmp_path / "t.json")
    results: list[bool] = []
    with a.lock(KEY, 1.0) as got:
        assert got
        t = threading.Thread(target=lambda: results.append(_try_lock(b, KEY)))
        t.start()
        t.join(10)
        with b.lock("another-user", 0.0) as other:
            assert other  # a different key never waits
    assert results == [False]
    with b.lock(KEY, 0.0) as again:
        assert again


def _try_lock(store: FileStore, key: str) -> bool:
    with store.lock(key, 0.2) as got:
        return got


# --- the Redis store ------------------------------------------------------------------------------


def test_redis_lock_times_out_for_waiters_and_expires_after_its_ttl(
    redis_url: str, redis_db: redis.Redis, logs: LogCapture
) -> None:
    # A live holder's lock is extended for max_hold seconds, then expires lock_ttl later.
    holder = RedisStore.from_url(redis_url + "?lock_ttl=0.5&max_hold=0.5")
    waiter = RedisStore.from_url(redis_url)
    with holder.lock(KEY, 1.0) as got:
        assert got
        with waiter.lock(KEY, 0.1) as early:
            assert not early  # held, and not yet expired
        with waiter.lock(KEY, 5.0) as late:
            assert late  # the holder's lock expired after 1 s although it never released
    events = [e["event"] for e in logs.events()]
    assert events == ["relogin_lock_hold_limit", "relogin_lock_expired"]


def test_redis_bad_value_warns_once_and_reads_absent(
    redis_url: str, redis_db: redis.Redis, logs: LogCapture
) -> None:
    store = RedisStore.from_url(redis_url)
    redis_db.set(KEY, json.dumps({**record().to_json(), "generation": None}))
    assert store.load(KEY) is None and store.load(KEY) is None
    redis_db.set(KEY, b"\xff" + TOKEN.encode())
    assert store.load(KEY) is None
    assert len(warnings_of(logs)) == 1
    assert TOKEN not in logs.text()
    store.save(KEY, record(2))
    assert store.load(KEY) == record(2)


def test_redis_unreachable_is_a_store_error_without_the_password() -> None:
    port = redis_server._free_port()  # nothing listens there
    store = RedisStore.from_url(f"redis://:hunter2@127.0.0.1:{port}/0?socket_connect_timeout=1")
    for action in (lambda: store.load(KEY), lambda: store.save(KEY, record())):
        with pytest.raises(StoreError) as err:
            action()
        assert "hunter2" not in str(err.value) and TOKEN not in str(err.value)
        assert f"127.0.0.1:{port}/0" in str(err.value)


# --- sessions over a store ------------------------------------------------------------------------


def test_logout_deletes_the_stored_token(
    new_session: Factory, sb: Sandbox, any_store: str | MemoryStore
) -> None:
    s = new_session(store=any_store)
    s.connect()
    assert s.store.load(s.store_key()) is not None
    s.logout()
    assert s.store.load(s.store_key()) is None
    again = new_session(store=any_store)
    assert again.resume() is False and again.state is State.UNINITIALISED


def test_stored_live_token_resumes_without_http(
    new_session: Factory, sb: Sandbox, shared_store: str
) -> None:
    new_session(store=shared_store).connect()
    calls = sb.control.stats()["calls"]
    s = new_session(store=shared_store)
    assert s.resume() is True
    assert s.state is State.AUTHENTICATED and s.generation == 1
    assert sb.control.stats()["calls"] == calls  # no HTTP call at all
    s.get(ORDERS)
    assert session_calls(sb) == {k: calls.get(k, 0) for k in SESSION_CALLS}
    assert [(r.trigger, r.reason) for r in s.history] == [("restore", "store")]


def test_stored_expired_token_begins_authenticated_then_relogs_in_once(
    new_session: Factory, sb: Sandbox, shared_store: str
) -> None:
    new_session(store=shared_store).connect()
    sb.control.expire()
    calls = sb.control.stats()["calls"]
    s = new_session(store=shared_store)
    assert s.resume() is True and s.state is State.AUTHENTICATED
    assert sb.control.stats()["calls"] == calls  # began Authenticated without HTTP
    s.get(ORDERS)  # meets a 401: the normal re-login path takes over
    stats = sb.control.stats()
    assert stats["logins"] == 2 and stats["calls"][f"GET {ORDERS}"] == 2
    assert [r.trigger for r in s.history] == [
        "restore", "session_expired", "login", "authenticate",
    ]  # fmt: skip
    assert s.generation == 2
    stored = s.store.load(s.store_key())
    assert stored is not None and stored.generation == 2


def test_connect_after_logout_adopts_what_another_session_saved(
    new_session: Factory, sb: Sandbox, shared_store: str
) -> None:
    a, b = new_session(store=shared_store), new_session(store=shared_store)
    a.connect()
    b.connect()  # adopts a's session
    a.logout()
    b.get(ORDERS)  # its token died with the logout: it logs in again and saves generation 2
    assert sb.control.stats()["logins"] == 2
    a.connect()  # LoggedOut has no restore edge: a logs in along the table, no crash
    assert a.state is State.AUTHENTICATED and a.generation == 3
    b.get(ORDERS)  # and b adopts that on its next 401
    assert sb.control.stats()["logins"] == 3 and b.generation == 3
