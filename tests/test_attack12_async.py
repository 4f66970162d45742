"""Attack 12 on the async side (issue 16): single flight across tasks and event loops, a task
cleaning up after its cancellation, and a renewal that fails while the requests of its expiry
come back, with real parts (the sandbox over loopback HTTP, a real redis-server). The secrets
part of the attack: tests/test_attack12_async_secrets.py.

Each test here failed on the code before the commit that added it (see the commit messages).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from session_fsm import AsyncKSSession, State, contract
from session_fsm.errors import SessionExpired
from session_fsm.sandbox import Sandbox
from tests import redis_server
from tests.conftest import FAST_RETRY, make_credentials
from tests.test_async_concurrency import calls, until

pytestmark = pytest.mark.anyio
Factory = Callable[..., AsyncKSSession]
INIT, LOGIN, TWO_FA = (contract.SESSION_INIT, contract.LOGIN_USERID, contract.TWO_FA_ACCESSCODE)
ORDERS = contract.ORDERS_REPORT[1]
#: The demo account's secrets (tests/conftest.make_credentials).
PASSWORD, BEARER = "demo-password", "demo-access-token"
#: How long the sandbox holds a delayed answer: far longer than a test waits for it.
HELD = 1.5
redis_url = redis_server.redis_url  # fixture: the module's redis-server


# --- the session's lock just after it was given back ------------------------------------------


async def handed_over(s: AsyncKSSession, sb: Sandbox) -> asyncio.Task[None]:
    """A logout (its call held by the sandbox for :data:`HELD` s) queued on ``s``'s lock while
    this test holds the lock, which is then given back: the lock goes to the logout's waiter,
    which has not run yet (``locked()`` is False until it does). Returns the logout's task."""
    logout = contract.SESSION_LOGOUT
    lock = s._driver.lock
    await lock.acquire()
    sb.control.fault(logout[1], method=logout[0], delay=HELD, count=1)
    task = asyncio.create_task(s.logout())
    await until(lambda: s.renewal_waiters == 0 and bool(getattr(lock, "_waiters", None)),
                "the logout waiting for the lock")  # fmt: skip
    lock.release()
    return task


async def test_a_soft_refresh_meeting_a_lock_just_handed_over_does_not_wait(
    new_async: Factory, sb: Sandbox, clock: Any
) -> None:
    """In the soft window a request renews only if the lock is free now, else carries on
    with its token at once. Met just after the lock was given to a waiting logout, it went on
    at once. Before: it waited the logout's whole call (``locked()`` was False, and
    ``acquire()`` queued behind the logout)."""
    s = new_async(max_session_age=3600.0, soft_window=600.0)
    await s.connect()
    clock.advance(3600 - 300)  # in the soft window
    logout = await handed_over(s, sb)
    started = time.monotonic()
    assert (await s.get(ORDERS)).status_code == 200
    assert time.monotonic() - started < HELD / 2
    await logout
    assert s.state is State.LOGGED_OUT


async def test_a_renewal_meeting_a_lock_just_handed_over_waits_at_most_relogin_timeout(
    new_async: Factory, sb: Sandbox, clock: Any
) -> None:
    """Past the hard deadline a request waits at most ``relogin_timeout`` for the lock, also
    just after it was given to a waiting logout. Before: it waited the logout's whole call."""
    s = new_async(max_session_age=3600.0, soft_window=600.0, relogin_timeout=0.2)
    await s.connect()
    clock.advance(3600 + 1)  # past the hard deadline
    logout = await handed_over(s, sb)
    started = time.monotonic()
    with pytest.raises(SessionExpired, match=r"gave up after 0\.2s"):
        await s.get(ORDERS)
    assert time.monotonic() - started < HELD / 2
    await logout


# --- more than one event loop ------------------------------------------------------------------


def test_a_session_on_a_second_loop_keeps_its_waiters_waiting(sb: Sandbox) -> None:
    """A session used in one ``asyncio.run`` and then in another (the wire makes a pool per
    loop for this): three tasks meeting an expiry on the second loop make one login and get
    200s. Before: the lock, bound to the first loop by its first waiter, refused every waiter
    of the second loop at once with 'gave up after 30s waiting' (nothing had waited)."""
    s = AsyncKSSession(make_credentials(), host=sb.url, retry=FAST_RETRY)

    async def three_meet_an_expiry() -> list[object]:
        await s.connect()
        sb.control.expire()
        sb.control.fault(LOGIN[1], method=LOGIN[0], delay=0.3, count=1)  # the waiters wait
        answers = await asyncio.gather(*(s.get(ORDERS) for _ in range(3)),
                                       return_exceptions=True)  # fmt: skip
        await s.close()
        return [getattr(a, "status_code", a) for a in answers]

    assert asyncio.run(three_meet_an_expiry()) == [200, 200, 200]
    assert asyncio.run(three_meet_an_expiry()) == [200, 200, 200]
    assert sb.control.stats()["logins"] == 3 and s.generation == 3  # connect, two renewals


def test_sessions_sharing_a_memory_store_on_a_second_loop_wait_for_its_lock(sb: Sandbox) -> None:
    """Two sessions of one user sharing one AsyncMemoryStore meet an expiry together in one
    ``asyncio.run`` and then in another: both get 200s each time, one login each time (the
    other adopts it). Before: the store's per-key asyncio lock, bound to the first loop by its
    first waiter, refused the second loop's waiter at once with 'gave up after 30s waiting for
    another process's login'."""
    from session_fsm.aio.stores import AsyncMemoryStore

    store = AsyncMemoryStore()
    pair = [AsyncKSSession(make_credentials(), host=sb.url, retry=FAST_RETRY, store=store)
            for _ in range(2)]  # fmt: skip

    async def both_meet_an_expiry() -> list[object]:
        for s in pair:
            await s.connect()
        sb.control.expire()
        sb.control.fault(LOGIN[1], method=LOGIN[0], delay=0.3, count=1)  # the other waits
        answers = await asyncio.gather(*(s.get(ORDERS) for s in pair), return_exceptions=True)
        for s in pair:
            await s.close()
        return [getattr(a, "status_code", a) for a in answers]

    assert asyncio.run(both_meet_an_expiry()) == [200, 200]
    assert asyncio.run(both_meet_an_expiry()) == [200, 200]
    assert sb.control.stats()["logins"] == 3  # a connect, then one renewal per loop


async def test_an_httpx_client_on_another_threads_loop_is_single_flight_with_the_session(
    new_async: Factory, sb: Sandbox
) -> None:
    """``httpx.AsyncClient(auth=s.auth)`` on an event loop of another thread while the
    session's loop runs: five requests there and five tasks here meet one expiry, one login,
    ten 200s (the renewal runs on the session's loop). Before: the other loop's renewal held
    the session's asyncio lock, and this loop's tasks failed at once with 'gave up after 30s
    waiting'."""
    import threading

    import httpx

    s = new_async()
    await s.connect()
    sb.control.reset()
    sb.control.expire()
    sb.control.fault(LOGIN[1], method=LOGIN[0], delay=0.5, count=1)
    there: list[object] = []

    async def five_with_httpx() -> None:
        async with httpx.AsyncClient(auth=s.auth) as client:
            answers = await asyncio.gather(*(client.get(sb.url + ORDERS) for _ in range(5)))
        there.extend(a.status_code for a in answers)

    other = threading.Thread(target=lambda: asyncio.run(five_with_httpx()))
    other.start()
    try:
        await until(lambda: calls(sb, LOGIN) == 1, "the other loop's login")
        here = await asyncio.gather(*(s.get(ORDERS) for _ in range(5)), return_exceptions=True)
    finally:
        await asyncio.to_thread(other.join, 10)
    assert [getattr(a, "status_code", a) for a in here] == [200] * 5
    assert there == [200] * 5
    assert sb.control.stats()["logins"] == 1 and s.generation == 2


# --- a task cleaning up after its cancellation ------------------------------------------------


async def test_a_task_cleaning_up_after_its_cancellation_renews_through_redis(
    new_async: Factory, sb: Sandbox, redis_url: str
) -> None:
    """A bot's task is cancelled, catches it, and in its clean-up makes one more request
    (cancel its open orders) that needs a renewal: with a Redis store it gets its answer, as
    with the other stores. Before: the Redis lock, taken, was dropped and a CancelledError
    raised (the task's pending cancellation count was read as one swallowed during the
    take)."""
    redis_server.empty(redis_url)
    s = new_async(store=redis_url)
    await s.connect()
    waiting = asyncio.Event()
    cleanup: list[object] = []

    async def bot() -> None:
        try:
            waiting.set()
            await asyncio.sleep(HELD * 10)
        except asyncio.CancelledError:
            sb.control.expire()
            try:
                cleanup.append((await s.get(ORDERS)).status_code)
            except BaseException as exc:  # (recorded, then the cancellation goes on)
                cleanup.append(exc)
            raise

    task = asyncio.create_task(bot())
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleanup == [200]
    assert s.state is State.AUTHENTICATED and s.generation == 2
    await s.store.aclose()  # type: ignore[attr-defined]


# --- a renewal that fails, and the requests that met the same expiry --------------------------


class Chat:
    """A password asked of a person through a bot's chat: it answers, or (``down``) nobody
    does and it raises, its text quoting what was typed; ``asked`` counts the asks."""

    def __init__(self) -> None:
        self.down = False
        self.asked = 0

    def __call__(self) -> str:
        self.asked += 1
        if self.down:
            raise TimeoutError(f"nobody answered; last typed: {PASSWORD}")
        return PASSWORD


@pytest.mark.parametrize("failure", ["provider", "login 500"])
async def test_requests_meeting_one_expiry_share_its_failed_renewal(
    new_async: Factory, sb: Sandbox, failure: str
) -> None:
    """Twenty requests sent with one session meet its expiry; the renewal fails (the password
    provider raises, or the login call answers 500) before the answers of nineteen of them
    come back (the server holds those): each of the twenty raises that failure's typed error,
    and the provider is asked, or the login tried, for one renewal only. Before: each late
    401 renewed again (nineteen more asks of a person, or logins)."""
    from session_fsm.credentials import FromCallable
    from session_fsm.errors import ConfigurationError, ServiceUnavailable

    chat = Chat()
    s = new_async(make_credentials(password=FromCallable(chat)))
    await s.connect()
    positions = contract.POSITIONS_TODAY[1]
    sb.control.expire()
    if failure == "provider":
        chat.down = True
    else:
        sb.control.fault(LOGIN[1], method=LOGIN[0], status=500, count=100)
    sb.control.fault(ORDERS, delay=0.5, count=19)  # their 401s come after the failure
    asked, logins = chat.asked, calls(sb, LOGIN)
    first = asyncio.create_task(s.get(positions))
    late = [asyncio.create_task(s.get(ORDERS)) for _ in range(19)]
    answers = await asyncio.gather(first, *late, return_exceptions=True)
    expected = ConfigurationError if failure == "provider" else ServiceUnavailable
    assert [type(a) for a in answers] == [expected] * 20
    if failure == "provider":
        assert chat.asked - asked == 1
    else:  # one renewal: one login call (a 500 is not retried)
        assert calls(sb, LOGIN) - logins == 1
