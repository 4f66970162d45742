"""Callers that wait for a re-login share its outcome, failure included (both drivers).

When a session expires under many threads (or tasks) and the re-login fails (the login endpoint
answers 503 past its retries), the callers that were waiting for that re-login raise its error:
one login attempt, not one per waiter in turn (which, each with its retries, kept the last
caller waiting for minutes and hammered a login endpoint that was already failing). A caller
that meets the expiry after the failure tries again: a failure is shared only with its waiters.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from session_fsm import KSError, KSSession, ServiceUnavailable, contract
from session_fsm.sandbox import Sandbox
from tests.conftest import FAST_RETRY

ORDERS = contract.ORDERS_REPORT[1]
LOGIN = contract.LOGIN_USERID[1]
N = 12
#: How long the first login answer is held: the other callers meet the expiry and queue
#: meanwhile (the test checks they all did before the answer came).
HELD = 3.0


def login_down(sb: Sandbox) -> None:
    """Every login call of the next re-login answers 503 (its retries too), the first late."""
    sb.control.reset()
    sb.control.expire()
    sb.control.fault(LOGIN, status=503, delay=HELD)
    sb.control.fault(LOGIN, status=503, count=FAST_RETRY.total)


def login_calls(sb: Sandbox) -> int:
    return int(sb.control.stats()["calls"].get(f"POST {LOGIN}", 0))


def test_threads_waiting_for_a_failed_relogin_raise_its_error(
    sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    s = new_session(relogin_timeout=60)
    s.connect()
    login_down(sb)
    errors: list[KSError] = []
    start = threading.Barrier(N)

    def worker() -> None:
        start.wait()
        try:
            s.get(ORDERS)
        except KSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(N)]
    for t in threads:
        t.start()
    most = 0
    deadline = time.monotonic() + 2 * HELD
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        most = max(most, s.renewal_waiters)
        time.sleep(0.005)  # watching real threads queue: no clock to inject
    for t in threads:
        t.join(60)
    assert most == N - 1, "every other thread was waiting for the one re-login"
    assert login_calls(sb) == 1 + FAST_RETRY.total  # one login, with its retries
    assert len(errors) == N and all(type(e) is ServiceUnavailable for e in errors)
    assert len({id(e) for e in errors}) == N  # each caller its own error object
    assert sum(r.trigger == "login" and r.outcome == "failed" for r in s.history) == 1
    # A caller that meets the expiry after the failure tries again (and now succeeds).
    assert s.get(ORDERS).status_code == 200 and login_calls(sb) == 2 + FAST_RETRY.total


@pytest.mark.anyio
async def test_tasks_waiting_for_a_failed_relogin_raise_its_error(sb: Sandbox) -> None:
    pytest.importorskip("aiohttp")
    from session_fsm import AsyncKSSession
    from tests.conftest import Clock, make_credentials

    s = AsyncKSSession(make_credentials(), host=sb.url, retry=FAST_RETRY, timeout=(2.0, 10.0),
                       clock=Clock(), relogin_timeout=60)  # fmt: skip
    try:
        await s.connect()
        login_down(sb)
        tasks = [asyncio.create_task(s.get(ORDERS)) for _ in range(N)]
        most = 0
        while not all(t.done() for t in tasks):
            most = max(most, s.renewal_waiters)
            await asyncio.sleep(0.005)  # the loop runs the tasks meanwhile
        results: list[Any] = [t.exception() for t in tasks]
        assert most == N - 1, "every other task was waiting for the one re-login"
        assert login_calls(sb) == 1 + FAST_RETRY.total
        assert all(type(e) is ServiceUnavailable for e in results)
        assert sum(r.trigger == "login" and r.outcome == "failed" for r in s.history) == 1
        assert (await s.get(ORDERS)).status_code == 200
        assert login_calls(sb) == 2 + FAST_RETRY.total
    finally:
        await s.close()


# --- the replay rule for form fields (the mutation run's finding) ------------------------------


def test_a_post_of_form_fields_is_sent_again_after_the_relogin(
    sb: Sandbox, new_session: Callable[..., KSSession]
) -> None:
    """Form fields (``data={"jData": ...}``, how the order API is called) are encoded again for
    every send, so a POST of them is replayed like one of bytes; only a stream is not."""
    s = new_session(replay_posts=True)
    s.connect()
    sb.control.reset()
    sb.control.expire()
    try:
        answer = s.post(contract.ORDER_NORMAL[1], data={"jData": '{"qt": "1"}'})
    except KSError as exc:  # the sandbox wants JSON: the replay's 400 is the order's own error
        answer = exc.response  # type: ignore[attr-defined]
    assert [h.status_code for h in answer.history] == [401]  # sent, renewed, sent again
    assert sb.control.stats()["calls"][f"POST {contract.ORDER_NORMAL[1]}"] == 2
    with pytest.raises(KSError) as err:
        sb.control.expire()
        s.post(contract.ORDER_NORMAL[1], data=iter([b'{"qt": "1"}']))  # a stream: never twice
    assert type(err.value).__name__ == "NotReplayable"
