"""What one session costs to make (issue 15: 100,000 sessions in one process).

Every object the cyclic garbage collector tracks is walked by each of its full collections,
which is most of what creating 100,000 sessions costs beyond the constructors themselves (see
``benchmarks/sessions_create.py``). A session that is made and not yet used carries no lock
object: its locks are made at their first use.
"""

from __future__ import annotations

import gc
import threading
from collections import Counter

import pytest

from session_fsm import KSSession, Wire, contract
from session_fsm.locks import ForkSafeLock
from session_fsm.secret import Secret
from session_fsm.stores import MemoryStore, StoredSession
from tests.conftest import make_credentials

#: KSSession, SessionCore, Snapshot, Identity, Driver (+ its list of waiters), the session's
#: ForkSafeLock, its MemoryStore. (11 before the locks were made at first use.)
TRACKED_PER_SESSION = 8


def _tracked_by_type(n: int) -> Counter[str]:
    wire = Wire()
    creds = [make_credentials(userid=f"user-{i}") for i in range(n)]
    [KSSession(c, host=contract.PRODUCTION_HOST, wire=wire) for c in creds[:5]]  # warm caches
    gc.collect()
    before = {id(o) for o in gc.get_objects()}
    sessions = [KSSession(c, host=contract.PRODUCTION_HOST, wire=wire) for c in creds]
    new = Counter(type(o).__name__ for o in gc.get_objects() if id(o) not in before)
    del sessions
    return new


def test_a_new_session_is_at_most_eight_tracked_objects_and_no_lock() -> None:
    n = 200
    new = _tracked_by_type(n)
    new.pop("list", None)  # (the list holding the sessions is one of them)
    per_session = {k: v / n for k, v in new.items() if v >= n}
    assert sum(per_session.values()) + 1 <= TRACKED_PER_SESSION, per_session
    assert "lock" not in per_session and "RLock" not in per_session, per_session


def test_a_lock_made_at_first_use_behaves_as_a_lock() -> None:
    lock = ForkSafeLock(timeout=1.0)
    with pytest.raises(RuntimeError):
        lock.release()  # never acquired: what threading.Lock says too
    assert lock.acquire(blocking=False)
    assert not lock.acquire(blocking=False)  # held
    lock.release()
    with lock:
        got: list[bool] = []
        t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.05)))
        t.start()
        t.join()
        assert got == [False]  # another thread waits for it
    rlock = ForkSafeLock(reentrant=True)
    with rlock, rlock:  # re-entrant
        pass


def test_sessions_without_a_store_do_not_share_records() -> None:
    wire = Wire()
    a = KSSession(make_credentials(), host=contract.PRODUCTION_HOST, wire=wire)
    b = KSSession(make_credentials(), host=contract.PRODUCTION_HOST, wire=wire)
    assert isinstance(a.store, MemoryStore) and a.store is not b.store
    record = StoredSession(contract.PRODUCTION_HOST, "demo-user", Secret("t"), 1, 0.0)
    a.store.save(a.store_key(), record)
    assert b.store.load(b.store_key()) is None
    with a.store.lock("k", 1.0) as got_a, b.store.lock("k", 1.0) as got_b:
        assert got_a and got_b  # per store: one store's lock does not hold the other's
