"""AsyncKSSession under cancellation and on the event loop (issue 16, "Concurrency, done right").

A task cancelled in the middle of a login, at each point it can be (in a session call, waiting
for the session's lock, holding the token store's lock, waiting for the store's lock), leaves
the session consistent (the state before the cancelled step, or Authenticated by whoever took
the login over), its waiters do not hang and one of them takes the login over, and nothing
stays held: checked through the public API (a call that needs the session's lock returns at
once) and by a second store on the same medium (memory, file, real Redis) getting the re-login
lock at once. Then: no blocking call runs on the loop's thread across connect, requests, a
re-login and logout, with a file or a Redis store.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from session_fsm import AsyncKSSession, RetryPolicy, State, contract, open_store
from session_fsm.aio.stores import AsyncMemoryStore
from session_fsm.sandbox import Sandbox
from tests import redis_server
from tests.conftest import FAST_RETRY, make_credentials
from tests.test_async_wire_concurrency import _WATCHING, CALLS, _recorded

pytestmark = pytest.mark.anyio
ORDERS = contract.ORDERS_REPORT[1]
INIT, LOGIN, TWO_FA = (contract.SESSION_INIT, contract.LOGIN_USERID, contract.TWO_FA_ACCESSCODE)
#: How long a delayed answer keeps a call in flight: far longer than any check below waits.
HELD = 20.0
#: The most a lock that was given back may take to be got by someone else.
AT_ONCE = 1.0
#: A step holding the loop this long fails the test: under the retry wait (2 s), above what a
#: busy shared 2-core machine stalls a step (0.5-0.8 s seen with debug mode's bookkeeping).
SLOW = 1.5

redis_url = redis_server.redis_url  # fixture


@pytest.fixture(params=["memory", "file", "redis"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh token store of each kind: an async memory store (an object: one process), a
    file, or an emptied real Redis database."""
    if request.param == "memory":
        return AsyncMemoryStore()
    if request.param == "file":
        return f"file:{tmp_path / 'tokens.json'}"
    url: str = request.getfixturevalue("redis_url")
    redis_server.empty(url)
    return url


@pytest.fixture
async def new_async(sb: Sandbox) -> AsyncIterator[Callable[..., AsyncKSSession]]:
    made: list[AsyncKSSession] = []

    def make(**options: Any) -> AsyncKSSession:
        options.setdefault("retry", FAST_RETRY)
        options.setdefault("timeout", (2.0, 10.0))
        options.setdefault("relogin_timeout", 30.0)
        s = AsyncKSSession(make_credentials(), host=options.pop("host", sb.url), **options)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


def calls(sb: Sandbox, endpoint: tuple[str, str]) -> int:
    n: int = sb.control.stats()["calls"].get(f"{endpoint[0]} {endpoint[1]}", 0)
    return n


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def lock_is_free(s: AsyncKSSession, spec: Any) -> None:
    """Nothing of ``s`` stays held: its own lock (``reset_cooldown`` takes it) and the store's
    re-login lock, got at once by another store on the same medium (another process's for a
    file or Redis; the same object for memory)."""
    started = time.monotonic()
    await asyncio.wait_for(s.reset_cooldown(), AT_ONCE)
    assert s.renewal_waiters == 0
    if isinstance(spec, AsyncMemoryStore):
        async with spec.lock(s.store_key(), AT_ONCE) as got:
            assert got, "the memory store's lock stayed held"
    else:

        def other_process() -> bool:
            with open_store(spec).lock(s.store_key(), AT_ONCE) as got:
                return got

        assert await asyncio.to_thread(other_process), "the store's lock stayed held"
    assert time.monotonic() - started < 2 * AT_ONCE


# --- cancellation --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [INIT, LOGIN, TWO_FA], ids=["init", "login", "2fa"])
async def test_connect_cancelled_in_a_session_call(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox, store_spec: Any,
    endpoint: tuple[str, str],
) -> None:  # fmt: skip
    """Cancelled while the server holds one of connect()'s calls: the session stays in the
    state before that call, and the next connect() goes straight through."""
    s = new_async(store=store_spec)
    before = {INIT: State.UNINITIALISED, LOGIN: State.INITIALISED, TWO_FA: State.OTT_ISSUED}
    sb.control.fault(endpoint[1], method=endpoint[0], delay=HELD, count=1)
    task = asyncio.create_task(s.connect())
    await until(lambda: calls(sb, endpoint) == 1, "the delayed call")
    await cancelled(task)
    assert s.state is before[endpoint] and s.generation == 0
    await lock_is_free(s, store_spec)
    snap = await asyncio.wait_for(s.connect(), HELD / 2)  # not the delayed answer's wait
    assert snap.state is State.AUTHENTICATED and s.generation == 1
    assert (await s.get(ORDERS)).status_code == 200


@pytest.mark.parametrize("endpoint", [LOGIN, TWO_FA], ids=["login", "2fa"])
async def test_relogin_holder_cancelled_with_the_store_lock_held(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox, store_spec: Any,
    endpoint: tuple[str, str],
) -> None:  # fmt: skip
    """The task renewing the session (session lock and store lock held, its login or 2FA in
    flight) is cancelled: one of the five waiting tasks takes the login over, all five get
    their answers, and no lock stays held."""
    s = new_async(store=store_spec)
    await s.connect()
    sb.control.reset()  # counters from 0
    sb.control.expire()
    sb.control.fault(endpoint[1], method=endpoint[0], delay=HELD, count=1)
    first = asyncio.create_task(s.get(ORDERS))
    await until(lambda: calls(sb, endpoint) == 1, "the renewal's delayed call")
    waiters = [asyncio.create_task(s.get(ORDERS)) for _ in range(5)]
    await until(lambda: s.renewal_waiters == 5, "five waiters")
    await cancelled(first)
    answers = await asyncio.wait_for(asyncio.gather(*waiters), HELD / 2)  # not the delayed call
    assert [r.status_code for r in answers] == [200] * 5
    assert s.state is State.AUTHENTICATED and s.generation == 2
    assert calls(sb, endpoint) == 2  # the cancelled call, and the one taking it over
    await lock_is_free(s, store_spec)


async def test_a_task_cancelled_while_waiting_for_the_session_lock(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox, store_spec: Any
) -> None:
    """A waiter cancelled while another task renews: the renewal and the other waiters carry
    on (one login), and the cancelled waiter is no longer counted."""
    s = new_async(store=store_spec)
    await s.connect()
    sb.control.reset()  # counters from 0
    sb.control.expire()
    sb.control.fault(LOGIN[1], method=LOGIN[0], delay=1.0, count=1)
    first = asyncio.create_task(s.get(ORDERS))
    await until(lambda: calls(sb, LOGIN) == 1, "the renewal's delayed login")
    waiters = [asyncio.create_task(s.get(ORDERS)) for _ in range(5)]
    await until(lambda: s.renewal_waiters == 5, "five waiters")
    await cancelled(waiters[2])
    assert s.renewal_waiters == 4
    done = await asyncio.wait_for(asyncio.gather(first, *waiters[:2], *waiters[3:]), 10)
    assert [r.status_code for r in done] == [200] * 5
    assert s.generation == 2 and calls(sb, LOGIN) == 1
    await lock_is_free(s, store_spec)


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_a_task_cancelled_while_waiting_for_the_store_lock(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox, kind: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """Another process holds the store's re-login lock; the task renewing here waits for it
    and is cancelled: the session is as it was (Authenticated, its generation), and once the
    other process lets go the lock is free (the cancelled wait took nothing)."""
    if kind == "file":
        spec = f"file:{tmp_path / 'tokens.json'}"
    else:
        spec = request.getfixturevalue("redis_url")
        redis_server.empty(spec)
    s = new_async(store=spec)
    await s.connect()
    logins = calls(sb, LOGIN)
    let_go, holding = threading.Event(), threading.Event()

    def other_process() -> None:
        with open_store(spec).lock(s.store_key(), 5.0) as got:
            assert got
            holding.set()
            let_go.wait(10)

    other = asyncio.create_task(asyncio.to_thread(other_process))
    await until(holding.is_set, "the other process's lock")
    sb.control.expire()
    task = asyncio.create_task(s.get(ORDERS))
    await until(lambda: calls(sb, contract.ORDERS_REPORT) == 1, "the 401")
    await asyncio.sleep(0.3)  # waiting for the store's lock now
    assert not task.done() and calls(sb, LOGIN) == logins
    await cancelled(task)
    assert s.state is State.AUTHENTICATED and s.generation == 1
    let_go.set()
    await other
    await lock_is_free(s, spec)
    assert (await s.get(ORDERS)).status_code == 200 and s.generation == 2


# --- nothing blocks the event loop -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_no_blocking_call_on_the_event_loop(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox, kind: str, tmp_path: Path,
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """connect, requests, a re-login on expiry with a retry wait, and logout, on a file or
    Redis store and a host name that must be looked up: no blocking call (sleep, name lookup,
    file open) runs on the loop's thread, and asyncio's debug mode sees no step holding the
    loop for :data:`SLOW` seconds (the 2 s ``Retry-After`` wait, were it slept)."""
    import socket

    spec = f"file:{tmp_path / 'tokens.json'}"
    if kind == "redis":
        spec = request.getfixturevalue("redis_url").replace("127.0.0.1", "localhost")
        redis_server.empty(spec)
    for module, name in ((time, "sleep"), (socket, "getaddrinfo"),
                         (socket, "gethostbyname")):  # fmt: skip
        monkeypatch.setattr(module, name, _recorded(name, getattr(module, name)))
    loop = asyncio.get_running_loop()
    assert loop.get_debug()
    loop.slow_callback_duration = SLOW
    host = sb.url.replace("127.0.0.1", "localhost")

    async def journey(s: AsyncKSSession) -> None:
        await s.connect()
        await s.get(ORDERS)
        sb.control.expire()
        sb.control.fault(ORDERS, status=503, retry_after=2, count=1)
        await asyncio.gather(*(s.get(ORDERS) for _ in range(20)))
        await s.logout()

    await journey(new_async(store=spec, host=host))  # imports done, caches warm
    sb.control.reset()
    caplog.set_level(logging.WARNING, logger="asyncio")
    CALLS.clear()
    _WATCHING.append(True)
    try:
        s = new_async(store=spec, host=host, retry=RetryPolicy(total=2))
        await journey(s)
    finally:
        _WATCHING.clear()
    assert s.generation == 2 and s.state is State.LOGGED_OUT
    loop_thread = threading.get_ident()
    names = {name for name, _ in CALLS}
    assert "getaddrinfo" in names and (kind == "redis" or "open" in names)  # they ran ...
    assert [name for name, thread in CALLS if thread == loop_thread] == []  # ... off the loop
    assert [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()] == []
