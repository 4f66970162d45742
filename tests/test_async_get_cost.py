"""What an authenticated GET through AsyncKSSession adds to raw aiohttp (issue 16's <= 1.05 CPU
ratio, benchmarks/async_session.py): counted, not timed, so the check holds on a loaded machine.
Against the sandbox over loopback HTTP.

- The library's coroutines between ``session.get`` and aiohttp's request coroutine are ``get``,
  ``request`` and the wire's retry loop, whose tries run in its own frame; no aiohttp request
  context manager is made (``ClientSession.request`` builds it through a ``typing`` alias: a
  Python call and a caught AttributeError per request).
- Python function calls (the profiler's ``call`` events: each call, and each resumption of a
  coroutine) of one GET with JSON parsed: the session's at most a few more than raw aiohttp's
  with the same headers.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from types import CodeType, FrameType
from typing import Any

import pytest

aiohttp = pytest.importorskip("aiohttp")

from session_fsm import AsyncKSSession, Wire, contract  # noqa: E402
from session_fsm.sandbox import Sandbox  # noqa: E402
from session_fsm.wire import USER_AGENT  # noqa: E402

pytestmark = pytest.mark.anyio
ORDERS = contract.ORDERS_REPORT[1]
#: How many more Python calls the session's GET may make than raw aiohttp's (1 more here, 198
#: to 197; 9 more, 206, with a coroutine per try and aiohttp's context manager).
EXTRA_CALLS = 5


def _is_aiohttp_request(code: CodeType) -> bool:
    return code.co_name == "_request" and code.co_filename.endswith("aiohttp/client.py")


async def test_a_get_reaches_aiohttp_through_three_coroutines_and_no_context_manager(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox
) -> None:
    s = new_async()
    await s.connect()
    await s.get(ORDERS)  # the pool, the template, the allow-list's verdict: made
    chains: set[tuple[str, ...]] = set()
    managers: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        if "_BaseRequestContextManager" in getattr(code, "co_qualname", "") or (
            code.co_name in ("__await__", "__aenter__")
            and code.co_filename.endswith("aiohttp/client.py")
        ):
            managers.append(code.co_name)
        if _is_aiohttp_request(code):  # made, started or resumed: the same awaiting frames
            chain, back = [], frame.f_back
            while back is not None:
                if "session_fsm" in back.f_code.co_filename:
                    chain.append(back.f_code.co_name)
                back = back.f_back
            chains.add(tuple(chain))

    sys.setprofile(profile)
    try:
        response = await s.get(ORDERS)
    finally:
        sys.setprofile(None)
    assert response.status_code == 200
    assert chains == {("send", "request", "get")}
    assert managers == []


async def _calls_per_get(fn: Callable[[], Awaitable[None]], rounds: int = 5) -> int:
    """The fewest Python calls one ``fn()`` made in ``rounds`` tries (the fewest: the answer
    arriving in one piece or two changes aiohttp's calls alike for every client)."""
    fewest = sys.maxsize
    for _ in range(rounds):
        calls = [0]

        def profile(frame: FrameType, event: str, arg: Any, calls: list[int] = calls) -> None:
            if event == "call":
                calls[0] += 1

        sys.setprofile(profile)
        try:
            await fn()
        finally:
            sys.setprofile(None)
        fewest = min(fewest, calls[0])
    return fewest


async def test_a_get_makes_at_most_a_few_python_calls_more_than_raw_aiohttp(
    new_async: Callable[..., AsyncKSSession], sb: Sandbox
) -> None:
    s = new_async()
    await s.connect()
    snap = s.snapshot()
    assert snap.session_token is not None
    headers = {"User-Agent": USER_AGENT, **Wire.trading_headers(s.identity(),
                                                                 snap.session_token)}  # fmt: skip
    connect, read = s.config.timeout
    raw = aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(sock_connect=connect, sock_read=read)
    )

    async def through_session() -> None:
        (await s.get(ORDERS)).json()

    async def through_aiohttp() -> None:
        async with raw.get(snap.host + ORDERS, allow_redirects=False) as r:
            r.raise_for_status()
            await r.json()

    loop = asyncio.get_running_loop()
    debug = loop.get_debug()
    loop.set_debug(False)  # (debug mode walks the stack of every callback made: not ours)
    try:
        for fn in (through_session, through_aiohttp):  # warm: pools, templates, caches
            await fn()
        ours = await _calls_per_get(through_session)
        theirs = await _calls_per_get(through_aiohttp)
    finally:
        loop.set_debug(debug)
        await raw.close()
    assert ours <= theirs + EXTRA_CALLS, (ours, theirs)
