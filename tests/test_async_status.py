"""The status server and the Prometheus metrics watching AsyncKSSession objects (issue 18,
parts 1 and 2, for the async driver): served from inside a running event loop, fetched over
real loopback HTTP with aiohttp (nothing blocks the loop), metrics read back with
prometheus_client's own parser."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")
import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from session_fsm import AsyncKSSession, FromCallable, KSSession, LoginRejected, contract
from session_fsm.metrics import SessionMetrics
from session_fsm.sandbox import Sandbox
from session_fsm.status import serve_status
from session_fsm.table import State
from tests.conftest import Clock, make_credentials
from tests.test_async_heartbeat import AsyncStepper

pytestmark = pytest.mark.anyio
ORDERS = contract.ORDERS_REPORT[1]
LOGIN = contract.LOGIN_USERID[1]
Factory = Callable[..., AsyncKSSession]




async def fetch(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        body = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, body


def value(text: str, name: str, session: Any, **labels: str) -> float | None:
    want = {"userid": session.credentials.userid, "session_id": session.session_id, **labels}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == want:
                return float(s.value)
    return None


async def test_healthz_and_the_page_data_of_an_async_session_served_inside_the_loop(
    sb: Sandbox, new_async: Factory
) -> None:
    s = new_async()
    async with serve_status(s) as server:  # started and stopped without blocking the loop
        status, body = await fetch(server.url + "healthz")
        assert status == 503 and body["reason"] == f"demo-user ({s.session_id}) is Uninitialised"
        await s.connect()
        assert await fetch(server.url + "healthz") == (200, {"status": "ok", "sessions": 1})
        sb.control.expire()
        await s.get(ORDERS)  # re-login on the way
        status, page = await fetch(server.url + "api/status")
        (view,) = page["sessions"]
        assert (view["state"], view["generation"], view["relogin_waiters"]) == (
            "Authenticated", 2, 0,
        )  # fmt: skip
        assert view["transitions"][0]["trigger"] == "authenticate"
        sb.control.fault(LOGIN, status=401, code=contract.FAULT_WRONG_PASSWORD)
        sb.control.expire()
        with pytest.raises(LoginRejected):
            await s.get(ORDERS)
        status, body = await fetch(server.url + "healthz")
        assert status == 503 and body["reason"] == (
            f"demo-user ({s.session_id}) is Initialised: login failed: LoginRejected 401001"
        )
    assert server._server.socket.fileno() == -1  # closed: the port is free


async def test_a_sync_and_an_async_session_on_one_page(
    new_async: Factory, new_session: Callable[..., KSSession]
) -> None:
    a, b = new_async(), new_session()
    await a.connect()
    await asyncio.to_thread(b.connect)
    async with serve_status(a, b) as server:
        assert await fetch(server.url + "healthz") == (200, {"status": "ok", "sessions": 2})
        _, page = await fetch(server.url + "api/status")
        assert {v["session_id"] for v in page["sessions"]} == {a.session_id, b.session_id}


async def test_a_heartbeat_task_that_cannot_renew_shows_in_healthz(
    sb: Sandbox, new_async: Factory, clock: Clock
) -> None:
    w = AsyncStepper()
    s = new_async(heartbeat=30, heartbeat_waiter=w)
    await s.connect()
    await w.parked()
    async with serve_status(s) as server:
        assert (await fetch(server.url + "healthz"))[0] == 200
        sb.control.expire()
        sb.control.fault(LOGIN, status=401, code=contract.FAULT_WRONG_PASSWORD)
        clock.advance(30)
        await w.step()  # the heartbeat task finds the dead session; its re-login is refused
        status, body = await fetch(server.url + "healthz")
        assert status == 503 and "LoginRejected 401001" in body["reason"]
        _, text = await fetch(server.url + "metrics")
        assert value(text, "session_fsm_logins_total", s, result="LoginRejected") == 1
        assert value(text, "session_fsm_requests_total", s, outcome="LoginRejected") == 1


async def test_metrics_count_an_async_session(sb: Sandbox, new_async: Factory) -> None:
    metrics = SessionMetrics()
    s = metrics.watch(new_async())
    assert isinstance(s, AsyncKSSession)  # given back as it came
    await s.connect()
    for _ in range(3):
        await s.get(ORDERS)
    sb.control.expire()
    await asyncio.gather(*(s.get(ORDERS) for _ in range(5)))  # one re-login for the five
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert value(text, "session_fsm_logins_total", s, result="ok") == 2
    assert value(text, "session_fsm_relogins_total", s, reason="expiry") == 1
    assert value(text, "session_fsm_requests_total", s, outcome="ok") == 8
    assert value(text, "session_fsm_state", s, session_fsm_state="Authenticated") == 1
    assert value(text, "session_fsm_generation", s) == 2


async def test_tasks_waiting_on_a_relogin_are_counted(sb: Sandbox, new_async: Factory) -> None:
    metrics = SessionMetrics()
    s = metrics.watch(new_async(make_credentials(password=FromCallable(lambda: "demo-password"))))
    await s.connect()
    sb.control.expire()
    sb.control.fault(LOGIN, delay=0.5, count=1)  # the re-login's login call is held a while
    tasks = [asyncio.create_task(s.get(ORDERS)) for _ in range(4)]
    for _ in range(1000):  # until three wait on the first one's re-login
        if s.renewal_waiters == 3:
            break
        await asyncio.sleep(0.005)
    from prometheus_client import generate_latest

    during = generate_latest(metrics.registry).decode()
    await asyncio.gather(*tasks)
    after = generate_latest(metrics.registry).decode()
    assert value(during, "session_fsm_relogin_waiters", s) == 3
    assert value(after, "session_fsm_relogin_waiters", s) == 0
    assert s.state is State.AUTHENTICATED and s.generation == 2
