"""Issues 15 and 16, performance of the core: what a new session is, and what connect() sends.

A session made and not yet used is one object the cyclic garbage collector tracks (itself):
its core and snapshot, driver, token store, lock and list of waiting threads are made at their
first use, and its identity is its credentials' own. At 100,000 sessions each tracked object is
walked by every full collection, and three objects a session made CPython run one more full
collection over the whole heap while they were made (``benchmarks/sessions_create.py``).
"""

from __future__ import annotations

import gc
import threading
from collections import Counter

import pytest

from session_fsm import ConfigurationError, KSSession, Wire, contract
from session_fsm.sandbox import Sandbox
from session_fsm.stores import MemoryStore, StoredSession
from session_fsm.table import State
from tests.conftest import make_credentials


def _tracked_per_session(n: int = 200) -> dict[str, float]:
    wire = Wire()
    creds = [make_credentials(userid=f"user-{i}") for i in range(n)]
    [KSSession(c, host=contract.PRODUCTION_HOST, wire=wire) for c in creds[:5]]  # warm caches
    gc.collect()
    before = {id(o) for o in gc.get_objects()}
    sessions = [KSSession(c, host=contract.PRODUCTION_HOST, wire=wire) for c in creds]
    new = Counter(type(o).__name__ for o in gc.get_objects() if id(o) not in before)
    del sessions
    new["list"] -= 1  # the list holding the sessions
    return {k: v / n for k, v in new.items() if v >= n}


def test_a_new_session_is_one_tracked_object() -> None:
    per_session = _tracked_per_session()
    assert per_session == {"KSSession": 1.0}


def test_a_session_once_read_has_its_core_and_snapshot() -> None:
    wire = Wire()
    sessions = [KSSession(make_credentials(userid=f"u{i}"), wire=wire) for i in range(50)]
    gc.collect()
    before = {id(o) for o in gc.get_objects()}
    states = {s.state for s in sessions}
    new = Counter(type(o).__name__ for o in gc.get_objects() if id(o) not in before)
    assert states == {State.UNINITIALISED}
    assert new["SessionCore"] == 50 and new["Snapshot"] == 50


def test_a_new_session_holds_no_core_driver_store_or_lock_until_used() -> None:
    s = KSSession(make_credentials(), host=contract.PRODUCTION_HOST)
    assert "_core" not in vars(s) and "_driver" not in vars(s) and "_store" not in vars(s)
    assert s.session_id and s.origin == contract.PRODUCTION_HOST  # (no core needed for these)
    assert "_core" not in vars(s)
    store = s.store  # made at its first use, and kept
    assert isinstance(store, MemoryStore) and s.store is store
    assert s._driver.store is store and "_driver" in vars(s) and "_core" not in vars(s)
    assert s.renewal_waiters == 0 and "_lock" not in vars(s._driver)
    core = s._core  # made at its first use, and kept
    assert vars(s)["_core"] is core and s._core is core


def test_the_core_made_at_first_use_is_the_sessions_own() -> None:
    seen: list[object] = []
    clock = lambda: 1234.5  # noqa: E731
    s = KSSession(make_credentials(userid="someone"), clock=clock, on_transition=seen.append)
    core = s._core
    assert core.owner is s and core.session_id == s.session_id and core.clock is clock
    assert core.credentials is s.credentials and core.config is s.config
    assert core.origin == s.origin and core.callbacks == [seen.append]
    assert s.snapshot().who is s.credentials.identity


def test_bad_settings_still_raise_when_the_session_is_made() -> None:
    with pytest.raises(ConfigurationError, match="unknown option"):
        KSSession(make_credentials(), no_such_option=1)
    with pytest.raises(ConfigurationError):
        KSSession(make_credentials(), host="https://evil.example.net")
    with pytest.raises(ConfigurationError, match="on_transition"):
        KSSession(make_credentials(), on_transition=42)  # type: ignore[arg-type]


def test_threads_meeting_a_new_session_get_one_core() -> None:
    s = KSSession(make_credentials(), host=contract.PRODUCTION_HOST)
    start = threading.Barrier(16)
    seen: list[int] = []

    def look() -> None:
        start.wait()
        seen.append(id(s._core))

    threads = [threading.Thread(target=look) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and seen[0] == id(s._core)


def test_threads_meeting_a_new_session_get_one_store_and_one_lock() -> None:
    s = KSSession(make_credentials(), host=contract.PRODUCTION_HOST)
    start = threading.Barrier(16)
    seen: list[tuple[int, int, int]] = []

    def look() -> None:
        start.wait()
        seen.append((id(s._driver), id(s.store), id(s._driver.lock)))

    threads = [threading.Thread(target=look) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1


def test_a_given_store_is_used_and_a_record_saved_there_is_resumed(sb: Sandbox) -> None:
    store = MemoryStore()
    s = KSSession(make_credentials(), host=sb.url, store=store)
    assert s.store is store
    s.connect()
    again = KSSession(make_credentials(), host=sb.url, store=store)
    assert again.resume() and again.state is State.AUTHENTICATED


def test_the_own_store_made_at_first_use_is_the_one_the_session_reads(sb: Sandbox) -> None:
    first = KSSession(make_credentials(), host=sb.url)
    first.connect()
    record = first.store.load(first.store_key())
    assert isinstance(record, StoredSession)
    later = KSSession(make_credentials(), host=sb.url)
    later.store.save(later.store_key(), record)  # the store made here is the one it reads
    assert later.resume() and later.snapshot().generation == record.generation


def test_sessions_of_one_credentials_start_with_its_identity() -> None:
    creds = make_credentials()
    a = KSSession(creds, host=contract.PRODUCTION_HOST)
    b = KSSession(creds, host=contract.PRODUCTION_HOST)
    assert a.identity() is creds.identity is b.identity()
    who = creds.identity
    assert (who.userid, who.consumer_key, who.ip, who.app_id) == (
        creds.userid, creds.consumer_key, creds.ip, creds.app_id,
    )  # fmt: skip
    assert who.access_token is creds.bearer
