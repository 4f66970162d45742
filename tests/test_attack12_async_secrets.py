"""Attack 12 on the async side (issue 16), its secrets: what a cancellation (a task's cancel,
a timeout), a token store's failure or a password provider's failure carries (an error's
text, chain, attributes, the frames' locals, every renderer showing them) holds no password,
access code, one-time token, session token or Bearer token. Real parts: the sandbox over
loopback HTTP, a real redis-server, real files.

Each test here failed on the code before the commit that added it (see the commit messages).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")

import redis

from session_fsm import AsyncKSSession, State, contract
from session_fsm.aio.redis_store import AsyncRedisStore
from session_fsm.aio.stores import AsyncFileStore
from session_fsm.redis_store import RedisStore
from session_fsm.sandbox import Sandbox
from session_fsm.secret import Secret
from session_fsm.stores import StoredSession, StoreError
from tests import redis_server
from tests.conftest import make_credentials
from tests.secret_hunt import hunt
from tests.test_attack12_async import (
    BEARER,
    HELD,
    INIT,
    LOGIN,
    ORDERS,
    PASSWORD,
    TWO_FA,
    Chat,
    calls,
    until,
)  # fmt: skip

pytestmark = pytest.mark.anyio
Factory = Callable[..., AsyncKSSession]
ACCESS_CODE = "1234"
#: Session tokens of records the stores below write.
OLD_TOKEN, NEW_TOKEN = "old-session-token-0123456789", "new-session-token-0123456789"

redis_url = redis_server.redis_url  # fixture: the module's redis-server


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


# --- the sync side: an interrupt (Ctrl-C) in a call ------------------------------------------


def interrupted(what: str) -> list[str]:
    """In a child process (a Ctrl-C is delivered to its main thread): a KSSession's connect
    (``what="connect"``, its login held by the sandbox) or trading GET (``"get"``) is
    interrupted; the hunt of the KeyboardInterrupt for the password and the tokens."""
    import signal
    import threading

    from session_fsm import KSSession
    from session_fsm.sandbox import run_sandbox
    from tests.conftest import FAST_RETRY

    with run_sandbox() as sb:
        s = KSSession(make_credentials(), host=sb.url, retry=FAST_RETRY)
        if what == "get":
            s.connect()
        held = LOGIN if what == "connect" else contract.ORDERS_REPORT
        sb.control.fault(held[1], method=held[0], delay=HELD, count=1)
        main, before = threading.get_ident(), calls(sb, held)

        def interrupt() -> None:
            while calls(sb, held) == before:
                time.sleep(0.01)
            time.sleep(0.1)  # the client waits for the answer
            signal.pthread_kill(main, signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        try:
            s.connect() if what == "connect" else s.get(ORDERS)
        except KeyboardInterrupt as exc:
            token = s.snapshot().session_token
            secrets = [PASSWORD, BEARER] + ([token.reveal()] if token is not None else [])
            return hunt(exc, secrets)
        finally:
            s.close()
    raise AssertionError("not interrupted")


@pytest.mark.parametrize("what", ["connect", "get"])
def test_an_interrupted_sync_call_carries_no_secret(what: str) -> None:
    """Ctrl-C while a KSSession's login or trading GET waits for its answer: the
    KeyboardInterrupt holds no password, Bearer or session token. Before: urllib3's frames on
    its traceback kept the login's body and the headers sent."""
    import json
    import subprocess

    code = ("import json; from tests.test_attack12_async_secrets import interrupted; "
            f"print(json.dumps(interrupted({what!r})))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []
