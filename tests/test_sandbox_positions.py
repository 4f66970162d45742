"""The sandbox's positions, kept up to date trade by trade, equal what the day's trades say.

The sandbox used to add up every trade of the day on every positions GET: a long run of
orders (the soak benchmark places one every 10 requests) made each positions answer slower
than the last, until the sandbox, not the client, set the pace. It now keeps each
instrument's legs as trades are added. The oracle here is the plain sum over the trade
report, written apart from the sandbox's code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from session_fsm import KSSession, contract
from session_fsm.sandbox import Sandbox, orders
from session_fsm.sandbox.market import INSTRUMENTS
from session_fsm.sandbox.orders import HOLDINGS, OrderBook

Factory = Callable[..., KSSession]
ORDER = contract.ORDER_NORMAL[1]
KINDS = {
    "todays": "/positions/1.0/positions/todays",
    "open": "/positions/1.0/positions/open",
    "stocks": "/positions/1.0/positions/stocks",
    "all": "/positions/1.0/positions",
}


def _expected(trades: list[dict[str, Any]]) -> dict[str, Any]:
    """Positions from the day's trades, summed from scratch (values rounded per trade)."""
    rows: dict[int, dict[str, Any]] = {}
    sold_by_token: dict[int, int] = {}
    for t in trades:
        token, qty, side = t["instrumentToken"], t["quantity"], t["transactionType"]
        inst = INSTRUMENTS[token]
        row = rows.setdefault(token, {"bq": 0, "bv": 0.0, "sq": 0, "sv": 0.0, "inst": inst})
        q, v = ("bq", "bv") if side == "BUY" else ("sq", "sv")
        row[q] += qty
        row[v] = round(row[v] + qty * t["price"], 2)
        if side == "SELL":
            sold_by_token[token] = sold_by_token.get(token, 0) + qty
    today = []
    for token, r in rows.items():
        bought, sold, inst = r["bq"], r["sq"], r["inst"]
        avg_buy = r["bv"] / bought if bought else 0.0
        avg_sell = r["sv"] / sold if sold else 0.0
        net = bought - sold
        today.append({
            "instrumentToken": token, "instrumentName": inst.name, "exchange": inst.exchange,
            "buyTradedQtyLot": bought, "buyTradedVal": r["bv"], "sellTradedQtyLot": sold,
            "sellTradedVal": r["sv"], "netTrdQtyLot": net, "lastPrice": inst.last,
            "realizedPL": round(min(bought, sold) * (avg_sell - avg_buy), 2),
            "unrealizedPL": round(net * (inst.last - (avg_buy if net > 0 else avg_sell)), 2),
        })  # fmt: skip
    stocks = [
        {"instrumentToken": token, "instrumentName": INSTRUMENTS[token].name,
         "exchange": INSTRUMENTS[token].exchange, "quantity": qty, "averagePrice": avg,
         "lastPrice": INSTRUMENTS[token].last,
         "sellableQuantity": max(0, qty - sold_by_token.get(token, 0))}
        for token, (qty, avg) in HOLDINGS.items()
    ]  # fmt: skip
    open_ = [p for p in today if p["netTrdQtyLot"] != 0]
    return {"todays": today, "open": open_, "stocks": stocks,
            "all": {"todays": today, "open": open_, "stocks": stocks}}  # fmt: skip


def test_positions_equal_the_sum_of_the_days_trades_after_every_order(
    sb: Sandbox, new_session: Factory
) -> None:
    s = new_session()
    s.connect()
    tokens = [1594, 2885, 11536, 1333]
    for i in range(24):
        body = {
            "instrumentToken": tokens[i % len(tokens)],
            "transactionType": "SELL" if i % 3 == 2 else "BUY",
            "quantity": 1 + i % 5,
            "price": 0,
        }
        assert s.post(ORDER, json=body).status_code == 200
        if i % 6 == 5:  # checked along the way, not only at the end
            trades = s.get("/reports/1.0/trades").json()["Success"]
            assert s.get(KINDS["todays"]).json()["Success"] == _expected(trades)["todays"]
    trades = s.get("/reports/1.0/trades").json()["Success"]
    assert len(trades) == 24 and {t["transactionType"] for t in trades} == {"BUY", "SELL"}
    expected = _expected(trades)
    for kind, path in KINDS.items():
        assert s.get(path).json()["Success"] == expected[kind], kind


def test_a_cleared_book_has_no_positions(sb: Sandbox, new_session: Factory) -> None:
    s = new_session()
    s.connect()
    body = {"instrumentToken": 2885, "transactionType": "SELL", "quantity": 2, "price": 0}
    assert s.post(ORDER, json=body).status_code == 200
    assert s.get(KINDS["todays"]).json()["Success"] != []
    sb.state.book.clear()
    assert s.get(KINDS["todays"]).json()["Success"] == []
    stocks = s.get(KINDS["stocks"]).json()["Success"]
    assert [row["sellableQuantity"] for row in stocks] == [q for q, _ in HOLDINGS.values()]


def test_a_positions_answer_costs_its_instruments_not_the_days_trades(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What made the soak server-bound: 60 trades on 2 instruments, and one positions answer
    looks up each instrument once, not each trade."""
    book = OrderBook(time.time)
    for i in range(60):
        body = {"instrumentToken": 1594 if i % 2 else 2885, "transactionType": "BUY",
                "quantity": 1, "price": 0}  # fmt: skip
        book.place("someone", "normal", body, fill=True)
    looked_up: list[int] = []
    real = orders.instrument

    def counted(token: int, *args: Any) -> Any:
        looked_up.append(token)
        return real(token, *args)

    monkeypatch.setattr(orders, "instrument", counted)
    answer = book.positions("someone", "all")
    assert [row["buyTradedQtyLot"] for row in answer["todays"]] == [30, 30]
    assert len(looked_up) <= 2 + len(HOLDINGS), len(looked_up)
