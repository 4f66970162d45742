"""AsyncKSSession.request's hot path (benchmarks/async_session.py): with a usable snapshot, a
2xx answer is returned without running the driver's loop; every other case still goes through
the core (a non-2xx answer to its ``answered`` flow, a due renewal to ``relogin.request``),
against the sandbox over loopback HTTP."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("aiohttp")

from session_fsm import AsyncKSSession, UnexpectedStatus, contract
from session_fsm.aio.driver import AsyncDriver
from session_fsm.sandbox import Sandbox

pytestmark = pytest.mark.anyio
ORDERS = contract.ORDERS_REPORT[1]


def count_runs(s: AsyncKSSession) -> list[Any]:
    """The flows the session's driver runs from now on."""
    runs: list[Any] = []
    driver: AsyncDriver = s._driver
    real = driver.run

    async def run(flow: Any, send: Any = None) -> Any:
        runs.append(flow.__name__)
        return await real(flow, send)

    driver.run = run  # type: ignore[method-assign]
    return runs


async def test_a_2xx_answer_with_a_usable_session_skips_the_driver(
    new_async: Any, sb: Sandbox
) -> None:
    s = new_async()
    await s.connect()
    runs = count_runs(s)
    for _ in range(3):
        assert (await s.get(ORDERS)).status_code == 200
    assert runs == []


async def test_other_answers_and_due_renewals_still_go_through_the_core(
    new_async: Any, sb: Sandbox
) -> None:
    s = new_async()
    await s.connect()
    runs = count_runs(s)
    sb.control.fault(ORDERS, status=418, count=1)
    with pytest.raises(UnexpectedStatus) as info:
        await s.get(ORDERS)
    assert info.value.response is not None and info.value.response.status_code == 418
    sb.control.expire()
    assert (await s.get(ORDERS)).status_code == 200 and s.generation == 2  # renewed, replayed
    assert runs == ["answered", "answered"]
    await s.logout()
    runs.clear()
    with pytest.raises(Exception, match="connect"):
        await s.get(ORDERS)  # not usable: the core's whole request flow says why
    assert runs == ["request"]
