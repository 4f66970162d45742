"""The control plane forgets one user's order book (``DELETE /_sandbox/orders?userid=``): a book
at the sandbox's limit takes orders again, the other users' books stay, and order ids keep
counting. A long run of orders (the soak benchmark places 20,000 as one user) clears its book
now and then instead of meeting the limit.

Over raw HTTP with the sandbox tests' own client (not the project's), through both faces of the
control plane: ``SandboxControl`` in this process and ``HttpSandboxControl``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from session_fsm.sandbox import (
    Account,
    ControlPlane,
    HttpSandboxControl,
    Sandbox,
    SandboxConfig,
    orders,
    run_sandbox,
)
from session_fsm.sandbox.orders import FAULT_ORDER_BOOK_FULL
from tests.sandbox_server.client import Client, fault_of

ORDER = {"instrumentToken": 11536, "transactionType": "BUY", "quantity": 2, "price": 3000.0}
CONFIG = SandboxConfig(accounts=(Account("ann", "pw-a", "11"), Account("bob", "pw-b", "22")))
ORDERS_REPORT = ("GET", "/reports/1.0/orders")
TRADES_REPORT = ("GET", "/reports/1.0/trades")
POSITIONS = ("GET", "/positions/1.0/positions/todays")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with run_sandbox(CONFIG) as sb:
        yield sb


@pytest.fixture(params=["in-process", "http"])
def control(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[ControlPlane]:
    sandbox.control.reset()
    if request.param == "in-process":
        yield sandbox.control
        return
    remote = HttpSandboxControl(sandbox.root)
    yield remote
    remote.close()


def _logged_in(sandbox: Sandbox, userid: str, password: str, code: str) -> tuple[Client, str]:
    client = Client(sandbox.url, CONFIG)
    ott = client.login(password, userid).json()["Success"]["oneTimeToken"]
    token = client.two_fa(ott, code, userid).json()["Success"]["sessionToken"]
    return client, str(token)


def _place(client: Client, token: str) -> Any:
    return client.trade(("POST", "/orders/1.0/order/normal"), token, json=ORDER)


def _order_id(answer: Any) -> int:
    assert answer.status_code == 200, answer.text
    return int(answer.json()["Success"]["NSE"]["orderId"])


def test_a_full_book_forgotten_takes_orders_again_and_the_others_stay(
    sandbox: Sandbox, control: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orders, "MAX_ORDERS_PER_USER", 3)
    ann, ta = _logged_in(sandbox, "ann", "pw-a", "11")
    bob, tb = _logged_in(sandbox, "bob", "pw-b", "22")
    ids = [_order_id(_place(ann, ta)) for _ in range(3)]
    bobs = _order_id(_place(bob, tb))
    full = _place(ann, ta)
    assert full.status_code == 400 and fault_of(full)["code"] == FAULT_ORDER_BOOK_FULL

    assert control.clear_orders("ann") == 3

    for call in (ORDERS_REPORT, TRADES_REPORT, POSITIONS):  # filled at once: trades forgotten
        assert ann.trade(call, ta).json() == {"Success": []}, call
    assert [r["orderId"] for r in control.orders("bob")["bob"]] == [bobs]
    assert len(bob.trade(TRADES_REPORT, tb).json()["Success"]) == 1
    again = _order_id(_place(ann, ta))
    assert again > max(*ids, bobs)  # ids keep counting: none is given twice
    assert [r["orderId"] for r in control.orders("ann")["ann"]] == [again]
    ann.http.close()
    bob.http.close()


def test_every_book_forgotten_at_once(sandbox: Sandbox, control: ControlPlane) -> None:
    ann, ta = _logged_in(sandbox, "ann", "pw-a", "11")
    bob, tb = _logged_in(sandbox, "bob", "pw-b", "22")
    for client, token in ((ann, ta), (ann, ta), (bob, tb)):
        _order_id(_place(client, token))
    assert control.clear_orders() == 3
    assert control.orders() == {}
    assert control.clear_orders("ann") == 0  # nothing left: nothing to forget
    assert control.stats()["logins"] == 2  # the sessions stay (unlike reset)
    assert ann.trade(ORDERS_REPORT, ta).json() == {"Success": []}
    ann.http.close()
    bob.http.close()
