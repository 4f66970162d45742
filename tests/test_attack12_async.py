"""Attack 12 on the async side (issue 16): cancellation, single flight across tasks, the
httpx auth, the async stores, the event loop, and secrets, with real parts (the sandbox over
loopback HTTP, real files, a real redis-server).

Each test here failed on the code before the commit that added it (see the commit messages).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp")

import redis

from session_fsm import AsyncKSSession, State, contract
from session_fsm.aio.redis_store import AsyncRedisStore
from session_fsm.aio.stores import AsyncFileStore
from session_fsm.errors import SessionExpired
from session_fsm.redis_store import RedisStore
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.stores import StoredSession, StoreError
from tests import redis_server
from tests.conftest import FAST_RETRY, make_credentials
from tests.secret_hunt import hunt

pytestmark = pytest.mark.anyio
Factory = Callable[..., AsyncKSSession]
INIT, LOGIN, TWO_FA = (contract.SESSION_INIT, contract.LOGIN_USERID, contract.TWO_FA_ACCESSCODE)
ORDERS = contract.ORDERS_REPORT[1]
#: The demo account's secrets (tests/conftest.make_credentials).
PASSWORD, ACCESS_CODE, BEARER = "demo-password", "1234", "demo-access-token"
#: How long the sandbox holds a delayed answer: far longer than a test waits for it.
HELD = 1.5
#: Session tokens of records the stores below write.
OLD_TOKEN, NEW_TOKEN = "old-session-token-0123456789", "new-session-token-0123456789"

redis_url = redis_server.redis_url  # fixture: the module's redis-server


def calls(sb: Sandbox, endpoint: tuple[str, str]) -> int:
    n: int = sb.control.stats()["calls"].get(f"{endpoint[0]} {endpoint[1]}", 0)
    return n


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def landed(sb: Sandbox, counter: str, n: int) -> None:
    """Wait for the sandbox's ``counter`` (``logins``, ``sessions``) to reach ``n``: a held
    call the client gave up on lands in this test's counters, not a later test's."""
    await until(lambda: sb.control.stats()[counter] >= n, "the held call", HELD + 7)


async def timed_out(call: Awaitable[Any], seconds: float) -> BaseException:
    """The TimeoutError of ``asyncio.timeout(seconds)`` (``asyncio.wait_for`` before Python
    3.11) around ``call``: it chains the cancellation that cut the call. (This frame holds no
    secret: the hunt sees its locals too.)"""
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(seconds):
                await call
        else:  # pragma: no cover
            await asyncio.wait_for(call, seconds)
    except asyncio.TimeoutError as exc:
        return exc
    raise AssertionError("the call was not cut by the timeout")


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


# --- secrets: what a cancellation carries ----------------------------------------------------


@pytest.mark.parametrize("endpoint", [INIT, LOGIN, TWO_FA], ids=["init", "login", "2fa"])
async def test_a_connect_cancelled_in_a_session_call_carries_no_secret(
    new_async: Factory, sb: Sandbox, endpoint: tuple[str, str]
) -> None:
    """A task cancelled while the server holds one of connect()'s calls: the CancelledError
    its awaiter gets (its chain, the frames' locals, every renderer showing them) holds no
    Bearer token, password, access code or one-time token. Before: aiohttp's request frame,
    on the cancellation's traceback, kept the headers and the body sent."""
    s = new_async()
    sb.control.fault(endpoint[1], method=endpoint[0], delay=HELD, count=1)
    task = asyncio.create_task(s.connect())
    await until(lambda: calls(sb, endpoint) == 1, "the held call")
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    ott = s.snapshot().one_time_token
    secrets = [PASSWORD, ACCESS_CODE, BEARER] + ([ott.reveal()] if ott is not None else [])
    assert hunt(info.value, secrets) == []
    assert s.state is not State.AUTHENTICATED
    if endpoint != INIT:
        await landed(sb, "logins" if endpoint == LOGIN else "sessions", 1)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_trading_request_cut_by_a_timeout_carries_no_token(
    new_async: Factory, sb: Sandbox, method: str
) -> None:
    """A timeout around a trading request (the hot path's GET, a POST with a body):
    the TimeoutError and the cancellation it chains hold neither the session token nor the
    Bearer token. Before: aiohttp's request frame kept the headers sent."""
    s = new_async()
    await s.connect()
    path = ORDERS if method == "GET" else contract.ORDER_NORMAL[1]
    sb.control.fault(path, delay=HELD, count=1)
    err = await timed_out(s.request(method, path, json={"ts": "X"}), 0.3)
    token = s.snapshot().session_token
    assert token is not None
    assert hunt(err, [token.reveal(), BEARER, PASSWORD]) == []
    assert (await s.get(ORDERS)).status_code == 200  # the session carries on


# --- secrets: what a store's failure carries -------------------------------------------------


def record(userid: str, token: str) -> StoredSession:
    return StoredSession("https://x.example/apim", userid, Secret(token), 1, 1_800_000_000.0)


def pause_writes(url: str, ms: int) -> None:
    """Redis answers no write command (EVALSHA included) for ``ms`` milliseconds."""
    client = redis.Redis.from_url(url)
    try:
        client.client_pause(ms, all=False)  # WRITE commands only
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_redis_save_that_fails_carries_no_token(redis_url: str, kind: str) -> None:
    """A Redis that does not answer a save in time (``socket_timeout``): the StoreError
    (its chain, the frames' locals, renderings) holds no session token. Before: its
    ``__context__`` (hidden by ``from None``, still reachable) was redis-py's TimeoutError,
    whose frames held the record's JSON; and contextlib's frame held that error."""
    redis_server.empty(redis_url)
    url = f"{redis_url}?socket_timeout=0.3"
    pause_writes(redis_url, 1000)
    try:
        if kind == "async":
            store = AsyncRedisStore.from_url(url)
            with pytest.raises(StoreError) as info:
                await store.save("k", record("u", NEW_TOKEN))
            await store.aclose()
        else:
            sync = RedisStore.from_url(url)
            with pytest.raises(StoreError) as info:
                await asyncio.to_thread(sync.save, "k", record("u", NEW_TOKEN))
    finally:
        await asyncio.sleep(0.8)  # the pause ends: the next test's Redis answers
    assert "failed to save: TimeoutError" in str(info.value)
    assert hunt(info.value, [NEW_TOKEN]) == []


async def test_a_relogin_cancelled_in_its_redis_save_carries_no_token(
    new_async: Factory, sb: Sandbox, redis_url: str
) -> None:
    """A connect cancelled while Redis holds the save of its new session: the CancelledError
    holds no session token. Before: redis-py's frames on its traceback held the record's
    JSON."""
    redis_server.empty(redis_url)
    saving = asyncio.Event()

    class Paused(AsyncRedisStore):
        async def save(self, key: str, session: StoredSession) -> bool:
            await asyncio.to_thread(pause_writes, redis_url, 1000)
            saving.set()
            return await super().save(key, session)

    s = new_async(store=Paused.from_url(redis_url))
    task = asyncio.create_task(s.connect())
    await saving.wait()
    await asyncio.sleep(0.1)  # the save's EVALSHA is sent, Redis holds it
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    token = sb.state._user_session["demo-user"]  # the session the sandbox made
    assert hunt(info.value, [token, PASSWORD, BEARER]) == []
    await asyncio.sleep(1.0)  # the pause ends
    assert s.state is State.OTT_ISSUED
    assert (await s.connect()).state is State.AUTHENTICATED  # the next connect goes through
    await s.store.aclose()  # type: ignore[attr-defined]


async def test_a_file_save_that_fails_carries_no_token(tmp_path: Any) -> None:
    """The OS refuses the token file's temporary file (its name is too long for it) while an
    async file store saves: the StoreError holds neither the new session token nor the one
    stored before. Before: the frames on its traceback and its chained OSError's held the
    file's sessions, tokens and all."""
    path = tmp_path / ("t" * 250)  # a name the OS takes, and with mkstemp's parts does not
    first = AsyncFileStore(tmp_path / "short.json")
    await first.save("a", record("a", OLD_TOKEN))
    (tmp_path / "short.json").rename(path)
    store = AsyncFileStore(path)
    assert (await store.load("a")) == record("a", OLD_TOKEN)
    with pytest.raises(StoreError) as info:
        await store.save("b", record("b", NEW_TOKEN))
    assert "cannot write token file" in str(info.value)
    assert hunt(info.value, [OLD_TOKEN, NEW_TOKEN]) == []
    assert (await store.load("a")) == record("a", OLD_TOKEN)  # the file is as it was


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


async def test_a_password_provider_that_raises_is_a_typed_error_holding_nothing_of_it(
    new_async: Factory, sb: Sandbox
) -> None:
    """A password provider that raises: the re-login's error is a ConfigurationError naming
    the password and the provider's error class, never its text, with nothing chained.
    Before: the provider's own TimeoutError came out, its text quoting the password."""
    from session_fsm.credentials import FromCallable
    from session_fsm.errors import ConfigurationError

    chat = Chat()
    s = new_async(make_credentials(password=FromCallable(chat)))
    await s.connect()
    chat.down = True
    sb.control.expire()
    raised = r"password.*provider raised TimeoutError"
    with pytest.raises(ConfigurationError, match=raised) as info:
        await s.get(ORDERS)
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert hunt(info.value, [PASSWORD]) == []


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
