"""The async wire (:class:`session_fsm.aio.wire.AsyncWire`) under concurrency, against the
sandbox over loopback HTTP: 1,000 concurrent requests, one pool for tasks meeting a cold wire,
cancellation, no blocking call on the event loop, fork safety, and the client benchmark.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from session_fsm import (
    RetryPolicy,
    WireConfig,
    contract,
)
from session_fsm.aio.wire import AsyncResponse, AsyncWire
from session_fsm.models import ResSessionInit
from session_fsm.sandbox import Sandbox
from tests.loopback_listeners import dripping
from tests.test_async_wire import authenticate
from tests.test_wire import who

pytestmark = pytest.mark.anyio

ORDERS = contract.ORDERS_REPORT[1]


def pool_of(wire: AsyncWire) -> Any:
    """The aiohttp session of ``wire``'s current pool (None before its first call)."""
    return wire._current.http if wire._current is not None else None


# --- concurrency and the event loop ----------------------------------------------------------


async def test_a_thousand_concurrent_gets_all_succeed(sb: Sandbox) -> None:
    async with AsyncWire(WireConfig(pool_maxsize=8)) as w:
        token = (await authenticate(w, sb)).session_token
        url = sb.url + ORDERS
        answers = await asyncio.gather(
            *(w.trading_request("GET", url, who(), token) for _ in range(1000)),
            return_exceptions=True,
        )
    errors = [type(a).__name__ for a in answers if not isinstance(a, AsyncResponse)]
    assert errors == []
    assert all(isinstance(a, AsyncResponse) and a.status == 200 for a in answers)
    assert sb.control.stats()["calls"]["GET /reports/1.0/orders"] == 1000


async def test_tasks_meeting_a_cold_wire_share_one_pool(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool is made once, though making it awaits (the CA bundle is read in a thread);
    a maker cancelled meanwhile leaves the pool to the next task, which makes it."""
    import aiohttp
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    made: list[object] = []
    real = aiohttp.ClientSession

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(None)
        return real(*args, **kwargs)

    monkeypatch.setattr(aiohttp, "ClientSession", counted)
    async with AsyncWire() as w:
        first = asyncio.ensure_future(w.session_init(sb.url, who()))
        await asyncio.sleep(0)  # the first task is making the pool: awaiting the CA bundle
        assert w._making is not None
        others = [asyncio.ensure_future(w.session_init(sb.url, who())) for _ in range(20)]
        await asyncio.sleep(0)
        first.cancel()
        answers = await asyncio.gather(*others)
        assert first.cancelled()
        assert all(isinstance(a, ResSessionInit) for a in answers)
        assert len(made) == 1 and w._making is None


async def test_a_request_cancelled_midway_leaves_the_wire_usable(sb: Sandbox) -> None:
    with dripping("body") as drip:
        async with AsyncWire(WireConfig(pool_maxsize=1)) as w:
            task = asyncio.ensure_future(w.session_init(drip.url, who()))
            for _ in range(500):  # until the answer is being read (5 s at most)
                if drip.sent:
                    break
                await asyncio.sleep(0.01)
            assert drip.sent and not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(3):  # its one connection was given back
                assert isinstance(await w.session_init(sb.url, who()), ResSessionInit)


#: Blocking calls, recorded with the thread that made them while a test watches.
CALLS: list[tuple[str, int]] = []
_WATCHING: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _WATCHING and event in ("open", "subprocess.Popen", "os.system"):
        CALLS.append((event, threading.get_ident()))


sys.addaudithook(_audit)  # file opens (a CA bundle read in Python, a log file, ...)


def _recorded(name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _WATCHING:
            CALLS.append((name, threading.get_ident()))
        return fn(*args, **kwargs)

    return wrapper


async def test_no_blocking_call_on_the_event_loop(
    sb: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No blocking call runs on the loop's thread during whole calls: the name is looked up
    (``localhost``), the environment's CA bundle is loaded, and a retry waits 1 s
    (``Retry-After``). Blocking calls are recorded with their thread (wrappers, and audit
    hooks for file opens), and asyncio's debug mode reports any step that held the loop
    for 0.5 s (the 1 s wait, were it slept)."""
    import socket
    import ssl

    import certifi

    for module, name in ((time, "sleep"), (socket, "getaddrinfo"), (socket, "gethostbyname"),
                         (ssl, "create_default_context")):  # fmt: skip
        monkeypatch.setattr(module, name, _recorded(name, getattr(module, name)))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    loop = asyncio.get_running_loop()
    assert loop.get_debug()
    loop.slow_callback_duration = 0.5
    host = sb.url.replace("127.0.0.1", "localhost")
    policy = RetryPolicy(total=2)  # its sleeper is time.sleep: the wire awaits instead
    async with AsyncWire(WireConfig(retry=policy)) as warm:  # imports done, caches warm
        await warm.session_init(host, who())
    caplog.set_level(logging.WARNING, logger="asyncio")
    CALLS.clear()
    _WATCHING.append(True)
    try:
        async with AsyncWire(WireConfig(retry=policy)) as w:
            await w.session_init(host, who())
            token = (await authenticate(w, sb)).session_token
            sb.control.fault(ORDERS, status=503, retry_after=1, count=1)
            started = time.monotonic()
            r = await w.trading_request("GET", host + ORDERS, who(), token)
            assert r.status == 200 and time.monotonic() - started >= 1.0  # it did wait
            await asyncio.gather(*(w.trading_request("GET", host + ORDERS, who(), token)
                                   for _ in range(50)))  # fmt: skip
    finally:
        _WATCHING.clear()
    loop_thread = threading.get_ident()
    names = {name for name, _ in CALLS}
    assert {"getaddrinfo", "create_default_context"} <= names  # they ran, and ...
    assert [name for name, thread in CALLS if thread == loop_thread] == []  # ... off the loop
    assert [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()] == []


# --- fork safety -----------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_its_own_pool(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.control.reset()
    wire = AsyncWire()
    loop = asyncio.new_event_loop()
    try:
        token = loop.run_until_complete(authenticate(wire, sb)).session_token
        assert wire._current is not None
        parents = wire._current.http
        url = sb.url + ORDERS
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its own loop, its own pool, the parent's left alone
            try:
                os.close(read)

                async def child() -> dict[str, Any]:
                    r = await wire.trading_request("GET", url, who(), token)
                    return {"status": r.status, "own": pool_of(wire) is not parents,
                            "left": parents.closed}  # fmt: skip

                out = asyncio.new_event_loop().run_until_complete(child())
                os.write(write, json.dumps(out).encode())
            finally:
                os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read) as f:
            out = json.loads(f.read() or "{}")
        assert status == 0 and out == {"status": 200, "own": True, "left": False}
        r = loop.run_until_complete(wire.trading_request("GET", url, who(), token))
        assert r.status == 200 and pool_of(wire) is parents  # the parent's pool still serves it
    finally:
        loop.run_until_complete(wire.close())
        loop.close()


# --- the benchmark ---------------------------------------------------------------------------


def test_the_client_benchmark_runs(sb: Sandbox) -> None:
    """benchmarks/async_clients.py at smoke size: every arm answers, the wire loses nothing."""
    from tests.test_benchmarks_smoke import bench

    common = bench("common")
    result = bench("async_clients").run(common.Target(sb.url, sb.control, "in-process"), True)
    assert result.failed(smoke=True) == []
    assert result.data["requests"] == 3 * 2 * 10  # three arms, two rounds of 10
    assert result.data["failed"]["wire"] == 0 and result.data["failed"]["aiohttp"] == 0
