"""AsyncKSSession (issue 16) against the sandbox over loopback HTTP: the same core as the sync
session, awaited. Connect, requests, re-login with single flight across 1,000 tasks, the
Bearer refresh, cancellation in the middle of a login, the httpx auth, the stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp")
import httpx

from session_fsm import (
    AsyncKSSession,
    FromCallable,
    GatewayAuthError,
    InvalidTransition,
    LoginRejected,
    SessionExpired,
    State,
    contract,
)
from session_fsm.sandbox import Sandbox
from tests.conftest import make_credentials

pytestmark = pytest.mark.anyio
ORDERS = contract.ORDERS_REPORT[1]
LOGIN = contract.LOGIN_USERID[1]
Factory = Callable[..., AsyncKSSession]




def stats(sb: Sandbox) -> dict[str, int]:
    s = sb.control.stats()
    return {"logins": s["logins"], "sessions": s["sessions"], **s["calls"]}


async def test_connect_then_get(new_async: Factory, sb: Sandbox) -> None:
    s = new_async()
    assert s.state is State.UNINITIALISED
    snap = await s.connect()
    assert snap.state is State.AUTHENTICATED and s.generation == 1
    r = await s.get(ORDERS)
    assert r.status_code == 200 and isinstance(r.json(), dict)
    assert [rec.trigger for rec in s.history] == ["init", "login", "authenticate"]
    await s.logout()
    assert s.state is State.LOGGED_OUT
    with pytest.raises(InvalidTransition, match="call connect"):
        await s.get(ORDERS)


async def test_triggers_one_by_one(new_async: Factory) -> None:
    s = new_async()
    await s.init()
    assert s.state is State.INITIALISED
    await s.login()
    assert s.state is State.OTT_ISSUED
    await s.authenticate()
    assert s.state is State.AUTHENTICATED


async def test_a_thousand_tasks_meeting_one_expiry_make_one_login(
    new_async: Factory, sb: Sandbox
) -> None:
    s = new_async(relogin_timeout=60)
    await s.connect()
    sb.control.expire()
    before = stats(sb)["logins"]
    answers = await asyncio.gather(*(s.get(ORDERS) for _ in range(1000)))
    assert all(r.status_code == 200 for r in answers)
    assert stats(sb)["logins"] - before == 1 and s.generation == 2


async def test_a_900901_storm_asks_the_provider_once(new_async: Factory, sb: Sandbox) -> None:
    asked: list[int] = []

    def provider() -> str:
        asked.append(1)
        return "demo-access-token"

    s = new_async(make_credentials(access_token_provider=provider))
    await s.connect()
    # All 32 requests (the pool's size) reach the sandbox, and take a fault each, before the
    # first answer comes back (1 s).
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN, count=32, delay=1.0)
    answers = await asyncio.gather(*(s.get(ORDERS) for _ in range(32)), return_exceptions=True)
    assert asked == [1]
    assert all(getattr(r, "status_code", None) == 200 for r in answers), answers
    assert s.snapshot().bearer_generation == 1 and s.state is State.AUTHENTICATED


async def test_a_rejected_bearer_without_provider_goes_to_uninitialised(
    new_async: Factory, sb: Sandbox
) -> None:
    s = new_async(cooldown=0)
    await s.connect()
    sb.control.fault(ORDERS, status=401, code=contract.FAULT_GATEWAY_TOKEN)
    with pytest.raises(GatewayAuthError) as info:
        await s.get(ORDERS)
    assert info.value.response is not None and info.value.response.status_code == 401
    assert s.state is State.UNINITIALISED


async def test_a_task_cancelled_in_its_login_leaves_the_session_usable(
    new_async: Factory, sb: Sandbox
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    gate = {"hold": True}

    def password() -> str:
        return "demo-password"

    s = new_async(make_credentials(password=FromCallable(password)), relogin_timeout=30)
    await s.connect()
    sb.control.expire()
    sb.control.fault(LOGIN, delay=0.5, count=1)  # the first re-login's login call is slow
    first = asyncio.create_task(s.get(ORDERS))
    await asyncio.sleep(0.1)  # the first task is in its login (the sandbox holds the answer)
    waiters = [asyncio.create_task(s.get(ORDERS)) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert s.renewal_waiters == 5
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    answers = await asyncio.wait_for(asyncio.gather(*waiters), 20)  # one took the login over
    assert all(r.status_code == 200 for r in answers)
    assert s.state is State.AUTHENTICATED and s.generation == 2
    assert not s._driver.lock.locked()  # nothing stays held
    del entered, release, gate
    # The cancelled task's login call is still held by the sandbox: let it land here (the
    # connect's, the takeover's and its own), not in a later test's counters.
    deadline = time.monotonic() + 10
    while stats(sb)["logins"] < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert stats(sb)["logins"] == 3


async def test_a_rejected_login_cools_down_and_raises_the_same_error(
    new_async: Factory, sb: Sandbox
) -> None:
    s = new_async(make_credentials(password="wrong"))
    with pytest.raises(LoginRejected) as first:
        await s.connect()
    calls = stats(sb)
    with pytest.raises(LoginRejected) as again:
        await s.connect()
    assert stats(sb) == calls  # nothing sent
    # the same error again (its class and text), a new object each time (tests/test_attack2.py)
    assert type(again.value) is type(first.value) and str(again.value) == str(first.value)
    await s.reset_cooldown()
    with pytest.raises(LoginRejected):
        await s.connect()
    assert stats(sb) != calls


async def test_httpx_async_client_with_the_session_auth(new_async: Factory, sb: Sandbox) -> None:
    s = new_async()
    await s.connect()
    async with httpx.AsyncClient(auth=s.auth) as client:
        r = await client.get(sb.url + ORDERS)
        assert r.status_code == 200
        sb.control.expire()
        r = await client.get(sb.url + ORDERS)  # renewed and replayed by the auth flow
        assert r.status_code == 200 and s.generation == 2
        sb.control.fault(LOGIN, status=401, code=0, count=5)
        sb.control.expire()
        r = await client.get(sb.url + ORDERS)  # cannot be renewed: the 401 comes back
        assert r.status_code == 401
    assert s.history[-1].error == "LoginRejected"


async def test_expiry_without_auto_relogin_raises(new_async: Factory, sb: Sandbox) -> None:
    s = new_async(auto_relogin=False)
    await s.connect()
    sb.control.expire()
    with pytest.raises(SessionExpired):
        await s.get(ORDERS)


async def test_sync_and_async_sessions_share_one_file_store(
    new_async: Factory, new_session: Callable[..., Any], sb: Sandbox, tmp_path: Any
) -> None:
    path = tmp_path / "tokens.json"
    a = new_async(store=f"file:{path}")
    await a.connect()
    sync = new_session(store=f"file:{path}")
    assert sync.resume() and sync.generation == 1  # the async process's session, adopted
    assert sync.get(ORDERS).status_code == 200
    assert stats(sb)["logins"] == 1
