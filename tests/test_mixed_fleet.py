"""A mixed fleet (issue 16): a sync process (KSSession) and an async process (AsyncKSSession,
its requests as concurrent tasks) sharing one token store meet one expiry together: one
re-login between them, the other adopts it, and every request succeeds. Real processes
(:mod:`tests.mp_worker`), a real ``redis-server`` (and a shared file), the sandbox over
loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from session_fsm import KSSession, open_store
from session_fsm.sandbox import Sandbox
from tests import redis_server
from tests.mp_worker import CTX, ORDERS, Fleet

#: Requests each process sends at once when the expiry is met.
AT_ONCE = 20

redis_url = redis_server.redis_url  # fixture
store_url = redis_server.store_url  # fixture


def logged_in(report: dict[str, Any]) -> bool:
    return any(t == "authenticate" and o == "ok" for t, o, _ in report["records"])


def test_a_sync_and_an_async_process_meet_one_expiry_with_one_login(
    sb: Sandbox, children: Fleet, store_url: str, new_session: Callable[..., KSSession]
) -> None:
    first = new_session(store=store_url)
    first.connect()
    old = first.snapshot().session_token
    sb.control.expire()
    barrier = CTX.Barrier(2)
    script = [("resume",), ("barrier",), ("gets", ORDERS, AT_ONCE)]
    ids = [children.start(store_url, script, {"barrier": barrier}, driver=driver)
           for driver in ("sync", "async")]  # fmt: skip
    done = [children.reports(i, len(script), timeout=60) for i in ids]  # each step succeeded
    assert all(children.join(i) == 0 for i in ids)

    assert [steps[0]["kind"] for steps in done] == ["KSSession", "AsyncKSSession"]
    assert [steps[0]["generation"] for steps in done] == [1, 1]  # both resumed the old token
    stats = sb.control.stats()
    assert stats["logins"] == 2 and stats["sessions"] == 2  # ours, then one re-login in all
    assert [steps[-1]["generation"] for steps in done] == [2, 2]
    assert sorted(logged_in(steps[-1]) for steps in done) == [False, True]  # one logged in
    assert stats["calls"][f"GET {ORDERS}"] >= 2 * AT_ONCE
    assert stats["logged_out_token_uses"] == 0
    new = open_store(store_url).load(first.store_key())
    assert old is not None and new is not None and new.generation == 2
    text = children.all_logs()
    for token in (old, new.session_token):
        assert token.reveal() not in text
