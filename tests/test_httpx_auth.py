"""``session.auth`` is an ``httpx.Auth`` for both sessions and both httpx clients (issue 16):
``httpx.Client(auth=async_session.auth)`` from the threads of an asyncio program runs its
renewals on the session's loop (single flight with the session's tasks);
``httpx.Client(auth=ks_session.auth)`` and ``httpx.AsyncClient(auth=ks_session.auth)`` work
too. Real httpx clients against the loopback sandbox."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_fsm import EventLoopUnavailable, KSSession, State, contract
from session_fsm.aio.session import AsyncKSSession
from session_fsm.sandbox import Sandbox
from session_fsm.stores import MemoryStore
from tests.conftest import FAST_RETRY, Clock, LogCapture, make_credentials

ORDERS = contract.ORDERS_REPORT[1]
ORDER = contract.ORDER_NORMAL[1]
LOGIN = contract.LOGIN_USERID[1]
AFactory = Callable[..., AsyncKSSession]
ROOT = Path(__file__).resolve().parent.parent


class GatedStore(MemoryStore):
    """A store whose lock waits while it is armed (in a thread of the async session's): a
    renewal under way, holding the session's lock, for as long as the test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = threading.Event()
        self.released = threading.Event()

    def arm(self) -> None:
        self.armed = True

    def open(self) -> None:
        self.armed = False
        self.released.set()

    def lock(self, key: str, timeout: float) -> Any:
        if self.armed:
            self.entered.set()
            self.released.wait(10)
        return super().lock(key, timeout)


def calls(sb: Sandbox, endpoint: str) -> int:
    n: int = sb.control.stats()["calls"].get(endpoint, 0)
    return n


def logins(sb: Sandbox) -> int:
    n: int = sb.control.stats()["logins"]
    return n


def sync_get(auth: httpx.Auth, url: str) -> httpx.Response:
    with httpx.Client(auth=auth, timeout=10.0) as client:
        return client.get(url)


# --- the async session's auth in httpx.Client ---------------------------------------------------


@pytest.mark.anyio
async def test_sync_client_expiry_one_relogin_then_replay(new_async: AFactory, sb: Sandbox) -> None:
    s = new_async()
    await s.connect()
    url = s.snapshot().host + ORDERS
    assert (await asyncio.to_thread(sync_get, s.auth, url)).status_code == 200
    sb.control.expire()
    before = logins(sb)
    r = await asyncio.to_thread(sync_get, s.auth, url)
    assert r.status_code == 200
    assert [h.status_code for h in r.history] == [401]  # met the expiry, replayed once
    assert logins(sb) == before + 1 and s.generation == 2
    assert s.history[-1].trigger == "authenticate" and s.state is State.AUTHENTICATED


@pytest.mark.anyio
async def test_sync_client_post_not_replayed_by_the_replay_rule(
    new_async: AFactory, sb: Sandbox
) -> None:
    s = new_async(replay_posts=False)
    await s.connect()
    url = s.snapshot().host + ORDER
    order = {"instrumentToken": 11536, "transactionType": "BUY", "quantity": 7, "price": 0}

    def post(**body: Any) -> httpx.Response:
        with httpx.Client(auth=s.auth, timeout=10.0) as client:
            return client.post(url, **body)

    sb.control.expire()
    posts = calls(sb, f"POST {ORDER}")
    r = await asyncio.to_thread(post, json=order)
    assert r.status_code == 401 and r.history == []  # returned, not raised, not sent again
    assert calls(sb, f"POST {ORDER}") == posts + 1
    assert s.generation == 2 and s.state is State.AUTHENTICATED  # the session was renewed
    # a streamed body is never sent twice, whatever replay_posts says
    s2 = new_async()
    await s2.connect()
    sb.control.expire()

    def streamed() -> httpx.Response:
        def body() -> Iterator[bytes]:
            yield b'{"instrumentToken": 1}'

        with httpx.Client(auth=s2.auth, timeout=10.0) as client:
            return client.post(url, content=body(), headers={"Content-Type": "application/json"})

    posts = calls(sb, f"POST {ORDER}")
    assert (await asyncio.to_thread(streamed)).status_code == 401
    assert calls(sb, f"POST {ORDER}") == posts + 1
    # with replay_posts on (the default) a JSON POST is replayed once
    sb.control.expire()
    with httpx.Client(auth=s2.auth, timeout=10.0) as client:
        r = await asyncio.to_thread(client.post, url, json=order)
    assert r.status_code == 200 and r.json()["Success"]["NSE"]["quantity"] == 7


@pytest.mark.anyio
async def test_sync_threads_and_async_tasks_meet_one_expiry_with_one_login(
    new_async: AFactory, sb: Sandbox
) -> None:
    """Threads using ``httpx.Client`` and tasks using ``httpx.AsyncClient`` and
    ``session.get`` meet one expiry together (the login is slow, so all of them are in it
    together): exactly one login, and every request succeeds after its replay."""
    store = GatedStore()
    s = new_async(store=store)
    await s.connect()
    url = s.snapshot().host + ORDERS
    sb.control.expire()
    store.arm()  # the renewal waits in the store (a worker thread) until all have met the 401
    before, sent = logins(sb), calls(sb, f"GET {ORDERS}")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)  # one thread each
    loop = asyncio.get_running_loop()
    threads = [loop.run_in_executor(pool, sync_get, s.auth, url) for _ in range(8)]
    async with httpx.AsyncClient(auth=s.auth, timeout=10.0) as client:
        tasks = [client.get(url) for _ in range(8)]
        gets = [s.get(ORDERS) for _ in range(8)]
        everyone = asyncio.gather(*threads, *tasks, *gets)
        for _ in range(1000):
            if calls(sb, f"GET {ORDERS}") >= sent + 24:
                break
            await asyncio.sleep(0.01)
        assert store.entered.is_set() and calls(sb, f"GET {ORDERS}") == sent + 24
        store.open()
        answers = await asyncio.wait_for(everyone, 30)
    pool.shutdown()
    assert logins(sb) == before + 1
    assert [a.status_code for a in answers] == [200] * 24
    # every httpx request met the expiry itself and was replayed once
    assert [[h.status_code for h in a.history] for a in answers[:16]] == [[401]] * 16
    assert s.generation == 2 and s.renewal_waiters == 0 and not s._driver.lock.locked()


@pytest.mark.anyio
async def test_sync_client_on_the_loops_own_thread(new_async: AFactory, sb: Sandbox) -> None:
    """A usable snapshot needs no loop (readers never block); a renewal does, and waiting for
    it on the loop's own thread would stop the loop: a typed error that says what to do."""
    s = new_async()
    await s.connect()
    url = s.snapshot().host + ORDERS
    assert sync_get(s.auth, url).status_code == 200  # on the loop's thread, headers only
    sb.control.expire()
    before = logins(sb)
    with pytest.raises(EventLoopUnavailable) as info:
        sync_get(s.auth, url)
    assert "httpx.AsyncClient" in str(info.value) and "KSSession" in str(info.value)
    assert logins(sb) == before and not s._driver.lock.locked()
    assert (await s.get(ORDERS)).status_code == 200  # the session is untouched


@pytest.mark.anyio
async def test_the_loop_error_after_a_401_holds_no_secret(new_async: AFactory, sb: Sandbox) -> None:
    """The error is raised after the request went with the session's token (its 401 needs
    a re-login): what it reaches (frames' locals, chain, renderings with locals) shows no
    secret."""
    from tests.secret_hunt import hunt

    s = new_async()
    await s.connect()
    token = s.snapshot().session_token
    assert token is not None
    sb.control.expire()
    with pytest.raises(EventLoopUnavailable) as info:
        sync_get(s.auth, s.snapshot().host + ORDERS)
    assert info.value.status is None
    assert hunt(info.value, [token.reveal(), "demo-password", "demo-access-token"]) == []


def test_sync_client_when_no_loop_runs_the_session(sb: Sandbox) -> None:
    s = AsyncKSSession(make_credentials(), host=sb.url, retry=FAST_RETRY, timeout=(2.0, 10.0))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(s.connect())  # its loop does not run any more
        url = s.snapshot().host + ORDERS
        assert sync_get(s.auth, url).status_code == 200  # the snapshot's headers: no loop
        sb.control.expire()
        with pytest.raises(EventLoopUnavailable, match="no event loop runs"):
            sync_get(s.auth, url)
        never = AsyncKSSession(make_credentials(), host=sb.url)
        with pytest.raises(EventLoopUnavailable):
            sync_get(never.auth, url)  # never awaited: no loop known
    finally:
        loop.run_until_complete(s.close())
        loop.close()


def test_sync_client_when_the_loop_stops_during_the_renewal(sb: Sandbox) -> None:
    """The thread waiting for the loop's renewal does not hang when that loop stops; run
    again, the loop cancels that renewal cleanly (nothing stays held) and the session works."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    store = GatedStore()
    s = AsyncKSSession(make_credentials(), host=sb.url, store=store, retry=FAST_RETRY,
                       timeout=(2.0, 10.0))  # fmt: skip
    try:
        asyncio.run_coroutine_threadsafe(s.connect(), loop).result(10)
        sb.control.expire()
        store.arm()  # the renewal waits in the store until the test opens it

        def stop_in_the_renewal() -> None:
            store.entered.wait(10)
            loop.call_soon_threadsafe(loop.stop)

        threading.Thread(target=stop_in_the_renewal, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(EventLoopUnavailable, match="stopped"):
            sync_get(s.auth, s.snapshot().host + ORDERS)
        assert time.monotonic() - started < 5  # told when the loop stopped, not at the gate's
        runner.join(5)
        store.open()
        before = logins(sb)
        assert loop.run_until_complete(s.get(ORDERS)).status_code == 200
        assert logins(sb) == before + 1 and not s._driver.lock.locked()
    finally:
        store.open()
        runner.join(5)
        loop.run_until_complete(s.close())
        loop.close()


# --- KSSession.auth is an httpx.Auth too ---------------------------------------------------------


def test_ks_session_auth_in_httpx_client(new_session: Any, sb: Sandbox) -> None:
    s: KSSession = new_session()
    s.connect()
    assert isinstance(s.auth, httpx.Auth)
    url = s.snapshot().host + ORDERS
    assert sync_get(s.auth, url).status_code == 200
    sb.control.expire()
    before = logins(sb)
    r = sync_get(s.auth, url)
    assert r.status_code == 200 and [h.status_code for h in r.history] == [401]
    assert logins(sb) == before + 1 and s.generation == 2


def test_ks_session_auth_in_httpx_client_keeps_the_replay_rule(
    new_session: Any, sb: Sandbox
) -> None:
    s: KSSession = new_session(replay_posts=False)
    s.connect()
    sb.control.expire()
    posts = calls(sb, f"POST {ORDER}")
    with httpx.Client(auth=s.auth, timeout=10.0) as client:
        r = client.post(s.snapshot().host + ORDER, json={"instrumentToken": 1})
    assert r.status_code == 401 and calls(sb, f"POST {ORDER}") == posts + 1
    assert s.generation == 2


def test_ks_session_threads_with_httpx_clients_meet_one_expiry(
    new_session: Any, sb: Sandbox
) -> None:
    s: KSSession = new_session(relogin_timeout=30.0)
    s.connect()
    url = s.snapshot().host + ORDERS
    sb.control.expire()
    sb.control.fault(LOGIN, delay=0.3, count=1)
    before = logins(sb)
    answers: list[httpx.Response] = []
    workers = [threading.Thread(target=lambda: answers.append(sync_get(s.auth, url)))
               for _ in range(12)]  # fmt: skip
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert [a.status_code for a in answers] == [200] * 12
    assert logins(sb) == before + 1


@pytest.mark.anyio
async def test_ks_session_auth_in_httpx_async_client(new_session: Any, sb: Sandbox) -> None:
    """The sync session's renewal runs in a worker thread: the loop goes on meanwhile."""
    s: KSSession = new_session()
    await asyncio.to_thread(s.connect)
    url = s.snapshot().host + ORDERS
    sb.control.expire()
    sb.control.fault(LOGIN, delay=0.3, count=1)
    async with httpx.AsyncClient(auth=s.auth, timeout=10.0) as client:
        get = asyncio.create_task(client.get(url))
        ticks = 0
        while not get.done():  # the loop keeps running while the auth renews
            await asyncio.sleep(0.02)
            ticks += 1
        r = await get
    assert r.status_code == 200 and [h.status_code for h in r.history] == [401]
    assert s.generation == 2 and ticks >= 5  # the loop ran during the 0.3 s login


# --- an auth returns answers: httpx too ---------------------------------------------------------


@pytest.mark.anyio
async def test_httpx_auths_past_the_hard_deadline_with_a_failing_login(
    sb: Sandbox, clock: Clock, logs: LogCapture
) -> None:
    """Both sessions' httpx auths, past the hard deadline with the login failing: the
    server's 401 is returned (the request went without session headers), not raised."""
    options: dict[str, Any] = dict(retry=FAST_RETRY, timeout=(2.0, 5.0), clock=clock,
                                   max_session_age=3600.0, soft_window=60.0)  # fmt: skip
    a = AsyncKSSession(make_credentials(), host=sb.url, **options)
    k = KSSession(make_credentials(), host=sb.url, **options)
    try:
        await a.connect()
        await asyncio.to_thread(k.connect)
        clock.advance(3600 + 1)
        sb.control.fault(LOGIN, status=500, count=100)
        url = sb.url + ORDERS
        async with httpx.AsyncClient(auth=a.auth, timeout=10.0) as client:
            r1 = await client.get(url)
        r2 = await asyncio.to_thread(sync_get, a.auth, url)
        r3 = await asyncio.to_thread(sync_get, k.auth, url)
        assert [r.status_code for r in (r1, r2, r3)] == [401, 401, 401]
        assert all(contract.H_SESSION_TOKEN not in r.request.headers for r in (r1, r2, r3))
        events = [e for e in logs.events() if e["event"] == "request_not_renewed"]
        assert len(events) == 3 and {e["error"] for e in events} == {"ServiceUnavailable"}
    finally:
        await a.close()
        k.close()


def test_a_threaded_install_without_httpx_keeps_the_requests_auth(sb: Sandbox) -> None:
    """httpx is the async extra's: without it ``import session_fsm`` works and
    ``session.auth`` is the plain ``requests`` auth."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import requests, session_fsm\n"
        "from tests.conftest import make_credentials\n"
        f"s = session_fsm.KSSession(make_credentials(), host={sb.url!r})\n"
        "s.connect()\n"
        f"r = requests.get({sb.url!r} + {ORDERS!r}, auth=s.auth, timeout=5)\n"
        "print(r.status_code, type(s.auth).__mro__[-2].__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["200", "AuthBase"]
