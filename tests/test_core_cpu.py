"""Issue 16, the CPU a ``connect()`` costs in the core: what its cheaper construction keeps.

A connected session is no reference cycle (the core holds its session weakly), so dropping it
frees it at once instead of leaving it, its core, driver and store for the cyclic garbage
collector; what hands the core out beyond its session (``session.auth``) keeps the session,
so callbacks still get it.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from session_fsm import AsyncKSSession, KSSession, contract
from session_fsm.sandbox import Sandbox
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
