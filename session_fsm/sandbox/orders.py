"""Each user's order book, and the trades and positions that follow from its fills.

An order is placed open (``OPN``), may be modified while open, and ends filled (``TRAD``, in
full, in one trade) or cancelled (``CAN``). A modify or cancel of an order that is unknown,
already filled or already cancelled is refused with a 400 fault; so is one sent to another
kind's endpoint (the generic ``/orders/1.0/orders`` endpoints serve every kind). Fills follow
the sandbox's fill rule: at once, never, or when the control plane says. No exchange semantics
beyond that: a fill is at the limit price, or at the last price for a market order (price 0).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .faults import ApiFault
from .market import Instrument, instrument
from .schemas import BAD_REQUEST

OPEN, FILLED, CANCELLED = "OPN", "TRAD", "CAN"
_STATUS_MESSAGES = {OPEN: "Open", FILLED: "Traded", CANCELLED: "Cancelled"}
_VALIDITY = {"GFD": "Good For Day", "IOC": "Immediate or Cancel"}
#: The report's ``product`` of each order kind (the generic kind reports its ``product``).
KIND_PRODUCTS = {"generic": "NORMAL", "normal": "NORMAL", "mis": "MIS", "mtf": "MTF",
                 "sor": "SOR", "supermultiple": "SUPERMULTIPLE"}  # fmt: skip
#: Fault codes of refused order operations (sandbox codes: the real ones are unknown).
FAULT_ORDER_UNKNOWN = 400002
FAULT_ORDER_NOT_OPEN = 400003
FAULT_ORDER_BOOK_FULL = 400004
#: How many orders one user's book holds before new ones are refused.
MAX_ORDERS_PER_USER = 10_000
#: Every user's holdings at the start of the day (token -> quantity, average price).
HOLDINGS: dict[int, tuple[int, float]] = {1594: (10, 1380.0), 2885: (5, 2300.0)}
FIRST_ORDER_ID = 2_101_010_000_001


@dataclass
class Order:
    """One order and its version history (a version per place, modify, fill or cancel)."""

    order_id: int
    kind: str
    product: str
    inst: Instrument
    side: str
    quantity: int
    price: float
    trigger_price: float
    disclosed: int
    validity: str
    variety: str
    tag: str
    placed_at: str
    status: str = OPEN
    filled: int = 0
    cancelled: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The order report row."""
        return {
            "orderId": self.order_id,
            "variety": self.variety,
            "instrumentName": self.inst.name,
            "instrumentToken": str(self.inst.token),
            "exchange": self.inst.exchange,
            "orderQuantity": self.quantity,
            "pendingQuantity": self.quantity - self.filled - self.cancelled,
            "cancelledQuantity": self.cancelled,
            "filledQuantity": self.filled,
            "disclosedQuantity": self.disclosed,
            "triggerPrice": self.trigger_price,
            "price": self.price,
            "product": self.product,
            "transactionType": self.side,
            "orderTimestamp": self.placed_at,
            "validity": _VALIDITY.get(self.validity, self.validity),
            "statusMessage": _STATUS_MESSAGES[self.status],
            "tag": self.tag,
            "status": self.status,
        }

    def answer(self, message: str) -> dict[str, Any]:
        """The place/modify/cancel answer: per exchange, as ``get_order_id`` reads it."""
        return {
            self.inst.exchange: {
                "message": f"{message}: {self.order_id}",
                "orderId": self.order_id,
                "price": self.price,
                "quantity": self.quantity,
                "tag": self.tag,
            }
        }


def _refuse(code: int, description: str) -> ApiFault:
    return ApiFault(400, code, BAD_REQUEST, description)


class OrderBook:
    """Every user's orders and trades; thread-safe. ``wall`` gives the epoch time for stamps."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall
        self._lock = threading.Lock()
        self._orders: dict[str, dict[int, Order]] = {}
        self._trades: dict[str, list[dict[str, Any]]] = {}
        #: Per user, what positions are made of, kept up to date as each trade is added (a
        #: positions answer costs its instruments, not every trade of the day: a long run of
        #: orders made every positions GET slower, and the soak benchmark server-bound).
        self._legs: dict[str, dict[int, list[Any]]] = {}
        self._sold: dict[str, dict[Any, int]] = {}
        self._next_id = FIRST_ORDER_ID
        self._next_trade = 1

    def clear(self) -> None:
        """Forget every order and trade."""
        with self._lock:
            self._orders = {}
            self._trades = {}
            self._legs = {}
            self._sold = {}
            self._next_id = FIRST_ORDER_ID
            self._next_trade = 1

    def forget(self, userid: str | None = None) -> int:
        """Forget every user's (or ``userid``'s) orders and trades, and so their positions;
        return how many orders. Order ids keep counting: no id is given twice in a run."""
        with self._lock:
            users = list(self._orders) if userid is None else [userid]
            forgotten = 0
            for user in users:
                forgotten += len(self._orders.pop(user, {}))
                self._trades.pop(user, None)
                self._legs.pop(user, None)
                self._sold.pop(user, None)
            return forgotten

    def _stamp(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self._wall()))

    # -- order operations ---------------------------------------------------------------------

    def place(self, userid: str, kind: str, body: dict[str, Any], fill: bool) -> dict[str, Any]:
        """Book a new order (filled at once when ``fill``); the place answer."""
        inst = instrument(body["instrumentToken"])
        with self._lock:
            book = self._orders.setdefault(userid, {})
            if len(book) >= MAX_ORDERS_PER_USER:
                raise _refuse(FAULT_ORDER_BOOK_FULL, f"order book full ({MAX_ORDERS_PER_USER})")
            order = Order(
                order_id=self._next_id, kind=kind,
                product=body.get("product") or KIND_PRODUCTS[kind], inst=inst,
                side=body["transactionType"], quantity=body["quantity"],
                price=float(body["price"]), trigger_price=float(body.get("triggerPrice") or 0),
                disclosed=body.get("disclosedQuantity") or 0,
                validity=body.get("validity") or "GFD", variety=body.get("variety") or "REGULAR",
                tag=body.get("tag") or "", placed_at=self._stamp(),
            )  # fmt: skip
            self._next_id += 1
            book[order.order_id] = order
            self._version(order, "Order placed")
            if fill:
                self._fill(userid, order)
            return order.answer("Your Order has been Placed and Forwarded to the Exchange")

    def modify(self, userid: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Change an open order's quantity, price, trigger, disclosed part or validity."""
        with self._lock:
            order = self._open(userid, kind, body["orderId"], "orderId")
            for key, attr in (("quantity", "quantity"), ("disclosedQuantity", "disclosed"),
                              ("validity", "validity")):  # fmt: skip
                if body.get(key) is not None:
                    setattr(order, attr, body[key])
            for key, attr in (("price", "price"), ("triggerPrice", "trigger_price")):
                if body.get(key) is not None:
                    setattr(order, attr, float(body[key]))
            self._version(order, "Order modified")
            return order.answer("Your Order has been Modified Successfully")

    def cancel(self, userid: str, kind: str, order_id: str) -> dict[str, Any]:
        """Cancel an open order's pending quantity."""
        with self._lock:
            order = self._open(userid, kind, order_id, "orderId")
            order.cancelled = order.quantity - order.filled
            order.status = CANCELLED
            self._version(order, "Order cancelled")
            return order.answer("Your Order has been Cancelled Successfully")

    def fill(self, userid: str | None = None, order_id: int | None = None) -> int:
        """Fill the open orders (of ``userid``, or only ``order_id``); return how many."""
        with self._lock:
            n = 0
            for owner, book in self._orders.items():
                if userid not in (None, owner):
                    continue
                for order in list(book.values()):
                    if order.status == OPEN and order_id in (None, order.order_id):
                        self._fill(owner, order)
                        n += 1
            return n

    # -- reports and positions ----------------------------------------------------------------

    def order_report(self, userid: str, order_id: str | None = None) -> list[dict[str, Any]]:
        """Every order's row, oldest first; or one order's version history, current last."""
        with self._lock:
            if order_id is None:
                return [o.row() for o in self._orders.get(userid, {}).values()]
            order = self._find(userid, order_id, "orderId")
            return [dict(v) for v in order.history]

    def trade_report(self, userid: str, order_id: str | None = None) -> list[dict[str, Any]]:
        """Every trade of the user, or of one order, oldest first."""
        with self._lock:
            trades = self._trades.get(userid, [])
            if order_id is None:
                return [dict(t) for t in trades]
            order = self._find(userid, order_id, "orderId")
            return [dict(t) for t in trades if t["orderId"] == order.order_id]

    def positions(self, userid: str, kind: str) -> Any:
        """Positions of ``kind`` (todays, open, stocks, all) from the user's trades."""
        with self._lock:
            legs = [(token, tuple(leg)) for token, leg in self._legs.get(userid, {}).items()]
            sold = dict(self._sold.get(userid, {}))
        today = _todays(legs)
        if kind == "todays":
            return today
        if kind == "open":
            return [p for p in today if p["netTrdQtyLot"] != 0]
        stocks = _stocks(sold)
        if kind == "stocks":
            return stocks
        return {"todays": today, "open": [p for p in today if p["netTrdQtyLot"]], "stocks": stocks}

    def dump(self, userid: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every user's (or ``userid``'s) order rows: the control plane's view of the book."""
        with self._lock:
            return {
                user: [o.row() for o in book.values()]
                for user, book in self._orders.items()
                if userid in (None, user)
            }

    # -- helpers (lock held) ------------------------------------------------------------------

    def _find(self, userid: str, order_id: object, name: str) -> Order:
        text = str(order_id).strip()
        order = self._orders.get(userid, {}).get(int(text)) if text.isdigit() else None
        if order is None:
            raise _refuse(FAULT_ORDER_UNKNOWN, f"'{name}' is not an order of this user")
        return order

    def _open(self, userid: str, kind: str, order_id: object, name: str) -> Order:
        order = self._find(userid, order_id, name)
        if kind != "generic" and order.kind != kind:
            raise _refuse(FAULT_ORDER_UNKNOWN, f"'{name}' is not a {kind} order")
        if order.status != OPEN:
            state = "filled" if order.status == FILLED else "cancelled"
            raise _refuse(FAULT_ORDER_NOT_OPEN, f"'{name}' is already {state}")
        return order

    def _fill(self, userid: str, order: Order) -> None:
        qty = order.quantity - order.filled - order.cancelled
        price = order.price or order.inst.last
        trade = {
            "tradeId": f"T{self._next_trade:08d}",
            "orderId": order.order_id,
            "exchangeTradeId": f"{50_000_000 + self._next_trade}",
            "instrumentName": order.inst.name,
            "instrumentToken": order.inst.token,
            "exchange": order.inst.exchange,
            "price": price,
            "quantity": qty,
            "transactionType": order.side,
            "product": order.product,
            "orderTimestamp": order.placed_at,
            "tradeTimestamp": self._stamp(),
        }
        self._next_trade += 1
        self._trades.setdefault(userid, []).append(trade)
        _add_leg(self._legs.setdefault(userid, {}), self._sold.setdefault(userid, {}), trade)
        order.filled += qty
        order.status = FILLED
        self._version(order, "Order traded", str(trade["exchangeTradeId"]))

    def _version(self, order: Order, message: str, trade_id: str = "") -> None:
        order.history.append({
            "orderId": order.order_id, "version": len(order.history) + 1,
            "orderQuantity": order.quantity, "price": order.price,
            "filledQuantity": order.filled, "exchangeStatus": order.status,
            "status": order.status, "statusMessage": _STATUS_MESSAGES[order.status],
            "exchOrderId": f"1100000{order.order_id % 10**9:09d}", "exchTradeId": trade_id,
            "message": message, "activityTimestamp": self._stamp(),
        })  # fmt: skip


def _add_leg(legs: dict[int, list[Any]], sold: dict[Any, int], t: dict[str, Any]) -> None:
    """Count trade ``t`` in its instrument's leg (bought lots and value, sold lots and value,
    the value rounded to the paisa at each trade) and, if a sale, in the lots sold."""
    leg = legs.setdefault(instrument(t["instrumentToken"]).token, [0, 0.0, 0, 0.0])
    at = 0 if t["transactionType"] == "BUY" else 2
    leg[at] += t["quantity"]
    leg[at + 1] = round(leg[at + 1] + t["quantity"] * t["price"], 2)
    if t["transactionType"] == "SELL":
        sold[t["instrumentToken"]] = sold.get(t["instrumentToken"], 0) + t["quantity"]


def _todays(legs: list[tuple[int, tuple[Any, ...]]]) -> list[dict[str, Any]]:
    """Today's positions, one row per instrument traded, in the order first traded."""
    rows = []
    for token, (bought, bought_val, sold, sold_val) in legs:
        inst = instrument(token)
        row: dict[str, Any] = {
            "instrumentToken": inst.token, "instrumentName": inst.name,
            "exchange": inst.exchange, "buyTradedQtyLot": bought, "buyTradedVal": bought_val,
            "sellTradedQtyLot": sold, "sellTradedVal": sold_val, "netTrdQtyLot": bought - sold,
            "lastPrice": inst.last,
        }  # fmt: skip
        avg_buy = bought_val / bought if bought else 0.0
        avg_sell = sold_val / sold if sold else 0.0
        row["realizedPL"] = round(min(bought, sold) * (avg_sell - avg_buy), 2)
        net, last = row["netTrdQtyLot"], row["lastPrice"]
        row["unrealizedPL"] = round(net * (last - (avg_buy if net > 0 else avg_sell)), 2)
        rows.append(row)
    return rows


def _stocks(sold: dict[Any, int]) -> list[dict[str, Any]]:
    rows = []
    for token, (qty, avg) in HOLDINGS.items():
        inst = instrument(token)
        rows.append({
            "instrumentToken": token, "instrumentName": inst.name, "exchange": inst.exchange,
            "quantity": qty, "averagePrice": avg, "lastPrice": inst.last,
            "sellableQuantity": max(0, qty - sold.get(token, 0)),
        })  # fmt: skip
    return rows
