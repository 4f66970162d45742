"""Findings of the adversarial review of the sans-IO core and its two drivers (issues 15, 16)."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from session_fsm import KSSession, LoginRejected, State, contract
from session_fsm.aio.session import AsyncKSSession
from session_fsm.sandbox import Sandbox
from session_fsm.stores import MemoryStore
from tests.conftest import Clock, make_credentials

ORDERS = contract.ORDERS_REPORT[1]
LOGIN = contract.LOGIN_USERID[1]


class StrProvider:
    """A duck-typed password provider whose get() gives a plain str (what a user's
    SecretProvider often does); the first login takes it through the checked path."""

    repeatable = True

    def __init__(self, value: str) -> None:
        self.value = value

    def available(self) -> bool:
        return True

    def get(self) -> Any:
        return self.value


def test_soft_refresh_with_a_str_provider(new_session: Any, sb: Any, clock: Clock) -> None:
    s: KSSession = new_session(make_credentials(password=StrProvider("demo-password")),
                               max_session_age=3600.0, soft_window=60.0)
    s.connect()
    gen = s.snapshot().generation
    clock.advance(3600 - 30)
    assert s.get(ORDERS).status_code == 200
    assert s.snapshot().generation == gen + 1


class RaisingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_save: BaseException | None = None

    def save(self, key: str, session: Any) -> None:
        if self.fail_save is not None:
            raise self.fail_save
        super().save(key, session)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_store_save_raising_leaves_no_lock(new_session: Any, exc: BaseException) -> None:
    store = RaisingStore()
    store.fail_save = exc
    s: KSSession = new_session(store=store, relogin_timeout=1.0)
    with pytest.raises(type(exc)):
        s.connect()
    store.fail_save = None
    done: list[object] = []
    t = threading.Thread(target=lambda: done.append(s.connect()))
    t.start()
    t.join(5)
    assert done


def test_callback_raising_base_exception_leaves_no_lock(new_session: Any) -> None:
    calls = []

    def cb(session: Any, rec: Any) -> None:
        calls.append(rec)
        if len(calls) == 2:
            raise KeyboardInterrupt

    s: KSSession = new_session(on_transition=cb, relogin_timeout=1.0)
    with pytest.raises(KeyboardInterrupt):
        s.connect()
    done: list[object] = []
    t = threading.Thread(target=lambda: done.append(s.connect()))
    t.start()
    t.join(5)
    assert done


def test_cooldown_error_is_not_one_shared_object(new_session: Any) -> None:
    s: KSSession = new_session(make_credentials(password="wrong-password"))
    with pytest.raises(LoginRejected) as first:
        s.connect()
    try:
        raise KeyError("the caller's own error")
    except KeyError:
        with pytest.raises(LoginRejected) as second:
            s.connect()
    with pytest.raises(LoginRejected) as third:
        s.connect()
    assert third.value.__context__ is None
    assert first.value is not second.value


def test_reset_cooldown_elsewhere_is_honoured(new_session: Any) -> None:
    store = MemoryStore()
    password = {"v": "wrong-password"}
    a: KSSession = new_session(make_credentials(password=lambda: password["v"]), store=store)
    with pytest.raises(LoginRejected):
        a.connect()
    b: KSSession = new_session(store=store)
    with pytest.raises(LoginRejected):
        b.connect()  # the kept cool-down is honoured by a second session
    b.reset_cooldown()
    password["v"] = "demo-password"
    a.connect()


def test_cooldown_error_says_the_same_as_the_first(new_session: Any) -> None:
    s: KSSession = new_session(make_credentials(password="wrong-password"))
    with pytest.raises(LoginRejected) as first:
        s.connect()
    with pytest.raises(LoginRejected) as again:
        s.connect()
    assert str(again.value) == str(first.value) and repr(again.value) == repr(first.value)
    assert (again.value.status, again.value.fault_code) == (first.value.status, 401001)


# --- the async driver -----------------------------------------------------------------------




@pytest.mark.anyio
async def test_httpx_auth_task_cancelled_in_its_relogin(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox
) -> None:
    """A task using ``httpx.AsyncClient(auth=s.auth)`` cancelled in the middle of the re-login
    its 401 started: nothing stays held, the session is usable, and the core's flow is not
    left half-way for the garbage collector (whose close() of a flow that yields in a
    ``finally`` raises RuntimeError through ``sys.unraisablehook``: printed on stderr)."""
    s = new_async(relogin_timeout=5.0)
    await s.connect()
    sb.control.expire()
    sb.control.fault(LOGIN, delay=0.5, count=1)
    unraisable: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        async with httpx.AsyncClient(auth=s.auth) as client:
            task = asyncio.create_task(client.get(s.snapshot().host + ORDERS))
            for _ in range(100):
                await asyncio.sleep(0.01)
                if s.state is not State.AUTHENTICATED:
                    break
            await asyncio.sleep(0.1)  # in the slow login call
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            del task
            gc.collect()
        assert not s._driver.lock.locked()
        assert (await asyncio.wait_for(s.get(ORDERS), 10)).status_code == 200
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert [type(u.exc_value).__name__ for u in unraisable] == []


def test_plain_requests_auth_past_the_hard_deadline_with_a_failing_login(
    new_session: Any, sb: Sandbox, clock: Clock
) -> None:
    """requests' auth contract: an auth returns an answer, it does not raise. Past the hard
    deadline with the login endpoint failing, ``requests.get(url, auth=session.auth)`` should
    give the server's answer (the request sent with the token it has), not raise from the
    auth's ``__call__``."""
    import requests

    s: KSSession = new_session(max_session_age=3600.0, soft_window=60.0)
    s.connect()
    clock.advance(3600 + 1)
    sb.control.fault(LOGIN, status=500, count=10)
    r = requests.get(s.snapshot().host + ORDERS, auth=s.auth, timeout=5)
    assert r.status_code in (200, 401)


@pytest.mark.anyio
async def test_httpx_sync_client_with_the_async_session_auth(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox
) -> None:
    s = new_async()
    await s.connect()
    url = s.snapshot().host + ORDERS

    def get() -> int:
        with httpx.Client(auth=s.auth) as client:
            return client.get(url).status_code

    assert await asyncio.to_thread(get) == 200


@pytest.mark.anyio
async def test_async_errors_hold_no_secret(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox
) -> None:
    """What an AsyncKSSession's errors reach (attributes, chain, the frames of the driver and
    of the core's generator flows, renderings with locals, pickle) holds no secret."""
    from tests.secret_hunt import hunt

    s = new_async(make_credentials(access_token_provider=lambda: "demo-access-token"))
    await s.connect()
    token = s.snapshot().session_token
    assert token is not None
    secrets = [token.reveal(), "demo-password", "demo-access-token"]
    found: dict[str, list[str]] = {}
    sb.control.fault(ORDERS, status=400, code=10)
    with pytest.raises(Exception) as bad:
        await s.get(ORDERS)
    found["400"] = hunt(bad.value, secrets)
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN, count=2)
    with pytest.raises(Exception) as gw:
        await s.get(ORDERS)
    found["900901"] = hunt(gw.value, secrets)
    sb.control.reset()
    await s.reset_cooldown()
    await s.connect()
    sb.control.expire()
    sb.control.fault(LOGIN, status=500, count=10)
    with pytest.raises(Exception) as relogin:
        await s.get(ORDERS)
    found["relogin"] = hunt(relogin.value, secrets)
    assert found == {"400": [], "900901": [], "relogin": []}


@pytest.mark.anyio
async def test_async_relogin_cut_by_a_cancel_scope_leaves_no_store_lock(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox, tmp_path: Any
) -> None:
    """anyio's cancel scopes cancel again at every await (level-triggered): the flow's
    ``finally`` clauses, which give back the file store's lock, must still complete."""
    import anyio

    from session_fsm.file_store import FileStore

    path = tmp_path / "tokens.json"
    s = new_async(store=f"file:{path}", relogin_timeout=5.0)
    await s.connect()
    sb.control.expire()
    sb.control.fault(LOGIN, delay=0.6, count=1)
    with anyio.move_on_after(0.3) as scope:
        await s.get(ORDERS)
    assert scope.cancelled_caught
    assert not s._driver.lock.locked()
    other = FileStore(path)
    with other.lock(s.store_key(), 1.0) as got:
        assert got  # the file store's lock was given back
    assert (await asyncio.wait_for(s.get(ORDERS), 10)).status_code == 200


def test_gateway_rejection_meeting_a_renewed_session_refreshes_the_bearer(
    new_session: Any, sb: Sandbox
) -> None:
    """A request's 900901 arrives after another caller renewed the session (a 401 re-login,
    a soft refresh): the Bearer token was not replaced by anyone, so the provider should be
    asked and the request replayed, not the 900901 raised as if it had been dealt with."""
    asked: list[int] = []

    def provider() -> str:
        asked.append(1)
        return "demo-access-token"

    s: KSSession = new_session(make_credentials(access_token_provider=provider))
    s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN, delay=1.0)
    out: list[object] = []

    def get() -> None:
        try:
            out.append(s.get(ORDERS).status_code)
        except Exception as exc:  # the finding: raised
            out.append(type(exc).__name__)

    t = threading.Thread(target=get)
    t.start()
    s.renew(s.generation, "test")  # the session moves while the GET waits for its answer
    t.join(10)
    assert out == [200] and asked == [1]


def test_plain_requests_auth_takes_the_wrong_domain_edge(new_session: Any, sb: Sandbox) -> None:
    """A trading answer 999024 (the user belongs to another host) moves the session to
    re-initialise, whether the request went through ``session.get`` or through
    ``requests.get(url, auth=session.auth)``: the edge is the core's decision, not the path's."""
    import requests

    from session_fsm import WrongDomain

    mapped: KSSession = new_session()
    mapped.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_WRONG_DOMAIN)
    with pytest.raises(WrongDomain):
        mapped.get(ORDERS)
    plain: KSSession = new_session()
    plain.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_WRONG_DOMAIN)
    r = requests.get(plain.snapshot().host + ORDERS, auth=plain.auth, timeout=5)
    assert r.status_code == 401
    assert (plain.state, plain.history[-1].trigger) == (mapped.state, mapped.history[-1].trigger)
    assert mapped.state is not State.AUTHENTICATED


@pytest.mark.anyio
async def test_httpx_auth_returns_an_oversized_401_instead_of_raising() -> None:
    """An httpx auth returns answers, as the sync ``session.auth`` does: a 401 whose body is
    over ``max_answer_bytes`` (the core cannot read its fault) is returned, not raised out of
    ``httpx.AsyncClient.get``."""
    from tests.answer_server import TRADING, answer_server

    with answer_server() as api:
        s = AsyncKSSession(make_credentials(), host=api.url, timeout=(2.0, 5.0),
                           max_answer_bytes=1024)  # fmt: skip
        try:
            await s.connect()
            api.script(*TRADING, 401, b'{"fault": {"code": 99999, "message": "' + b"x" * 4096
                       + b'"}}')  # fmt: skip
            async with httpx.AsyncClient(auth=s.auth) as client:
                r = await client.get(s.snapshot().host + TRADING[1])
            assert r.status_code == 401
        finally:
            await s.close()


class FlakyLoadStore(MemoryStore):
    """A shared store whose next ``load`` fails (a Redis blip, a file being replaced)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_loads = 0

    def load(self, key: str) -> Any:
        if self.fail_loads:
            self.fail_loads -= 1
            from session_fsm.stores import StoreError

            raise StoreError("the token store is not reachable")
        return super().load(key)


def test_a_failed_first_store_read_is_tried_again(new_session: Any) -> None:
    """The first request adopts the session kept in the store; when that first read fails,
    the next request reads again, instead of taking the store as looked at for good (the
    session then refused every request with 'call connect() first')."""
    from session_fsm.stores import StoreError

    store = FlakyLoadStore()
    first: KSSession = new_session(store=store)
    first.connect()
    second: KSSession = new_session(store=store)
    store.fail_loads = 1
    with pytest.raises(StoreError):
        second.get(ORDERS)
    assert second.get(ORDERS).status_code == 200
    assert second.generation == first.generation


@pytest.mark.parametrize("how", ["403 invalid session, replay_posts off", "streamed body"])
def test_replay_rule_on_a_post(new_session: Any, sb: Sandbox, how: str) -> None:
    """A POST met by an expired session (a 403 "Invalid session" too) is not sent again when
    replay_posts is off or its body is a stream: the session is renewed, the POST was sent
    once, and the error carries the original answer."""
    from session_fsm import NotReplayable

    path = contract.ORDER_NORMAL[1]
    s: KSSession = new_session(replay_posts=not how.startswith("403"))
    s.connect()
    sb.control.expire()
    if how.startswith("403"):
        sb.control.settings(invalid_session=403)  # 403 "Invalid session, please re-login"
        body: Any = b'{"es": "nse_cm"}'
    else:
        body = iter([b'{"es": ', b'"nse_cm"}'])
    sent = sb.control.stats()["calls"].get(f"POST {path}", 0)
    with pytest.raises(NotReplayable) as info:
        s.post(path, data=body)
    assert sb.control.stats()["calls"][f"POST {path}"] == sent + 1
    assert info.value.response is not None and info.value.response.status_code in (401, 403)
    assert s.generation == 2 and s.state is State.AUTHENTICATED
