"""One AsyncWire used from event loops that run at the same time in two threads: each call
goes through a pool of its own loop (the wire's hot path finds the running loop from the
thread its pool's loop runs in; a pool whose loop runs in another thread is never used), and
from two loops run one after the other in one thread. Against the sandbox over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

pytest.importorskip("aiohttp")

from session_fsm.aio.pool import Pool
from session_fsm.aio.wire import AsyncWire
from session_fsm.models import ResSessionInit
from session_fsm.sandbox import Sandbox
from tests.test_wire import who


@pytest.fixture
def other_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_pool_whose_loop_runs_in_another_thread_is_not_used(
    sandbox: Sandbox, other_loop: asyncio.AbstractEventLoop
) -> None:
    wire = AsyncWire()

    async def call() -> tuple[object, Pool | None, asyncio.AbstractEventLoop]:
        answer = await wire.session_init(sandbox.url, who())
        return answer, wire._current, asyncio.get_running_loop()

    def there() -> tuple[object, Pool | None, asyncio.AbstractEventLoop]:
        return asyncio.run_coroutine_threadsafe(call(), other_loop).result(30)

    async def here() -> tuple[object, Pool | None, asyncio.AbstractEventLoop]:
        try:
            return await call()
        finally:
            await wire.close()  # (this loop's pool)

    async def close_there(pool: Pool) -> None:
        for http in pool.parts():  # (left to its own loop by the wire)
            await http.close()
        await wire.close()

    answer, theirs, loop = there()  # the other thread's pool: its loop runs on
    assert isinstance(answer, ResSessionInit) and theirs is not None and loop is other_loop
    answer, ours, loop = asyncio.run(here())
    assert isinstance(answer, ResSessionInit) and ours is not None
    assert ours is not theirs and ours.loop is loop is not other_loop
    answer, again, loop = there()  # and back: a pool of the other loop's again
    assert isinstance(answer, ResSessionInit) and again is not None and again.loop is other_loop
    asyncio.run_coroutine_threadsafe(close_there(theirs), other_loop).result(30)


def test_loops_run_one_after_the_other_in_one_thread_each_get_their_own_pool(
    sandbox: Sandbox,
) -> None:
    wire = AsyncWire()
    pools: list[Pool | None] = []

    async def call() -> None:
        assert isinstance(await wire.session_init(sandbox.url, who()), ResSessionInit)
        assert isinstance(await wire.session_init(sandbox.url, who()), ResSessionInit)
        pools.append(wire._current)
        await wire.close()

    asyncio.run(call())
    asyncio.run(call())
    first, second = pools
    assert first is not None and second is not None and first is not second
    assert first.loop is not second.loop
