"""The soak benchmark keeps its user's order book under the sandbox's limit, and fails on any
error its own injections do not explain.

The full soak places 20,000 orders as one user; the sandbox refuses a user's orders past
``MAX_ORDERS_PER_USER`` (10,000), so half of them ended in a BadRequest, which the soak counted
as allowed typed errors. Here the limit is lowered (the in-process sandbox reads it at each
order) so that a smoke-sized soak meets it many times over.
"""

from __future__ import annotations

from typing import Any

import pytest

from session_fsm import BadRequest, KSError, ServiceUnavailable, SessionExpired, contract
from session_fsm.sandbox import Sandbox, orders
from tests import test_benchmarks_smoke as smoke

bench, target = smoke.bench, smoke.target  # (target: the benchmarks' sandbox fixture)


def test_every_order_is_accepted_past_the_books_limit(
    target: Any, sb: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orders, "MAX_ORDERS_PER_USER", 20)
    counts = bench("soak").soak(target, 1000, 4)  # 100 orders: five books' worth
    assert "BadRequest" not in counts.typed, counts.typed  # (80 of them before)
    assert counts.orders == 100 and counts.orders_accepted == 100
    assert counts.book_clears == 9 and counts.uninjected == {}
    # the sandbox holds what was placed since the last clear, all of it accepted
    assert counts.orders_cleared + len(sb.control.orders("demo-user")["demo-user"]) == 100


class _RefusingOrders:
    """The sandbox's control plane, whose reset (the soak's first step) is followed by four 400
    faults queued for the order endpoint: errors the soak did not inject itself."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def reset(self) -> None:
        self.inner.reset()
        self.inner.fault(contract.ORDER_NORMAL[1], method="POST", status=400, count=4)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_soak_fails_on_an_error_it_did_not_inject(target: Any) -> None:
    soak = bench("soak")
    common = bench("common")
    refusing = common.Target(target.url, _RefusingOrders(target.control), target.where)
    result = soak.run(refusing, smoke=True)
    failed = [f.name for f in result.failed(smoke=True)]
    assert failed == ["requests ended in another error (BadRequest 4)"]
    counts = result.data["counts"]
    assert counts.lost == 0 and counts.orders_accepted == counts.orders - 4  # typed, not lost


@pytest.mark.parametrize(
    ("error", "explained"),
    [
        (SessionExpired("GET /x -> HTTP 401", status=401), True),  # a replay met a 2nd expiry
        (ServiceUnavailable("GET /x -> HTTP 503", status=503), True),  # retries outlasted
        (SessionExpired("gave up after 30s waiting for another thread's re-login"), False),
        (BadRequest("POST /orders -> HTTP 400", status=400), False),
        (KSError("anything else"), False),
    ],
)
def test_only_what_the_soak_injects_is_explained(error: KSError, explained: bool) -> None:
    assert bench("soak").injected(error) is explained
