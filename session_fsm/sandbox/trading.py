"""The trading endpoints' handlers: orders, reports, positions, quotes, margin, historical.

Each handler gets the validated call (:class:`TradingCall`: the endpoint, its path parameters,
the user of the live session, the request) and returns the payload the app wraps in the
success envelope. Bodies are checked against :mod:`~session_fsm.sandbox.schemas` first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request

from . import market
from .routes import Endpoint
from .schemas import MARGIN, MODIFY, PLACE, bad_request, check
from .state import SandboxState


@dataclass(frozen=True)
class Enveloped:
    """A payload that goes out under a given envelope spelling (``success`` or ``Success``)."""

    payload: Any
    envelope: str


@dataclass(frozen=True)
class TradingCall:
    """One validated trading call. ``userid`` is the live session's user (``""`` for
    historical, which sends no session token)."""

    state: SandboxState
    request: Request
    endpoint: Endpoint
    params: dict[str, str]
    userid: str

    def body(self) -> Any:
        """The request body parsed as JSON (a 400 fault naming the body if it is not JSON)."""
        data = self.request.get_data()
        if not data.strip():
            raise bad_request("request body is missing: a JSON object is required")
        try:
            return json.loads(data)
        except ValueError:
            raise bad_request("request body is not valid JSON") from None


def place_order(call: TradingCall) -> Any:
    """``POST /orders/1.0/orders`` and ``/orders/1.0/order/{kind}``."""
    kind = call.endpoint.kind
    body = check(PLACE[kind], call.body())
    fill = call.state.settings.fill == "immediate"
    return call.state.book.place(call.userid, kind, body, fill)


def modify_order(call: TradingCall) -> Any:
    """``PUT`` of the same paths; the order id is in the body."""
    kind = call.endpoint.kind
    body = check(MODIFY[kind], call.body())
    return call.state.book.modify(call.userid, kind, body)


def cancel_order(call: TradingCall) -> Any:
    """``DELETE .../{orderId}``: no body."""
    order_id = call.params["orderId"]
    if not order_id:
        raise bad_request("path parameter 'orderId' is missing")
    return call.state.book.cancel(call.userid, call.endpoint.kind, order_id)


def order_report(call: TradingCall) -> Any:
    """All orders' rows; or one order's versions under ``success`` (lowercase), current last,
    as a user of the public client reported it."""
    order_id = call.params.get("orderId")
    if order_id is None:
        return call.state.book.order_report(call.userid)
    if not order_id:
        raise bad_request("path parameter 'orderId' is missing")
    return Enveloped(call.state.book.order_report(call.userid, order_id), "success")


def trade_report(call: TradingCall) -> Any:
    """All trades, or one order's."""
    order_id = call.params.get("orderId")
    if order_id == "":
        raise bad_request("path parameter 'orderId' is missing")
    return call.state.book.trade_report(call.userid, order_id)


def positions(call: TradingCall) -> Any:
    """Today's, open, stocks, or all three (``/positions/1.0/positions``)."""
    return call.state.book.positions(call.userid, call.endpoint.kind)


def quotes(call: TradingCall) -> Any:
    """One quote per instrument token in the path."""
    instruments = market.parse_tokens(call.params["tokens"])
    return [market.quote(call.endpoint.kind, inst) for inst in instruments]


def margin(call: TradingCall) -> Any:
    """The margin rule of :func:`session_fsm.sandbox.market.margin`."""
    return market.margin(check(MARGIN, call.body()))


def historical(call: TradingCall) -> Any:
    """A deterministic series for the resource and its base64 JSON input."""
    data = market.decode_input(call.params["input"])
    return market.historical(call.params["resource"], data)


#: Handler of each endpoint's ``handler`` name.
HANDLERS: dict[str, Callable[[TradingCall], Any]] = {
    "place_order": place_order,
    "modify_order": modify_order,
    "cancel_order": cancel_order,
    "order_report": order_report,
    "trade_report": trade_report,
    "positions": positions,
    "quotes": quotes,
    "margin": margin,
    "historical": historical,
}
