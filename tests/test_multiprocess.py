"""Several real processes sharing one session through a token store (Redis or a file).

The sandbox runs in this test process; the children (``spawn``, see :mod:`mp_worker`) reach it
over loopback and control nothing. Counts come from the sandbox's own statistics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from session_fsm import KSSession, open_store
from session_fsm.sandbox import Sandbox
from session_fsm.stores import store_key
from tests import redis_server
from tests.mp_worker import CTX, ORDERS, SESSION_CALLS, TWO_FA_PATH, Fleet, wait_for

#: Seconds a Redis re-login lock outlives a killed holder in the kill test.
LOCK_TTL = 2.0
#: Slack for spawning, polling the lock (every 0.1 s) and one login on a busy 2-core machine.
MARGIN = 3.0
FOUR = 4

redis_url = redis_server.redis_url  # fixture
store_url = redis_server.store_url  # fixture


def triggers(report: dict[str, Any]) -> list[str]:
    return [trigger for trigger, outcome, _ in report["records"] if outcome == "ok"]


def session_calls(sb: Sandbox) -> dict[str, int]:
    calls = sb.control.stats()["calls"]
    return {k: calls.get(k, 0) for k in SESSION_CALLS}


def test_processes_starting_together_log_in_once(
    sb: Sandbox, children: Fleet, store_url: str
) -> None:
    barrier = CTX.Barrier(FOUR)
    script = [("barrier",), ("connect",), ("get", ORDERS)]
    ids = [children.start(store_url, script, {"barrier": barrier}) for _ in range(FOUR)]
    done = [children.reports(i, len(script)) for i in ids]
    assert all(children.join(i) == 0 for i in ids)

    stats = sb.control.stats()
    assert stats["logins"] == 1 and stats["sessions"] == 1
    assert {steps[-1]["generation"] for steps in done} == {1}
    connects = [triggers(steps[1]) for steps in done]
    assert sorted(c[-1] for c in connects) == ["authenticate", "restore", "restore", "restore"]
    released = [steps[0]["t1"] for steps in done]
    assert max(released) - min(released) < 1.0  # they really did start together


def test_processes_meeting_expiry_relogin_once(
    sb: Sandbox, children: Fleet, store_url: str, new_session: Callable[..., KSSession]
) -> None:
    first = new_session(store=store_url)
    first.connect()
    old_token = first.snapshot().session_token
    sb.control.expire()
    barrier = CTX.Barrier(FOUR)
    script = [("resume",), ("barrier",), ("get", ORDERS)]
    ids = [children.start(store_url, script, {"barrier": barrier}) for _ in range(FOUR)]
    done = [children.reports(i, len(script)) for i in ids]
    assert all(children.join(i) == 0 for i in ids)

    assert all(steps[0]["generation"] == 1 for steps in done)  # resumed the expired token
    stats = sb.control.stats()
    assert stats["logins"] == 2 and stats["sessions"] == 2  # ours, then one re-login in all
    assert {steps[-1]["generation"] for steps in done} == {2}
    assert sum("authenticate" in triggers(steps[-1]) for steps in done) == 1
    assert stats["calls"][f"GET {ORDERS}"] == 2 * FOUR  # each: one 401, one replay
    new = open_store(store_url).load(first.store_key())
    assert old_token is not None and new is not None and new.generation == 2
    text = children.all_logs()
    assert "restore" in text  # the children did log their transitions ...
    for token in (old_token, new.session_token):
        assert token.reveal() not in text  # ... and never a token


def test_killed_lock_holder_blocks_others_only_until_the_lock_times_out(
    sb: Sandbox, children: Fleet, store_url: str, new_session: Callable[..., KSSession]
) -> None:
    is_redis = store_url.startswith("redis")
    url = f"{store_url}?lock_ttl={LOCK_TTL:g}" if is_redis else store_url
    first = new_session(store=url)
    first.connect()
    sb.control.expire()
    # The holder's 2FA answer never comes: it is inside the re-login lock when killed.
    sb.control.fault(TWO_FA_PATH, method="POST", delay=60)
    holder = children.start(url, [("resume",), ("get", ORDERS)], timeout=(2.0, 120.0))
    children.report(holder)
    two_fa = f"POST {TWO_FA_PATH}"
    wait_for(lambda: sb.control.stats()["calls"].get(two_fa, 0) == 2, 30, "the holder's 2FA")

    go = CTX.Event()
    script = [("resume",), ("wait", "go"), ("get", ORDERS)]
    others = [children.start(url, script, {"go": go}) for _ in range(3)]
    for i in others:
        children.report(i)
    go.set()
    # All three met the 401 and now wait for the lock the holder still has.
    gets = f"GET {ORDERS}"
    wait_for(lambda: sb.control.stats()["calls"][gets] == 4, 30, "the others' 401s")
    if is_redis:
        client = redis.Redis.from_url(store_url)
        assert client.pttl(store_key(sb.url, "demo-user") + ":relogin") > 0
        client.close()

    killed_at = time.monotonic()
    children.kill(holder)
    done = [children.reports(i, 2, timeout=LOCK_TTL + 30)[-1] for i in others]
    assert all(children.join(i) == 0 for i in others)

    assert min(r["t1"] for r in done) > killed_at  # the lock really held every one of them
    waited = max(r["t1"] for r in done) - killed_at
    assert waited < (LOCK_TTL if is_redis else 0.0) + MARGIN
    stats = sb.control.stats()
    assert stats["sessions"] == 2  # ours, then one re-login among the three
    assert stats["logins"] == 3  # ours, the killed holder's, the survivors' one
    assert {r["generation"] for r in done} == {2}
    assert sum("authenticate" in triggers(r) for r in done) == 1


def test_restart_resumes_the_stored_session_without_session_calls(
    sb: Sandbox, children: Fleet, store_url: str
) -> None:
    before = children.start(store_url, [("connect",), ("get", ORDERS)])
    children.reports(before, 2)
    assert children.join(before) == 0
    calls = session_calls(sb)
    assert calls["POST /session/1.0/session/2FA/accesscode"] == 1

    after = children.start(store_url, [("get", ORDERS)])  # its first call is a trading call
    (report,) = children.reports(after, 1)
    assert children.join(after) == 0
    assert session_calls(sb) == calls  # no init, login or 2FA from the new process
    assert sb.control.stats()["calls"][f"GET {ORDERS}"] == 2
    assert triggers(report) == ["restore"]
    assert report["generation"] == 1 and report["state"] == "Authenticated"


def test_other_process_adopts_a_relogin_on_its_next_401(
    sb: Sandbox, children: Fleet, store_url: str
) -> None:
    sync = {name: CTX.Event() for name in ("b_connect", "go_a", "go_b")}
    a = children.start(store_url, [("connect",), ("wait", "go_a"), ("get", ORDERS)], sync)
    b_script = [("wait", "b_connect"), ("connect",), ("wait", "go_b"), ("get", ORDERS)]
    b = children.start(store_url, b_script, sync)
    assert triggers(children.report(a))[-1] == "authenticate"
    sync["b_connect"].set()
    children.report(b)
    assert triggers(children.report(b)) == ["restore"]
    assert sb.control.stats()["logins"] == 1

    sb.control.expire()
    sync["go_a"].set()
    children.report(a)  # its wait
    relogin = children.report(a)
    assert "authenticate" in triggers(relogin) and relogin["generation"] == 2
    assert sb.control.stats()["logins"] == 2

    sync["go_b"].set()
    children.report(b)
    adopted = children.report(b)
    assert triggers(adopted) == ["restore"] and adopted["generation"] == 2
    assert sb.control.stats()["logins"] == 2  # B took A's new token, no login of its own
    assert children.join(a) == 0 and children.join(b) == 0
