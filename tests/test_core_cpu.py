"""Issue 16, the CPU a ``connect()`` costs in the core: what its cheaper construction keeps.

A connected session is no reference cycle (the core holds its session weakly), so dropping it
frees it at once instead of leaving it, its core, driver and store for the cyclic garbage
collector; what hands the core out beyond its session (``session.auth``) keeps the session,
so callbacks still get it. The frozen values a connect makes (snapshots, records, effects,
answers, models) are built by :func:`~session_fsm.frozen.quick_init`'s ``__init__``, with the
dataclass's semantics.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import inspect
import pickle
import weakref
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, astuple, dataclass, field, fields, replace
from typing import Any

import pytest
import requests

from session_fsm import AsyncKSSession, KSSession, contract
from session_fsm.core.calls import Answer, SessionCall
from session_fsm.core.effects import Delete, Load, Lock, Save, StoreLock, StoreUnlock
from session_fsm.core.snapshot import Snapshot, TransitionRecord
from session_fsm.frozen import quick_init
from session_fsm.models import (
    Encryption,
    ResLogin,
    ResSession2FA,
    ResSessionInit,
    UserCredentials,
    UserDetails,
)
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.stores import StoredSession
from session_fsm.table import State
from tests.conftest import make_credentials

ORDERS = contract.ORDERS_REPORT[1]


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_connected_session_is_freed_when_dropped(sb: Sandbox, no_gc: None) -> None:
    s = KSSession(make_credentials(), host=sb.url)
    s.connect()
    core = weakref.ref(s._core)
    gone = weakref.ref(s)
    s.close()
    del s
    assert gone() is None and core() is None  # by reference counting: no collection ran


def test_a_connected_async_session_is_freed_when_dropped(sb: Sandbox, no_gc: None) -> None:
    async def main() -> tuple[weakref.ref[Any], weakref.ref[Any]]:
        s = AsyncKSSession(make_credentials(), host=sb.url)
        await s.connect()
        refs = weakref.ref(s), weakref.ref(s._core)
        await s.wire.close()
        return refs

    gone, core = asyncio.run(main())
    assert gone() is None and core() is None


def test_an_auth_outliving_its_session_gives_callbacks_the_session(sb: Sandbox) -> None:
    seen: list[object] = []
    s = KSSession(make_credentials(), host=sb.url,
                  on_transition=lambda session, rec: seen.append(session))  # fmt: skip
    s.connect()
    auth, sid = s.auth, s.session_id
    del s
    gc.collect()
    seen.clear()
    sb.control.expire()
    r = requests.get(sb.url + ORDERS, auth=auth, timeout=10)
    assert r.status_code == 200 and len(r.history) == 1  # the 401, a re-login, the replay
    assert seen and all(isinstance(x, KSSession) and x.session_id == sid for x in seen)


# --- quick_init: the frozen dataclasses a connect makes keep the dataclass's semantics ---------


def _twins(**params: Any) -> tuple[type[Any], type[Any]]:
    """A frozen dataclass with the dataclass's own __init__, and the same with quick_init."""

    def make() -> type[Any]:
        class Value:
            a: int
            b: str = "b"
            c: object = None
            d: int = field(default=0, compare=False, repr=False)
            e: list[int] = field(default_factory=list, hash=False)

        Value.__annotations__ = {"a": int, "b": str, "c": object, "d": int, "e": list}
        return dataclass(frozen=True, **params)(Value)

    return make(), quick_init(make())


@pytest.mark.parametrize("slots", [True, False])
def test_quick_init_keeps_the_dataclass_semantics(slots: bool) -> None:
    plain, quick = _twins(slots=slots)
    assert str(inspect.signature(quick)) == str(inspect.signature(plain))
    for args in [(1,), (1, "x"), (1, "x", (3,), 4, [5])]:
        p, q = plain(*args), quick(*args)
        assert repr(p) == repr(q) and astuple(p) == astuple(q)
        assert q == quick(*args) and hash(q) == hash(quick(*args))
        assert copy.deepcopy(q) == q and replace(q, b="y").b == "y"
        with pytest.raises(FrozenInstanceError):
            q.a = 2
    assert quick(1, d=1) == quick(1, d=2)  # (compare=False kept)
    assert quick(1).e == [] and quick(1).e is not quick(1).e  # a fresh default per call
    assert quick(1, e=[1]).e == [1]
    for bad in [(), (1, "b", None, 0, [], "extra")]:
        with pytest.raises(TypeError) as expected:
            plain(*bad)
        with pytest.raises(TypeError) as got:
            quick(*bad)
        assert str(got.value).split("__init__()")[1] == str(expected.value).split("__init__()")[1]
    with pytest.raises(TypeError):
        quick(1, f=1)
    if slots:
        assert not hasattr(quick(1), "__dict__")
    else:
        assert vars(quick(1, "x")) == vars(plain(1, "x"))


def test_quick_init_refuses_what_it_would_change() -> None:
    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class Later:
        a: int

        def __post_init__(self) -> None: ...

    @dataclass(frozen=True)
    class KeywordOnly:
        a: int = field(kw_only=True)

    @dataclass(frozen=True)
    class NotInInit:
        a: int = field(default=0, init=False)

    for cls in (Mutable, Later, KeywordOnly, NotInInit):
        with pytest.raises(TypeError):
            quick_init(cls)


@pytest.mark.parametrize("cls", [Snapshot, TransitionRecord, SessionCall, Answer, Lock, StoreLock,
                                 StoreUnlock, Load, Save, Delete, StoredSession, Encryption,
                                 ResSessionInit, ResLogin, ResSession2FA, UserCredentials,
                                 UserDetails])  # fmt: skip
def test_the_core_values_take_their_fields_in_order(cls: type[Any]) -> None:
    names = [f.name for f in fields(cls)]
    params = inspect.signature(cls).parameters
    assert list(params) == names
    args = [object() for _ in names]
    made = cls(*args)
    assert [getattr(made, n) for n in names] == args
    with pytest.raises(FrozenInstanceError):
        setattr(made, names[0], 1)
    assert made == cls(*args) and replace(made) == made
    again = pickle.loads(pickle.dumps(made))
    assert type(again) is cls and [type(getattr(again, n)) for n in names] == [object] * len(names)


def test_an_evolved_snapshot_is_a_snapshot_as_replace_makes_it() -> None:
    base = Snapshot(State.OTT_ISSUED, "https://a.example/apim", 2, Secret("s" * 20),
                    Secret("o" * 20), 1.5, 2.5, None, 3, None, True, 4.5, 1, None)  # fmt: skip
    names = [f.name for f in fields(Snapshot)]
    for name in names:
        value = object()
        new = base.evolve(**{name: value})
        assert type(new) is Snapshot and new == replace(base, **{name: value})
        assert [getattr(new, n) for n in names] == [
            value if n == name else getattr(base, n) for n in names
        ]
        with pytest.raises(FrozenInstanceError):
            setattr(new, name, 1)
        assert not hasattr(new, "__dict__")
    assert base.evolve() == base and base.evolve() is not base
    plain = base.evolve(session_token=None, one_time_token=None)  # (Secrets refuse pickling)
    assert pickle.loads(pickle.dumps(plain)) == plain
    with pytest.raises(TypeError, match="no field 'nope'"):
        base.evolve(nope=1)


def _entered_as_before(core: Any, dest: State, changes: dict[str, Any]) -> Snapshot:
    """SessionCore.entered as it was written before its table (the oracle)."""
    snap = core.snap
    if dest is State.AUTHENTICATED:
        return snap.evolve(**{**changes, "state": dest, "one_time_token": None,
                              "ott_time": None, "refreshing": False,
                              "refresh_retry_at": None})  # fmt: skip
    if dest is State.OTT_ISSUED:
        return snap.evolve(**{**changes, "state": dest, "session_token": None,
                              "refreshing": False, "refresh_retry_at": None})  # fmt: skip
    host = core.origin if dest is State.UNINITIALISED else changes.get("host", snap.host)
    return snap.evolve(**{**changes, "state": dest, "host": host, "session_token": None,
                          "one_time_token": None, "ott_time": None, "refreshing": False,
                          "refresh_retry_at": None})  # fmt: skip


def test_an_entered_state_keeps_and_forgets_what_it_did() -> None:
    core = KSSession(make_credentials(), host=contract.PRODUCTION_HOST)._core
    full = core.snap.evolve(host="https://b.example/apim", generation=4,
                            session_token=Secret("s" * 20), one_time_token=Secret("o" * 20),
                            ott_time=1.0, login_time=2.0, refreshing=True,
                            refresh_retry_at=3.0, relogins_failed=2)  # fmt: skip
    edges = [{}, {"host": "https://c.example/apim"}, {"one_time_token": Secret("n" * 20),
             "ott_time": 5.0}, {"session_token": Secret("t" * 20), "generation": 5,
             "login_time": 6.0}, {"refreshing": True, "refresh_retry_at": 7.0}]  # fmt: skip
    for start in (core.snap, full):
        for dest in State:
            for changes in edges:
                core.snap = start
                want = _entered_as_before(core, dest, dict(changes))
                got = core.entered(dest, dict(changes))
                assert got == want and got.relogins_failed == want.relogins_failed, (dest, changes)
    snap = core.snap
    changes = {"generation": 9}
    assert snap.evolve_with(changes) == snap.evolve(generation=9) and changes == {}
    with pytest.raises(TypeError, match="no field 'nope'"):
        snap.evolve_with({"nope": 1})
