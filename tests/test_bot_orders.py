"""A bot's order flow across a server-side expiry and a login elsewhere that ends its session.

The bot places, modifies and cancels orders as the public client shapes them, through a
KSSession. Each kind of call meets a dead session at least once (expired by the server, or
replaced by a second login of the same user from another machine without a shared store):
the session re-logs in and replays, and the order book must end exactly as the bot meant it:
no order placed twice, no modify or cancel lost. Also: both "session invalid" answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from session_fsm import KSSession
from session_fsm.sandbox import Sandbox
from tests.public_client import (
    CLIENT_HEADERS,
    get_order_id,
    modify_body,
    path_param,
    place_body,
    read,
)

Factory = Callable[..., KSSession]
NORMAL, GENERIC = "/orders/1.0/order/normal", "/orders/1.0/orders"


class OrderBot:
    """Places, modifies and cancels; remembers what it meant the book to hold."""

    def __init__(self, session: KSSession) -> None:
        self.s = session
        self.meant: dict[str, dict[str, Any]] = {}

    def _send(self, method: str, path: str, data: bytes | None = None) -> Any:
        return read(self.s.request(method, path, headers=CLIENT_HEADERS, data=data))

    def place(self, qty: int, price: float) -> str:
        oid = get_order_id(self._send("POST", NORMAL, place_body("N", 1594, "BUY", qty, price)))
        assert oid not in self.meant
        self.meant[oid] = {"status": "OPN", "orderQuantity": qty, "price": price}
        return oid

    def modify(self, oid: str, qty: int, price: float) -> None:
        answer = self._send("PUT", GENERIC, modify_body(oid, price, qty, 0, 0, "GFD"))
        assert get_order_id(answer) == oid
        self.meant[oid].update(orderQuantity=qty, price=price)

    def cancel(self, oid: str) -> None:
        assert get_order_id(self._send("DELETE", f"{GENERIC}/{path_param(oid)}")) == oid
        self.meant[oid]["status"] = "CAN"

    def book(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._send("GET", "/reports/1.0/orders")["Success"]
        return rows


def test_orders_stay_consistent_across_expiry_and_a_login_elsewhere(
    sb: Sandbox, new_session: Factory
) -> None:
    sb.control.settings(fill="never")  # orders rest on the book, so they can be changed
    bot = OrderBot(new_session())
    bot.s.connect()

    def expire() -> None:
        assert sb.control.expire() == 1

    def login_elsewhere() -> None:  # the same user on another machine, no shared store
        new_session().connect()

    # Before these steps the bot's session dies: steps 2 and 11 cancel, 4 and 12 place,
    # 7 and 10 modify (see the schedule below).
    disruptions = {2: expire, 4: login_elsewhere, 7: expire, 10: login_elsewhere,
                   11: login_elsewhere, 12: expire}  # fmt: skip
    ids: list[str] = []
    for step in range(14):
        if step in disruptions:
            disruptions[step]()
        if step % 3 == 0 or step == 4:  # place: steps 0, 3, 4, 6, 9, 12
            ids.append(bot.place(qty=1 + step, price=1400.0 - step))
        elif step % 3 == 1:  # modify the newest order: steps 1, 7, 10, 13
            bot.modify(ids[-1], qty=20 + step, price=1390.0 + step)
        else:  # cancel the oldest open order: steps 2, 5, 8, 11
            bot.cancel(next(o for o in ids if bot.meant[o]["status"] == "OPN"))

    rows = bot.book()
    assert len(rows) == len(ids) == 6 == len({str(r["orderId"]) for r in rows})  # none twice
    got = {str(r["orderId"]): {k: r[k] for k in ("status", "orderQuantity", "price")}
           for r in rows}  # fmt: skip
    assert got == bot.meant  # every modify and cancel took effect
    assert sum(m["status"] == "CAN" for m in bot.meant.values()) == 4
    relogins = [r for r in bot.s.history if r.trigger == "session_expired" and r.outcome == "ok"]
    assert len(relogins) == len(disruptions) and bot.s.generation == 1 + len(disruptions)
    calls = sb.control.stats()["calls"]
    # Each disrupted call was refused once (401, nothing done) and replayed once.
    assert calls[f"POST {NORMAL}"] == 6 + 2
    assert calls[f"PUT {GENERIC}"] == 4 + 2
    assert calls[f"DELETE {GENERIC}/{{orderId}}"] == 4 + 2


@pytest.mark.parametrize("single_session", [True, False])
def test_a_login_elsewhere_ends_the_session_only_with_one_session_per_user(
    sb: Sandbox, new_session: Factory, single_session: bool
) -> None:
    sb.control.settings(single_session=single_session)
    bot = new_session()
    bot.connect()
    new_session().connect()
    assert bot.get("/reports/1.0/orders").status_code == 200
    assert bot.generation == (2 if single_session else 1)
    assert sb.control.stats()["sessions"] == (3 if single_session else 2)


def test_401_invalid_session_relogs_in(sb: Sandbox, new_session: Factory) -> None:
    s = new_session()
    s.connect()
    sb.control.expire()
    assert s.get("/positions/1.0/positions/todays").status_code == 200
    assert s.generation == 2


def test_403_invalid_session_relogs_in(sb: Sandbox, new_session: Factory) -> None:
    sb.control.settings(invalid_session=403)
    s = new_session()
    s.connect()
    sb.control.expire()
    assert s.get("/positions/1.0/positions/todays").status_code == 200
    assert s.generation == 2
    order = place_body("N", 1594, "BUY", 1, 1400.0)
    assert get_order_id(read(s.request("POST", NORMAL, headers=CLIENT_HEADERS, data=order)))
