"""The async wire's total deadline kept by one loop timer per pool
(:mod:`session_fsm.aio.deadline`), and the hot path's per-generation template
(:mod:`session_fsm.aio.template`): what they must keep of the per-request way they replace.
Over loopback HTTP (the sandbox, a dripping listener), plus narrow checks of ``Deadlines`` on
a bare event loop."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from session_fsm import (
    AsyncKSSession,
    ConfigurationError,
    RequestTimeout,
    Secret,
    WireConfig,
    contract,
)
from session_fsm.aio.deadline import EXPIRED, FINISHED, RUNNING, STATE, TASK, Deadlines
from session_fsm.aio.wire import AsyncWire
from session_fsm.sandbox import Sandbox
from tests.loopback_listeners import dripping
from tests.test_wire import who

pytestmark = pytest.mark.anyio
ORDERS = contract.ORDERS_REPORT[1]


def expiry_timers(loop: asyncio.AbstractEventLoop) -> int:
    """How many timers of the loop are a Deadlines expiry (asyncio's own heap, read)."""
    scheduled: list[Any] = getattr(loop, "_scheduled", [])
    return sum(
        1
        for h in scheduled
        if not h.cancelled() and getattr(h._callback, "__func__", None) is Deadlines._expire
    )


async def test_many_calls_hold_one_timer_and_keep_no_finished_task(sb: Sandbox) -> None:
    async with AsyncWire(WireConfig(deadline=30.0)) as w:
        for _ in range(40):
            assert (await w.send("GET", sb.url + contract.SESSION_INIT[1])).status < 500
        assert w._current is not None
        deadlines = w._current.deadlines
        assert expiry_timers(asyncio.get_running_loop()) == 1  # not one per request
        calls = list(deadlines._calls)
        assert len(calls) <= 1  # finished calls leave the front as the next one starts
        assert all(c[STATE] == FINISHED and c[TASK] is None for c in calls)


async def test_a_task_cancelled_midway_gets_its_cancellation_not_the_deadline_error() -> None:
    with dripping("body") as drip:
        async with AsyncWire(WireConfig(timeout=(1.0, 1.0), deadline=5.0)) as w:
            task = asyncio.ensure_future(w.send("GET", drip.url + ORDERS))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the wire still keeps deadlines afterwards
            started = time.monotonic()
            with pytest.raises(RequestTimeout):
                await asyncio.wait_for(w.send("GET", drip.url + ORDERS), 20)
            assert time.monotonic() - started < 8


async def test_the_deadline_bounds_the_wait_for_a_pooled_connection() -> None:
    with dripping("body") as drip:
        config = WireConfig(timeout=(1.0, 1.0), deadline=0.8, pool_maxsize=1)
        async with AsyncWire(config) as w:
            started = time.monotonic()
            results = await asyncio.gather(
                w.send("GET", drip.url + ORDERS), w.send("GET", drip.url + ORDERS),
                return_exceptions=True,
            )  # fmt: skip
            took = time.monotonic() - started
        assert all(isinstance(r, RequestTimeout) for r in results), results
        assert "deadline of 0.8s" in str(results[1])
        assert took < 0.8 + 1.5  # the second one queued, and expired, at its own deadline


# --- Deadlines on a bare loop ------------------------------------------------------------------


async def test_an_expiry_cancels_only_running_calls_past_their_deadline() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)

    async def call(deadline: float) -> str:
        watch = deadlines.watch(deadline)
        assert watch is not None
        try:
            await loop.create_future()  # never done
        except asyncio.CancelledError:
            return "expired" if Deadlines.expired(watch) else "cancelled"
        finally:
            watch[STATE], watch[TASK] = FINISHED, None
        return "done"

    now = loop.time()
    early = asyncio.ensure_future(call(now + 0.05))
    late = asyncio.ensure_future(call(now + 30))
    assert await early == "expired"
    assert not late.done() and expiry_timers(loop) == 1  # re-armed for the later call
    late.cancel()
    assert await late == "cancelled"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tasks count cancellations from 3.11")
async def test_a_cancellation_meeting_an_expiry_is_passed_on() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    seen: list[bool] = []
    watches: list[Any] = []

    async def call() -> None:
        watch = deadlines.watch(loop.time() - 1)  # already due
        assert watch is not None and watch[STATE] == RUNNING
        watches.append(watch)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(watch[STATE] == EXPIRED)
            seen.append(Deadlines.expired(watch))
            raise

    task = asyncio.ensure_future(call())
    while not (watches and watches[0][STATE] == EXPIRED):
        await asyncio.sleep(0)  # until the expiry has cancelled the waiting call
    task.cancel()  # and the application cancels it too, before the call sees either
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [True, False]  # expired, but the application's cancellation goes on


# --- the hot path's template -------------------------------------------------------------------


async def test_one_template_per_generation(new_async: Any, sb: Sandbox) -> None:
    s: AsyncKSSession = new_async()
    await s.connect()
    await s.get(ORDERS)
    first = s._template
    await s.get(ORDERS)
    assert s._template is first is not None  # made once for the generation
    sb.control.expire()
    assert (await s.get(ORDERS)).status_code == 200 and s.generation == 2
    await s.get(ORDERS)
    assert s._template is not first and s._template is not None
    assert s._template.token is s.snapshot().session_token


async def test_a_token_http_cannot_carry_is_refused_on_every_request(
    new_async: Any, sb: Sandbox
) -> None:
    s: AsyncKSSession = new_async()
    await s.connect()
    snap = s.snapshot()
    s._core.snap = snap.evolve(session_token=Secret("bad\r\ntoken"))
    for _ in range(2):  # the check is not skipped once it has failed
        with pytest.raises(ConfigurationError, match="sessionToken") as info:
            await s.get(ORDERS)
        assert "bad" not in str(info.value)
    s._core.snap = snap
    assert (await s.get(ORDERS)).status_code == 200


async def test_the_proxy_is_looked_up_once_per_origin_and_pool(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "*")
    async with AsyncWire() as w:
        await w.session_init(sb.url, who())
        assert w._current is not None
        env = w._current.env
        asked: list[str] = []
        real = env.proxies
        monkeypatch.setattr(env, "proxies", lambda url: asked.append(url) or real(url))
        w._current.proxy_of.clear()
        for _ in range(3):
            await w.session_init(sb.url, who())
        assert len(asked) == 1
